"""lmbench: a Jupyter-native experimentation workbench for local LLMs (GGUF through llama.cpp)."""

from __future__ import annotations

from . import metrics, models
from ._extras import require
from ._version import __version__
from .chat import chat
from .choices import choice_summary, choose, classification_report, confusion
from .code_tasks import pass_at_k, run_tests
from .compare import Comparison, compare
from .engine import Engine, detokenize, embed, load, loaded, set_max_models, tokenize, unload
from .errors import (
    ChatTemplateError,
    ClusterError,
    ContextOverflowError,
    EngineClosedError,
    GenerationError,
    LmbenchError,
    MissingExtraError,
    ModelLoadError,
    ModelNotFoundError,
    ParameterError,
    SandboxError,
    StoreError,
)
from .generation import generate
from .likelihood import loglikelihood, perplexity
from .params import GenerationParams, param_specs, validate_params
from .presets import delete_preset, presets, save_preset
from .reproduce import Divergence, audit, diff, fork
from .run import Run
from .scores import judge, leaderboard, score
from .significance import Paired, Regressions, paired, regressions
from .store import Store, environments, export, get_store, ratings, runs, use_store
from .sweep import sweep
from .variants_lab import Drift, drift, quantize, variants


def __getattr__(name: str) -> object:
    """Import plotly, scipy's optimiser and the widgets (ipywidgets) only when first used: the CLI and the API
    never pay for them."""
    if name in ("plot_sweep", "plot_confusion", "plot_heatmap", "plot_items", "plot_quality_speed", "plot_frontier"):
        require("plotly", "notebook", f"lmbench.{name}")
        from . import plots

        return getattr(plots, name)
    if name in ("arena_scores", "plot_arena", "rater_agreement", "judge_agreement"):
        from . import preferences

        return getattr(preferences, name)
    if name in ("panel", "Panel", "arena", "rate"):
        for module in ("ipywidgets", "anywidget", "mistune"):
            require(module, "notebook", f"lmbench.{name}")
        from . import ui

        return getattr(ui, name)
    raise AttributeError(f"module 'lmbench' has no attribute {name!r}")


def load_ipython_extension(ipython: object) -> None:
    """``%load_ext lmbench``: register the magics (no model is loaded)."""
    from .magics import load_ipython_extension as load_magics

    load_magics(ipython)


def unload_ipython_extension(ipython: object) -> None:
    """``%unload_ext lmbench``: remove the magics again."""
    from .magics import unload_ipython_extension as unload_magics

    unload_magics(ipython)


__all__ = [
    "ChatTemplateError",
    "ClusterError",
    "Comparison",
    "ContextOverflowError",
    "Divergence",
    "Drift",
    "Engine",
    "EngineClosedError",
    "GenerationError",
    "GenerationParams",
    "LmbenchError",
    "MissingExtraError",
    "ModelLoadError",
    "ModelNotFoundError",
    "Paired",
    "Panel",
    "ParameterError",
    "Regressions",
    "Run",
    "SandboxError",
    "Store",
    "StoreError",
    "__version__",
    "arena",
    "arena_scores",
    "audit",
    "chat",
    "choice_summary",
    "choose",
    "classification_report",
    "compare",
    "confusion",
    "delete_preset",
    "detokenize",
    "diff",
    "drift",
    "embed",
    "environments",
    "export",
    "fork",
    "generate",
    "get_store",
    "judge",
    "judge_agreement",
    "leaderboard",
    "load",
    "loaded",
    "loglikelihood",
    "metrics",
    "models",
    "paired",
    "panel",
    "param_specs",
    "pass_at_k",
    "perplexity",
    "plot_arena",
    "plot_confusion",
    "plot_frontier",
    "plot_heatmap",
    "plot_items",
    "plot_quality_speed",
    "plot_sweep",
    "presets",
    "quantize",
    "rate",
    "rater_agreement",
    "ratings",
    "regressions",
    "run_tests",
    "runs",
    "save_preset",
    "score",
    "set_max_models",
    "sweep",
    "tokenize",
    "unload",
    "use_store",
    "validate_params",
    "variants",
]
