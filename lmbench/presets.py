"""Named parameter presets: a few built-ins plus the user's own, kept in ``$LMBENCH_HOME/presets.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _jsonfile
from ._config import home
from .errors import ParameterError
from .params import validate_params

BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "precise": {"temperature": 0.2, "top_p": 0.5, "top_k": 20, "min_p": 0.1, "repeat_penalty": 1.1},
    "balanced": {"temperature": 0.7, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1},
    "creative": {"temperature": 1.2, "top_p": 0.98, "top_k": 100, "min_p": 0.02, "repeat_penalty": 1.05},
}


def _file() -> Path:
    return home() / "presets.json"


def _saved() -> dict[str, dict[str, Any]]:
    return _jsonfile.read(_file())  # a damaged file is an error that names it, never silently dropped


def presets() -> dict[str, dict[str, Any]]:
    """All presets by name: built-ins first, then saved ones (which may override them)."""
    return {**BUILTIN_PRESETS, **_saved()}


def save_preset(name: str, **params: Any) -> dict[str, Any]:
    """Save parameter values under ``name`` (validated first); returns what was saved."""
    if not name or not name.strip():
        raise ParameterError("a preset needs a non-empty name")
    values = validate_params(params).model_dump(include=set(params))
    values = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
    saved = _saved()
    saved[name.strip()] = values
    _jsonfile.write(_file(), saved)
    return values


def delete_preset(name: str) -> None:
    """Remove a saved preset (built-ins cannot be removed)."""
    saved = _saved()
    if name not in saved:
        raise ParameterError(f"no saved preset named {name!r}", name="preset", value=name)
    del saved[name]
    _jsonfile.write(_file(), saved)


def resolve_preset(name: str | None) -> dict[str, Any]:
    """The parameter values of preset ``name`` (empty for None)."""
    if name is None:
        return {}
    every = presets()
    if name not in every:
        raise ParameterError(
            f"unknown preset {name!r}; available presets: {', '.join(every)}", name="preset", value=name
        )
    return dict(every[name])
