"""The ipywidgets panel (``lmbench.panel()``); ipywidgets is imported on first use, not by ``import lmbench``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._panel import Panel, panel


def __getattr__(name: str) -> object:
    """``Panel`` and ``panel`` from the panel module, imported when first asked for."""
    if name in ("panel", "Panel"):
        from . import _panel

        return getattr(_panel, name)
    raise AttributeError(f"module 'lmbench.ui' has no attribute {name!r}")


__all__ = ["Panel", "panel"]
