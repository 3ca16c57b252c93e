"""lmbench: a Jupyter-native experimentation workbench for local LLMs (GGUF through llama.cpp)."""

from __future__ import annotations

__version__ = "0.1.0"

from . import models
from .engine import Engine, load, loaded, set_max_models, unload
from .errors import (
    ContextOverflowError,
    EngineClosedError,
    GenerationError,
    LmbenchError,
    ModelLoadError,
    ModelNotFoundError,
    ParameterError,
    StoreError,
)
from .generation import generate
from .params import GenerationParams, param_specs, validate_params
from .presets import delete_preset, presets, save_preset
from .run import Run
from .store import Store, export, get_store, runs, use_store

__all__ = [
    "ContextOverflowError",
    "Engine",
    "EngineClosedError",
    "GenerationError",
    "GenerationParams",
    "LmbenchError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ParameterError",
    "Run",
    "Store",
    "StoreError",
    "__version__",
    "delete_preset",
    "export",
    "generate",
    "get_store",
    "load",
    "loaded",
    "models",
    "param_specs",
    "presets",
    "runs",
    "save_preset",
    "set_max_models",
    "unload",
    "use_store",
    "validate_params",
]
