"""How many threads llama.cpp should decode with right now: the cores that other processes leave free.

llama.cpp's worker threads wait for each other at a barrier inside every decode; when another
process holds one of the cores, a two-thread decode waits for a thread that is not running, and
speed collapses (to a third, or worse, of one thread's). So unless the user fixes ``n_threads``,
the engine re-reads the machine's CPU use every ``INTERVAL_S`` (Linux's ``/proc/stat``, less this
process's own CPU time) and decodes with as many threads as there are cores left free, at least
one and at most the physical cores. Elsewhere it keeps the physical cores.
"""

from __future__ import annotations

import os
import time

INTERVAL_S = 0.5
# A core counts as free when others leave at least this much of it.
FREE_SHARE = 0.6


def _busy_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, or None where /proc/stat is not there."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


class Threads:
    """The thread count for the next decode: ``most`` when fixed, else what the machine leaves free."""

    def __init__(self, most: int, *, fixed: bool) -> None:
        self.most, self.fixed = most, fixed
        self.current = most
        self._cpus = os.cpu_count() or most
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self._last: tuple[float, float, tuple[int, int]] | None = None
        self._sample()

    def _sample(self) -> tuple[float, float, tuple[int, int]] | None:
        ticks = _busy_ticks()
        if ticks is None:
            return None
        sample = (time.monotonic(), time.process_time(), ticks)
        previous, self._last = self._last, sample
        return previous

    def now(self) -> int:
        """The threads to decode with now (re-checked at most every ``INTERVAL_S``)."""
        if self.fixed or self._last is None or time.monotonic() - self._last[0] < INTERVAL_S:
            return self.current
        previous = self._sample()
        if previous is None or self._last is None:
            return self.current
        wall = self._last[0] - previous[0]
        busy_s = (self._last[2][0] - previous[2][0]) * self._tick_s
        own_s = self._last[1] - previous[1]
        others = max(0.0, busy_s - own_s) / wall
        free = self._cpus - others
        self.current = max(1, min(self.most, int(free + (1 - FREE_SHARE))))
        return self.current

    def describe(self) -> str:
        """``"2 (fixed)"`` or ``"auto: 1 of 2 now"``, for ``repr(engine)``, the panel and the logs."""
        return f"{self.most} (fixed)" if self.fixed else f"auto: {self.current} of {self.most} now"
