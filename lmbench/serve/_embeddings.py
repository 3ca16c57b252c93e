"""OpenAI's ``/v1/embeddings`` (the OpenAI dialect's embeddings half): texts or token ids in, vectors out."""

from __future__ import annotations

import base64
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from ..errors import LmbenchError
from ..generation import Cancel
from ._errors import ApiError, api_error
from ._requests import UsesModel
from ._service import Emit, Service

# The most texts one request may embed.
MAX_INPUTS = 2048


class EmbeddingsRequest(UsesModel):
    """``POST /v1/embeddings``: ``input`` as a string, strings, token ids or lists of token ids."""

    input: str | list[str] | list[int] | list[list[int]] = Field(...)
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = Field(None, ge=1)
    user: str | None = None  # accepted and ignored

    @field_validator("input")
    @classmethod
    def _some(cls, value: Any) -> Any:
        if isinstance(value, list) and not 1 <= len(value) <= MAX_INPUTS:
            raise ValueError(f"give from 1 to {MAX_INPUTS} inputs")
        return value

    def items(self) -> list[str | list[int]]:
        """Each input: a text, or one text's token ids (embedded as given)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and all(isinstance(v, int) for v in value):
            return [list(value)]  # type: ignore[arg-type]
        return list(value)  # type: ignore[arg-type]


def embeddings(service: Service, request: EmbeddingsRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any]:
    """``POST /v1/embeddings``: normalised vectors from the model's embeddings context (nothing is recorded)."""
    name, path = service.model_path(request.model)
    engine = service.engine(path)
    width = engine.n_embd
    if request.dimensions is not None and request.dimensions != width:
        raise ApiError(
            400,
            f"dimensions: this model's embeddings have {width} dimensions and cannot be shortened",
            param="dimensions",
        )
    try:
        items = request.items()
        for item in items:
            if isinstance(item, list):
                engine.detokenize(item)  # checks the ids
        vectors = engine.embed(items)
        tokens = sum(len(item) if isinstance(item, list) else len(engine.tokenize(item)) for item in items)
    except LmbenchError as exc:
        raise api_error(exc) from None
    data = [
        {"object": "embedding", "index": i, "embedding": _encoded(vector, request.encoding_format)}
        for i, vector in enumerate(vectors)
    ]
    return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":  # little-endian float32, as OpenAI sends it
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
