"""What the server operator decides: ``Settings``, one definition of each setting's type, default, bound and help.

``lmbench serve``'s options (``add_arguments``, ``from_arguments``) and the Jupyter extension's
``c.LmbenchServer`` config (``from_config``) are built from it, so a bound is the same everywhere.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import annotated_types
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..engine._engine import MAX_PARALLEL
from ..errors import ParameterError
from ..store._store import Store


class Settings(BaseModel):
    """What the server operator decides; requests cannot change these. Bad values raise ``ParameterError``."""

    model_config = ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True, protected_namespaces=())

    model: str | None = Field(None, description="the server's model (requests may name any listed model)")
    n_ctx: int = Field(2048, ge=16, le=1 << 20, description="context length to load models with")
    max_tokens_cap: int = Field(4096, ge=1, le=1 << 20, description="the most tokens one request may generate")
    max_body_bytes: int = Field(1 << 20, ge=1024, le=1 << 30, description="the largest request body accepted")
    api_key: str | None = Field(None, description="require 'Authorization: Bearer KEY' on every request")
    store: str | os.PathLike[str] | Store | None = Field(None, description="the run store (default: lmbench's)")
    strict_models: bool = Field(
        False, description="answer requests naming an unknown model with 404 (default: the server's model answers)"
    )
    parallel: int = Field(
        4,
        ge=1,
        le=MAX_PARALLEL,
        description="requests decoded together per model, each with --n-ctx (LM Studio's Max Concurrent Predictions)",
    )
    max_queue: int = Field(256, ge=1, le=4096, description="requests waiting per model before answering 503")
    context_shift: bool = Field(
        False,
        description="drop the oldest tokens when a generation reaches the end of the context (llama-server's flag); "
        "refused: off, a prompt past the context is refused and a generation ends there",
    )
    allow_hosts: tuple[str, ...] = Field(
        (),
        description="also answer requests whose Host is NAME (localhost and IP addresses always are); repeatable",
        json_schema_extra={"flag": "--allow-host", "metavar": "NAME"},
    )
    cors_origins: tuple[str, ...] = Field(
        (),
        description="let web pages from ORIGIN (e.g. https://app.example) call the API; repeatable",
        json_schema_extra={"flag": "--cors-origin", "metavar": "ORIGIN"},
    )

    @field_validator("context_shift")
    @classmethod
    def _no_context_shift(cls, value: bool) -> bool:
        if value:
            raise ValueError(
                "--context-shift is not supported: a run records the prompt the model continued, and after a shift "
                "the model no longer sees it (nor can slots that share prompt cells be shifted apart); give the model "
                "a larger --n-ctx instead"
            )
        return value

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            error = exc.errors(include_url=False)[0]
            name = str(error["loc"][0]) if error["loc"] else None
            message = _range(name) or error["msg"].removeprefix("Value error, ")
            raise ParameterError(f"invalid setting {name}: {message}", name=name) from None


def _range(name: str | None) -> str:
    """``name``'s bounds as a sentence, e.g. "a whole number from 1 to 256" (empty when it has none)."""
    field = Settings.model_fields.get(name or "")
    if field is None or field.annotation is not int:
        return ""
    low = next((m.ge for m in field.metadata if isinstance(m, annotated_types.Ge)), None)
    high = next((m.le for m in field.metadata if isinstance(m, annotated_types.Le)), None)
    return f"a whole number from {low} to {high}"


def _whole_number(name: str) -> Any:
    """An argparse type for an integer setting that refuses values outside its bounds (a usage error)."""

    def convert(text: str) -> int:
        try:
            value = int(text)
            Settings(**{name: value})
        except (ValueError, ParameterError):
            raise argparse.ArgumentTypeError(f"must be {_range(name)}, not {text!r}") from None
        return value

    return convert


# Settings that are not command-line options: the store is the CLI's --store; the model has its own help.
_NOT_OPTIONS = ("store", "model")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``lmbench serve``'s options, one per setting, with the setting's default, bound and help."""
    for name, field in Settings.model_fields.items():
        if name in _NOT_OPTIONS:
            continue
        extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
        flag = str(extra.get("flag") or f"--{name.replace('_', '-')}")
        help_text = field.description or ""
        if field.annotation is bool:
            parser.add_argument(flag, dest=name, action="store_true", help=help_text)
        elif field.annotation is int:
            help_text += f" ({_range(name)}; default {field.default})"
            parser.add_argument(flag, dest=name, type=_whole_number(name), default=field.default, help=help_text)
        elif extra.get("metavar"):
            metavar = str(extra["metavar"])
            parser.add_argument(flag, dest=name, action="append", default=[], metavar=metavar, help=help_text)
        else:
            parser.add_argument(flag, dest=name, help=help_text)


def from_arguments(args: argparse.Namespace, **more: Any) -> Settings:
    """``Settings`` from the options ``add_arguments`` made (and ``more``, such as the model)."""
    values = {name: getattr(args, name) for name in Settings.model_fields if hasattr(args, name)}
    for name in ("allow_hosts", "cors_origins"):
        values[name] = tuple(values.get(name) or ())
    return Settings(**{**values, **more})


def from_config(config: Any, **more: Any) -> Settings:
    """``Settings`` from Jupyter's ``c.LmbenchServer`` config (for example ``c.LmbenchServer.parallel = 8``)."""
    values = {name: config[name] for name in Settings.model_fields if name in config}
    for name in ("allow_hosts", "cors_origins"):
        if name in values:
            values[name] = tuple(values[name])
    return Settings(**{**values, **more})
