"""B9: a sweep on a Dask LocalCluster against the same sweep in this process, and the cost of a task."""

from __future__ import annotations

import pickle
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import lmbench
from bench.common import Result, alternate
from lmbench.store._store import Store

TEMPERATURES = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]


def _sweep(path: Path, store: Store, cluster: str | None, **options: object) -> tuple[float, int]:
    settings = {"grid": {"temperature": TEMPERATURES}, "seeds": 4, "max_tokens": 64, **options}
    started = time.perf_counter()
    df = lmbench.sweep(
        "Once upon a time",
        ignore_eos=True,
        model=path,
        name=uuid.uuid4().hex,
        progress=False,
        store=store,
        cluster=cluster,
        **settings,
    )  # type: ignore[arg-type]
    return time.perf_counter() - started, int(df.completion_tokens.sum())


def b9_scale_out(name: str, path: Path, reps: int) -> list[Result]:
    store = Store(Path(tempfile.mkdtemp()) / "b9.db")
    _sweep(path, store, "local:2")  # start the cluster and load the model on both workers
    lmbench.load(path)
    tokens = _sweep(path, store, None)[1]
    a, b = alternate(
        lambda: tokens / _sweep(path, store, "local:2")[0], lambda: tokens / _sweep(path, store, None)[0], reps
    )
    # The cost of a task: the same sweep with one token per run (4 tasks of 8 runs), against this process.
    tiny = [
        _sweep(path, store, "local:2", max_tokens=1)[0] - _sweep(path, store, None, max_tokens=1)[0]
        for _ in range(reps)
    ]
    overhead = statistics.median(tiny) / 4
    run = lmbench.generate("Once upon a time", model=path, max_tokens=64, logprobs=0, store=store)
    size = len(pickle.dumps(run))
    return [
        Result(
            "B9 scale-out",
            name,
            "32-run sweep: local:2 (1 thread each) vs this process (2 threads)",
            a,
            b,
            "tok/s",
            "report",
        ),
        Result("B9 scale-out", name, "overhead per task (scheduling, transfer, engine cache hit)", overhead, None, "s"),
        Result(
            "B9 scale-out", name, "one run record sent back (64 tokens, log-probabilities)", size / 1024, None, "KiB"
        ),
    ]
