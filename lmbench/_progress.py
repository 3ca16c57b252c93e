"""A sweep's progress bar: tqdm's in a terminal; in a notebook, one display updated in place.

A notebook widget bar (``tqdm.auto``) is saved as its first state, so an executed notebook
(papermill, nbval) reopens showing "0%". In a kernel the bar is instead an HTML display updated
through its display id, which the saved notebook keeps at its last state, and which needs no
widget state to show.
"""

from __future__ import annotations

import html
import time
from typing import Any

from tqdm import tqdm

# The least time between two redraws of the notebook display, in seconds.
REDRAW_S = 0.2


def _in_kernel() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


class Progress:
    """Runs done out of ``total``, with a note (tokens per second); ``write`` puts a line above it."""

    def __init__(
        self, total: int, *, initial: int = 0, desc: str = "sweep", unit: str = "run", disable: bool = False
    ) -> None:
        self.total, self.done, self.desc, self.note, self.unit = total, initial, desc, "", unit
        self.started = time.perf_counter()
        self._drawn = 0.0
        self._bar: Any = None
        self._display: Any = None
        if disable:
            return
        if not _in_kernel():
            self._bar = tqdm(total=total, initial=initial, desc=desc, unit=unit)
            return
        from IPython.display import display

        self._display = display(self._bundle(), raw=True, display_id=True)

    def update(self, note: str = "") -> None:
        """One more run done."""
        self.done += 1
        self.note = note or self.note
        if self._bar is not None:
            self._bar.update()
            self._bar.set_postfix_str(self.note)
        elif self._display is not None and time.perf_counter() - self._drawn >= REDRAW_S:
            self._draw()

    def write(self, line: str) -> None:
        """A line of text above the bar (a link, a warning)."""
        if self._bar is not None:
            self._bar.write(line)
        elif self._display is not None:
            print(line)

    def close(self) -> None:
        """The last state, shown (and, in a notebook, saved) as it is."""
        if self._bar is not None:
            self._bar.close()
        elif self._display is not None:
            self._draw()

    def _draw(self) -> None:
        self._drawn = time.perf_counter()
        self._display.update(self._bundle(), raw=True)

    def _bundle(self) -> dict[str, str]:
        share = self.done / self.total if self.total else 1.0
        note = f", {self.note}" if self.note else ""
        elapsed = time.perf_counter() - self.started
        text = f"{self.desc}: {self.done}/{self.total} {self.unit}s ({share:.0%}) in {elapsed:.1f} s{note}"
        bar = f"<progress value='{self.done}' max='{max(self.total, 1)}' style='width:16em'></progress>"
        return {"text/plain": text, "text/html": f"<div class='lmbench-progress'>{bar} {html.escape(text)}</div>"}
