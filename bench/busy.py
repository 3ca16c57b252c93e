"""B13 busy machine: one request's speed with 0 and 1 competing CPU-bound processes.

lmbench's default (threads chosen from what the machine leaves free) against fixed 1 and 2
threads, each side measured in the same run, alternating, medians. The target: with one core busy,
the default reaches at least 0.9 of the best fixed setting.
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import lmbench
from bench.common import PROMPT, SAMPLING, Result
from lmbench.store import Store


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


@contextmanager
def competing(n: int, seconds: float = 600.0) -> Iterator[None]:
    """``n`` other processes that each keep a core busy while the block runs."""
    hogs = [multiprocessing.Process(target=_spin, args=(seconds,), daemon=True) for _ in range(n)]
    for hog in hogs:
        hog.start()
    try:
        time.sleep(1.0)  # let the engines see the new load (they re-read it every half second)
        yield
    finally:
        for hog in hogs:
            hog.terminate()
            hog.join()


def b13_busy_machine(name: str, path: Path, reps: int) -> list[Result]:
    store = Store(Path(tempfile.mkdtemp()) / "b13.db")
    settings: dict[str, int | None] = {"default": None, "1 thread": 1, "2 threads": 2}
    results: list[Result] = []
    for busy in (0, 1):
        speeds: dict[str, list[float]] = {label: [] for label in settings}
        with competing(busy):
            for rep in range(reps):
                order = list(settings) if rep % 2 == 0 else list(reversed(settings))
                for label in order:
                    lmbench.unload()
                    engine = lmbench.load(path, n_threads=settings[label])
                    lmbench.generate(PROMPT, model=engine, max_tokens=16, store=store, **SAMPLING)  # warm up
                    run = lmbench.generate(
                        PROMPT, model=engine, max_tokens=256, seed=rep, ignore_eos=True, store=store, **SAMPLING
                    )
                    speeds[label].append(run.tokens_per_s or 0.0)
        medians = {label: statistics.median(v) for label, v in speeds.items()}
        best = max(medians["1 thread"], medians["2 threads"])
        results.append(
            Result(
                "B13 busy machine",
                name,
                f"{busy} competing process(es): default vs the best fixed setting "
                f"(1 thread {medians['1 thread']:,.0f}, 2 threads {medians['2 threads']:,.0f} tok/s)",
                medians["default"],
                best,
                "tok/s",
                ">= 0.9" if busy else "report",
            )
        )
    return results


def quiet() -> str:
    """What the machine was doing when the benchmarks started (load average), for the results' notes."""
    try:
        one, five, _ = os.getloadavg()
    except OSError:
        return "load average unknown"
    cores = os.cpu_count() or 1
    verdict = "quiet" if one < 0.5 else f"NOT quiet (load {one:.1f} on {cores} CPUs): numbers are unreliable"
    return f"load average {one:.2f} / {five:.2f} (1 / 5 min) at the start: {verdict}"
