"""Sweeps across a Dask cluster: blocks of runs decoded on the workers, recorded by the client.

``sweep(..., cluster=...)`` plans as it does locally, cuts the runs into blocks (one model, the
runs of a prompt together, sized to batch well and to keep every worker busy) and submits one
Dask task per block. A worker loads the model on its own side (a path, an alias or a
package-shipped model; lmbench's engine cache keeps it loaded between tasks), decodes the block
through its scheduler and sends back the runs; the client measures and records them as tasks
complete, so the store is only ever opened by the client. Run ids are a function of the sweep
and the job, and task keys of the sweep and the block, so a retried task or a re-run sweep
never records a run twice. A worker killed mid-task: Dask runs the task again elsewhere.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from .engine._engine import Engine, load_engine, physical_cores
from .errors import ClusterError, LmbenchError
from .generation import Job, generate_many
from .run import Run

# How long to wait for a scheduler before saying it cannot be reached.
CONNECT_TIMEOUT_S = 5
# How often the client looks for finished tasks (and at the cancel flag), in seconds.
_POLL_S = 0.05
# Dask's retries of a task that raised (a task whose worker died is rescheduled anyway).
RETRIES = 2

_local: dict[int, Any] = {}  # "local:N" -> its LocalCluster, kept for the session (workers keep their models)
_lock = threading.Lock()


Unit = tuple[str, Mapping[str, Any], Sequence[Any]]  # a model, its load settings, a block of its runs


class RecipeLike(Protocol):
    @property
    def sweep_id(self) -> str: ...

    def generation(self, job: Any, engine: Engine) -> Job: ...


def run_block(
    model: str, load: Mapping[str, Any], jobs: Sequence[Any], recipe: RecipeLike, n_threads: int | None
) -> list[Run]:
    """A Dask task on a worker: the block's runs, decoded together (nothing recorded here).

    ``load``: the engine's load settings (a LoRA adapter and its scale: the adapter file must be
    readable by the worker at the same path). Without ``n_threads`` (a caller's cluster) llama.cpp
    gets the worker's own threads: a worker started with ``--nthreads 1`` on a shared machine must
    not decode with all of its cores.
    """
    engine = load_engine(model, n_threads=n_threads or _worker_threads(), **load)
    generations = [recipe.generation(job, engine) for job in jobs]
    return generate_many(engine, generations, slots=len(generations))


def _worker_threads() -> int | None:
    """The threads of the Dask worker running this task (None outside a worker)."""
    try:
        from distributed import get_worker

        return max(1, int(get_worker().state.nthreads))
    except (ImportError, ValueError):
        return None


def connect(cluster: Any) -> tuple[Any, int | None]:
    """A ``distributed.Client`` for ``cluster``, and the llama.cpp threads each worker should use."""
    try:
        import distributed
    except ImportError:
        raise ClusterError("sweeps on a cluster need Dask: pip install 'lmbench[dask]'") from None
    if isinstance(cluster, distributed.Client):
        return cluster, None
    if not isinstance(cluster, str) or not cluster:
        raise ClusterError(f"cluster must be a distributed.Client, a scheduler address or 'local:N', not {cluster!r}")
    if cluster.startswith("local:"):
        try:
            n = int(cluster.removeprefix("local:"))
        except ValueError:
            n = 0
        if n < 1:
            raise ClusterError(f"'local:N' needs a whole number of workers N >= 1, not {cluster!r}")
        with _lock:
            if n not in _local:
                _local[n] = distributed.LocalCluster(
                    n_workers=n, threads_per_worker=1, processes=True, dashboard_address=":0"
                )
            client = distributed.Client(_local[n], set_as_default=False)
        return client, max(1, physical_cores() // n)
    try:
        return distributed.Client(cluster, timeout=f"{CONNECT_TIMEOUT_S}s", set_as_default=False), None
    except (OSError, TimeoutError) as exc:
        raise ClusterError(f"cannot reach the Dask scheduler at {cluster}: {exc}") from None


def run_blocks(
    cluster: Any,
    units: Sequence[Unit],
    recipe: RecipeLike,
    *,
    on_run: Callable[[Run], Any],
    cancel: Callable[[], bool],
    announce: Callable[[str], Any] | None = None,
) -> None:
    """Run every block on the cluster, handing each run to ``on_run`` (on this side) as its task completes.

    On cancel or KeyboardInterrupt the cluster's pending tasks are cancelled; finished runs stay.
    A task that fails on every try fails the sweep with the worker's error.
    """
    if not units:
        return
    client, n_threads = connect(cluster)
    owned = client is not cluster
    try:
        if announce is not None:
            announce(f"Dask dashboard: {client.dashboard_link}")
        workers = max(1, len(client.scheduler_info().get("workers", {})))
        pieces = _spread(units, workers)
        futures = [
            client.submit(
                run_block, model, load, jobs, recipe, n_threads, key=_key(recipe.sweep_id, jobs), retries=RETRIES
            )
            for model, load, jobs in pieces
        ]
        seen: set[str] = set()
        pending = set(futures)
        try:
            while pending and not cancel():
                finished = [f for f in pending if f.done()]
                if not finished:
                    time.sleep(_POLL_S)
                for future in finished:
                    pending.discard(future)
                    for run in _result(future):
                        if run.id not in seen:
                            seen.add(run.id)
                            on_run(run)
        finally:
            if pending:
                client.cancel(list(pending))
    finally:
        if owned:
            client.close()


def _result(future: Any) -> list[Run]:
    try:
        runs: list[Run] = future.result()
    except LmbenchError:
        raise
    except Exception as exc:
        raise ClusterError(f"a sweep task failed on the cluster: {type(exc).__name__}: {exc}") from exc
    return runs


def _spread(units: Sequence[Unit], workers: int) -> list[Unit]:
    """Blocks small enough that every worker gets some (two tasks each at least), never bigger than given."""
    total = sum(len(jobs) for _, _, jobs in units)
    size = max(1, math.ceil(total / (2 * workers)))
    return [(model, load, jobs[at : at + size]) for model, load, jobs in units for at in range(0, len(jobs), size)]


def _key(sweep_id: str, jobs: Sequence[Any]) -> str:
    """A task's key from its sweep and its runs: the same block of the same sweep is the same task."""
    names = "|".join(job.key() for job in jobs)
    return f"lmbench-{sweep_id}-{hashlib.sha1(names.encode()).hexdigest()[:16]}"
