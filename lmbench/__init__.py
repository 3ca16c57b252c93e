"""lmbench: a Jupyter-native experimentation workbench for local LLMs (GGUF through llama.cpp)."""

from __future__ import annotations

import importlib

from . import metrics, models
from ._extras import require
from ._version import __version__
from .chat import chat
from .choices import choose
from .code_tasks import run_tests
from .compare import compare
from .engine import Engine, embed, load, unload
from .errors import LmbenchError, ParameterError
from .generation import generate
from .likelihood import loglikelihood, perplexity
from .presets import delete_preset, presets, save_preset
from .run import Run
from .scores import judge, leaderboard, score
from .significance import paired
from .store import Store, export, runs
from .sweep import sweep
from .variants_lab import drift, quantize, variants

# Names kept working for older notebooks, each at home in its module (``lmbench.errors.ModelLoadError``);
# they are not the public surface (``__all__``, docs/python.md) and are imported when first asked for.
MOVED = {
    **dict.fromkeys(
        (
            "ChatTemplateError",
            "ClusterError",
            "ContextOverflowError",
            "EngineClosedError",
            "GenerationError",
            "MissingExtraError",
            "ModelLoadError",
            "ModelNotFoundError",
            "StoreError",
        ),
        "errors",
    ),
    **dict.fromkeys(("Divergence", "audit", "diff", "fork"), "reproduce"),
    **dict.fromkeys(("Paired", "Regressions", "regressions"), "significance"),
    **dict.fromkeys(("choice_summary", "classification_report", "confusion"), "choices"),
    **dict.fromkeys(("GenerationParams", "param_specs", "validate_params"), "params"),
    **dict.fromkeys(("detokenize", "loaded", "set_max_models", "tokenize"), "engine"),
    **dict.fromkeys(("environments", "get_store", "ratings", "use_store"), "store"),
    **dict.fromkeys(("arena_scores", "judge_agreement", "plot_arena", "rater_agreement"), "preferences"),
    "Comparison": "compare",
    "Drift": "variants_lab",
}
PLOTS = ("plot_sweep", "plot_confusion", "plot_heatmap", "plot_items", "plot_quality_speed", "plot_frontier")
# Submodules a user reaches for by name (tab completion offers them beside ``__all__``).
FAMILIES = (
    "choices",
    "code_tasks",
    "engine",
    "errors",
    "params",
    "plots",
    "preferences",
    "reproduce",
    "significance",
    "store",
    "ui",
)


def __getattr__(name: str) -> object:
    """Import plotly, scipy's optimiser and the widgets (ipywidgets) only when first used: the CLI and the API
    never pay for them. Names kept for older notebooks come from their modules."""
    if name in PLOTS or name == "plots":
        require("plotly", "notebook", f"lmbench.{name}")
        plots = importlib.import_module(".plots", __name__)
        return plots if name == "plots" else getattr(plots, name)
    if name in ("panel", "Panel", "arena", "rate"):
        for module in ("ipywidgets", "anywidget", "mistune"):
            require(module, "notebook", f"lmbench.{name}")
        from . import ui

        return getattr(ui, name)
    if name in MOVED:
        return getattr(importlib.import_module(f".{MOVED[name]}", __name__), name)
    if name in FAMILIES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'lmbench' has no attribute {name!r}")


def __dir__() -> list[str]:
    """What tab completion offers: the public API and its families, not the names kept for older notebooks."""
    return sorted({*__all__, *FAMILIES})


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext lmbench``: register the magics (no model is loaded)."""
    from .magics import load_ipython_extension as load_magics

    load_magics(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext lmbench``: remove the magics again."""
    from .magics import unload_ipython_extension as unload_magics

    unload_magics(ipython)


__all__ = [
    "Engine",
    "LmbenchError",
    "Panel",
    "ParameterError",
    "Run",
    "Store",
    "__version__",
    "arena",
    "chat",
    "choose",
    "compare",
    "delete_preset",
    "drift",
    "embed",
    "export",
    "generate",
    "judge",
    "leaderboard",
    "load",
    "loglikelihood",
    "metrics",
    "models",
    "paired",
    "panel",
    "perplexity",
    "plot_confusion",
    "plot_frontier",
    "plot_heatmap",
    "plot_items",
    "plot_quality_speed",
    "plot_sweep",
    "presets",
    "quantize",
    "run_tests",
    "runs",
    "save_preset",
    "score",
    "sweep",
    "unload",
    "variants",
]
