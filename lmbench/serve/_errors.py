"""What a failed request is answered with: ``ApiError`` (status, message, OpenAI error type, parameter, code).

``ERRORS`` maps lmbench's exceptions to HTTP statuses and OpenAI error types; ``invalid`` turns a
request model's validation error into the 400 that names the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from ..errors import (
    ContextOverflowError,
    EngineClosedError,
    LmbenchError,
    ModelLoadError,
    ModelNotFoundError,
    ParameterError,
)


class ApiError(Exception):
    """An error answered to the client: HTTP status, message, OpenAI-style type, parameter and code."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        kind: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        retry_after: int | None = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.kind, self.param, self.code = status, message, kind, param, code
        self.retry_after = retry_after  # seconds, sent as the Retry-After header
        self.details = details or {}  # more fields of the error, such as llama-server's n_prompt_tokens and n_ctx

    def body(self) -> dict[str, Any]:
        error = {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}
        return {"error": {**error, **self.details}}


# lmbench's exceptions as (status, OpenAI error type, code), most specific first.
ERRORS: tuple[tuple[type[LmbenchError], int, str, str | None], ...] = (
    (ContextOverflowError, 400, "invalid_request_error", "context_length_exceeded"),
    (ParameterError, 400, "invalid_request_error", None),
    (ModelNotFoundError, 404, "invalid_request_error", "model_not_found"),
    (ModelLoadError, 500, "server_error", "model_load_failed"),
    (EngineClosedError, 503, "server_error", None),
    (LmbenchError, 500, "server_error", None),
)


def api_error(exc: LmbenchError) -> ApiError:
    """The answer to a request that failed with ``exc``."""
    status, kind, code = next((s, k, c) for cls, s, k, c in ERRORS if isinstance(exc, cls))
    details = {}
    if isinstance(exc, ContextOverflowError):  # the numbers, as llama-server's exceed_context_size_error has them
        details = {"n_prompt_tokens": exc.prompt_tokens, "n_ctx": exc.n_ctx}
    return ApiError(status, str(exc), kind=kind, param=getattr(exc, "name", None), code=code, details=details)


def invalid(exc: ValidationError) -> ApiError:
    """The 400 for a request that does not fit its model: the first problem, naming the top-level field."""
    error = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in error["loc"])
    cause = (error.get("ctx") or {}).get("error")
    if isinstance(cause, ParameterError):  # a parameter check gave the message and names the parameter
        return ApiError(400, str(cause), param=cause.name or (str(error["loc"][0]) if error["loc"] else None))
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = f"unknown field {where!r}"
    elif where:
        message = f"invalid {where}: {message[0].lower()}{message[1:]}"
    return ApiError(400, message, param=str(error["loc"][0]) if error["loc"] else None)
