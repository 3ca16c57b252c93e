"""The request models every dialect builds on: types, bounds and the unknown-field policy, declared once.

- ``Body``: a JSON body. Types are strict (``"1"`` is not 1, ``true`` is not 1) and unknown fields
  are refused.
- ``Generating``: a body that generates. Its own fields name the model, label the runs and ask for
  a stream; every other field must be a generation parameter, checked by ``GenerationParams``
  (which refuses names it does not know, listing the valid ones). A dialect's request model adds
  its fields and says how they map to parameters (``parameters``).
- ``Query``: a GET route's query string (text, converted to each field's type).

``parse`` turns a payload into its route's request model, or the ``ApiError`` (400) naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..params import MAX_LABEL_CHARS, MAX_TOKENS, ensure_text, validate_params
from ._errors import ApiError, invalid

# The most choices one request may ask for (n / n_cmpl).
MAX_CHOICES = 16


def _model_name(name: str | None) -> str | None:
    if name is not None and ("/" in name or "\\" in name or name.startswith(".")):
        raise ValueError(f"model must be a model name, not a path: {name!r}")
    return name


def _label(text: str | None) -> str | None:
    if text is not None:
        ensure_text(text, "a label")
    return text


ModelName = Annotated[str | None, AfterValidator(_model_name)]
Label = Annotated[str, Field(max_length=MAX_LABEL_CHARS), AfterValidator(_label)]


class Body(BaseModel):
    """A JSON request body: strict types, unknown fields refused."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, protected_namespaces=())


class UsesModel(Body):
    """A body that names a model (or leaves it to the server's)."""

    model: ModelName = None


class Generating(UsesModel):
    """A body that generates: the model, run labels, streaming; its other fields are generation parameters."""

    model_config = ConfigDict(extra="allow")
    # Fields a dialect accepts and ignores (they do not change the output).
    ignored: ClassVar[frozenset[str]] = frozenset()

    stream: bool = False
    experiment: Label | None = None
    tags: list[Label] | None = None

    def parameters(self) -> dict[str, Any]:
        """The generation parameters this request sets (a dialect maps its own names onto lmbench's here)."""
        extra = self.model_extra or {}
        return {k: v for k, v in extra.items() if v is not None and k not in self.ignored}

    def choices(self) -> int:
        """How many choices (runs) the request asks for."""
        return 1

    @model_validator(mode="after")
    def _parameters_are_valid(self) -> Generating:
        values = self.parameters()
        wanted = values.get("max_tokens")
        if isinstance(wanted, int) and not isinstance(wanted, bool):  # the server caps it; only too few is wrong
            values["max_tokens"] = min(wanted, MAX_TOKENS)
        validate_params(values)
        return self


class Query(BaseModel):
    """A GET route's query: text values converted to the fields' types; other names are ignored."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class NoQuery(Query):
    """A GET route that takes no query."""


R = TypeVar("R", bound=BaseModel)


def parse(model: type[R], payload: dict[str, Any]) -> R:
    """``payload`` as ``model``, or the ``ApiError`` (400) that names the first field that is wrong."""
    if issubclass(model, Query):
        payload = {k: v for k, v in payload.items() if v != ""}  # "?limit=" is no limit given
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        raise invalid(exc) from None


def parse_body(raw: bytes, limit: int) -> dict[str, Any]:
    """A request body as a JSON object, or the ``ApiError`` that says what is wrong with it."""
    if len(raw) > limit:
        raise ApiError(413, f"request body is {len(raw)} bytes; the limit is {limit}")
    try:
        body = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ApiError(400, "request body is nested too deeply") from None
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object")
    if _deeper_than(body, MAX_BODY_DEPTH):
        raise ApiError(400, f"request body nests JSON more than {MAX_BODY_DEPTH} levels deep")
    return body


# The deepest JSON a request body may nest (a JSON schema of the deepest allowed nesting fits well within).
MAX_BODY_DEPTH = 200


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` nests lists and objects more than ``limit`` deep (walked without recursion:
    a body too deep for Python's stack could not be passed to a model worker)."""
    pending = [(value, 0)]
    while pending:
        node, depth = pending.pop()
        if depth > limit:
            return True
        if isinstance(node, dict):
            pending += [(v, depth + 1) for v in node.values()]
        elif isinstance(node, list):
            pending += [(v, depth + 1) for v in node]
    return False
