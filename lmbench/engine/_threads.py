"""How many threads llama.cpp should decode with right now: the cores that other processes leave free.

llama.cpp's worker threads wait for each other at a barrier inside every decode; when another
process holds one of the cores, a two-thread decode waits for a thread that is not running, and
speed collapses (to a third, or worse, of one thread's). So unless the user fixes ``n_threads``,
the engine re-reads the machine's CPU use every ``INTERVAL_S`` (Linux's ``/proc/stat``, less the
CPU time of this process and of the children it waited for, such as a model file's test load)
and decodes with as many threads as there are cores left free, at least one and at most the
physical cores; until the first tenth of a second has passed it goes by the threads that are
running or ready this instant. It goes by the middle one of the last ``WINDOWS`` readings, so a
competitor that keeps a core takes a thread away within two readings, while another process's
burst (an HTTP client parsing a streamed answer) does not halve the threads for a tenth of a
second; a reading over a longer span (after the engine sat idle) stands alone. Elsewhere it keeps
the physical cores.
"""

from __future__ import annotations

import collections
import os
import time

# Short enough that a request right after a load (a few tenths of a second) already decodes with what is
# free; /proc/stat counts in 10 ms ticks, so a tenth of a second tells a busy core from a free one.
INTERVAL_S = 0.1
# A core counts as free when others leave at least this much of it: a CPU-bound competitor reads about a
# whole core, while an HTTP client and server beside the engine read 0.2-0.5 (plus /proc/stat's +/-0.2 of
# tick noise in a tenth of a second), which must not halve the threads.
FREE_SHARE = 0.3
# Readings kept: the threads follow the middle one (with two, the lesser).
WINDOWS = 3


def _busy_ticks() -> tuple[int, int] | None:
    """(busy, total) CPU ticks of the whole machine since boot, or None where /proc/stat is not there."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields[:8]) - idle, sum(fields[:8])


def _others_running() -> float:
    """Other processes' threads running or ready this instant (``/proc/loadavg``'s runnable count, less the
    thread reading it): the first guess, before a tenth of a second of CPU time can be compared."""
    try:
        with open("/proc/loadavg") as fh:
            runnable = int(fh.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):
        return 0.0
    return float(max(0, runnable - 1))


def _own_cpu_s() -> float:
    """The CPU seconds of this process and of its children that ended (``os.times``: all threads)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class Threads:
    """The thread count for the next decode: ``most`` when fixed, else what the machine leaves free."""

    def __init__(self, most: int, *, fixed: bool) -> None:
        self.most, self.fixed = most, fixed
        self._cpus = os.cpu_count() or most
        self.current = most if fixed else self._free(_others_running())
        self._tick_s = 1.0 / os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 0.01
        self._last: tuple[float, float, tuple[int, int]] | None = None
        self._others: collections.deque[float] = collections.deque(maxlen=WINDOWS)
        self._sample()

    def _sample(self) -> tuple[float, float, tuple[int, int]] | None:
        ticks = _busy_ticks()
        if ticks is None:
            return None
        sample = (time.monotonic(), _own_cpu_s(), ticks)
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
        if wall >= 2 * INTERVAL_S:  # a long reading (the engine sat idle) is no burst: it speaks for itself
            self._others.clear()
        self._others.append(max(0.0, busy_s - own_s) / wall)
        self.current = self._free(sorted(self._others)[(len(self._others) - 1) // 2])
        return self.current

    def _free(self, others: float) -> int:
        """The threads for the cores that ``others`` (cores' worth of other processes' use) leave free."""
        return max(1, min(self.most, int(self._cpus - others + (1 - FREE_SHARE))))

    def describe(self) -> str:
        """``"2 (fixed)"`` or ``"auto: 1 of 2 now"``, for ``repr(engine)``, the panel and the logs."""
        return f"{self.most} (fixed)" if self.fixed else f"auto: {self.current} of {self.most} now"
