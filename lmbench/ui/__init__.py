"""The ipywidgets panel (``lmbench.panel()``), the arena (``lmbench.arena()``) and the rating grid
(``lmbench.rate()``); ipywidgets is imported on first use, not by ``import lmbench``."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._arena import Arena, RateGrid, arena, rate
    from ._panel import Panel, panel


def __getattr__(name: str) -> object:
    """The panel and the rating widgets, imported when first asked for."""
    if name in ("panel", "Panel"):
        from . import _panel

        return getattr(_panel, name)
    if name in ("arena", "Arena", "rate", "RateGrid"):
        from . import _arena

        return getattr(_arena, name)
    raise AttributeError(f"module 'lmbench.ui' has no attribute {name!r}")


__all__ = ["Arena", "Panel", "RateGrid", "arena", "panel", "rate"]
