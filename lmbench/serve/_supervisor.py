"""The API's engines in supervised worker processes: a crash fails its own requests, never the server.

``lmbench serve`` and the Jupyter extension answer requests that need no model (runs, parameters,
status, the model list) in their own process, and hand every request that does (generation,
tokenizing) to a worker process that holds that one model, as LM Studio and Ollama do. A model
that makes llama.cpp abort or segfault kills only its worker: the requests it was answering fail
with a clear error naming the signal and llama.cpp's last lines, requests for other models go on,
and the next request for that model starts a new worker.

Workers are started on first use, one per model (the least recently used idle one is stopped
beyond ``MAX_WORKERS``); they write runs to the same store, which takes concurrent writers.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import multiprocessing
import os
import queue
import signal
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..engine import _probe
from ..errors import LmbenchError
from ..generation import Cancel, stopper
from ..store._store import Store
from ._errors import ApiError, api_error
from ._requests import NoQuery
from ._routes import HANDLERS, Route
from ._service import Emit, Service
from ._settings import Settings

# Models kept in worker processes at once; idle workers beyond this are stopped, least recently used first.
MAX_WORKERS = 2
# How often a worker's watcher looks at its requests' cancel flags (clients that went away), in seconds.
_POLL_S = 0.1


class _PinnedService(Service):
    """A worker's service: every request is for the worker's model, already resolved by the front."""

    def model_path(self, name: str | None) -> tuple[str, Path]:
        return name or self.default_id, self.default_path


def _serve(conn: Connection, settings: Settings, log_path: str) -> None:
    """A worker process: load the model, then answer calls, each in a thread of a pool, until told to stop.

    The pool's threads live on, so each keeps its store connection (a new thread per call opened
    the database again for every request)."""
    os.dup2(os.open(log_path, os.O_WRONLY | os.O_APPEND), 2)  # llama.cpp's last words, for the supervisor
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the server, which then stops its workers
    os.environ["GGML_NO_BACKTRACE"] = "1"
    service = _PinnedService(settings)
    outbox = _Outbox(conn)
    send = outbox.put
    cancels: dict[int, threading.Event] = {}
    # A thread for every call that may wait at once: the scheduler's slots and queue, and a few that need no slot.
    pool = ThreadPoolExecutor(settings.parallel + settings.max_queue + 16, thread_name_prefix="lmbench-worker")

    def work(rid: int, handler: str, request: BaseModel, streams: bool) -> None:
        emit = (lambda event: send("event", rid, event)) if streams else None
        try:
            if handler == "engines":
                send("done", rid, service.engines())
            else:
                send("done", rid, service.call(HANDLERS[handler], request, emit, cancels[rid]))
        except ApiError as exc:
            send("error", rid, exc.status, exc.message, exc.kind, exc.param, exc.code, exc.retry_after, exc.details)
        except LmbenchError as exc:
            error = api_error(exc)
            send("error", rid, error.status, error.message, error.kind, error.param, error.code, None, error.details)
        except Exception as exc:  # noqa: BLE001 - reported to the client as a server error
            send("error", rid, 500, f"{type(exc).__name__}: {exc}", "server_error", None, None, None, None)
        finally:
            cancels.pop(rid, None)

    with contextlib.suppress(LmbenchError):  # a model that fails to load says so to each request
        service.engine(service.default_path)
    while True:
        try:
            kind, rid, *rest = conn.recv()
        except (EOFError, OSError):
            break
        if kind == "call":
            cancels[rid] = threading.Event()
            pool.submit(work, rid, *rest)
        elif kind == "cancel" and (event := cancels.get(rid)) is not None:
            event.set()
        elif kind == "stop":
            break
    for event in [*cancels.values()]:  # the server is stopping: runs in flight end as cancelled, and are recorded
        event.set()
    pool.shutdown(wait=True)
    outbox.close()


class _Outbox:
    """A worker's messages to the supervisor, sent by one thread in batches: what queued during the last send.

    Every decode step streams a piece for each of up to ``--parallel`` requests; one pipe write
    (and one pickle) per batch instead of per piece keeps that off the scheduler's thread.
    """

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._send, name="lmbench-worker-outbox", daemon=True)
        self._thread.start()

    def put(self, *message: Any) -> None:
        self._queue.put(message)

    def _send(self) -> None:
        while True:
            batch: list[tuple[Any, ...] | None] = [self._queue.get()]
            with contextlib.suppress(queue.Empty):
                while batch[-1] is not None:
                    batch.append(self._queue.get_nowait())
            messages = [m for m in batch if m is not None]
            if messages:
                self._deliver(messages)
            if len(messages) < len(batch):
                return

    def _deliver(self, messages: list[tuple[Any, ...]]) -> None:
        try:
            self._conn.send(messages)
        except OSError:  # the supervisor has gone: nobody to tell
            pass
        except Exception:  # noqa: BLE001 - one answer that cannot be pickled fails its own request only
            if len(messages) > 1:
                for message in messages:
                    self._deliver([message])
            else:
                kind, rid, *_ = messages[0]
                reason = f"the worker's answer ({kind}) could not be sent: {traceback.format_exc(limit=1)}"
                self._deliver([("error", rid, 500, reason, "server_error", None, None, None, None)])

    def close(self) -> None:
        """Send what is queued, then stop."""
        self._queue.put(None)
        self._thread.join(30)


class _Worker:
    """One worker process for one model, and the requests it is answering."""

    _ids = itertools.count(1)

    def __init__(self, path: Path, settings: Settings) -> None:
        self.path = path
        context = multiprocessing.get_context("spawn")  # a fresh interpreter: no inherited threads or llama.cpp state
        handle, self.log_path = tempfile.mkstemp(prefix="lmbench-worker-", suffix=".log")
        os.close(handle)
        self.conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child, settings, self.log_path), name=f"lmbench-worker {path.name}", daemon=True
        )
        self.process.start()
        child.close()
        self._lock = threading.Lock()
        # Per request: where its answer goes, and where its streamed events go (straight from the reader).
        self._pending: dict[int, tuple[queue.Queue[tuple[str, list[Any]]], Emit | None]] = {}
        # Per request not yet cancelled: whether its client has gone away (looked at by one watcher thread,
        # so the threads waiting for answers sleep until one comes).
        self._cancels: dict[int, Callable[[], bool]] = {}
        self.alive = True
        threading.Thread(target=self._read, name=f"lmbench-supervisor {path.name}", daemon=True).start()
        threading.Thread(target=self._watch, name=f"lmbench-supervisor-cancels {path.name}", daemon=True).start()

    @property
    def busy(self) -> bool:
        return bool(self._pending)

    def _read(self) -> None:
        try:
            while True:
                for kind, rid, *rest in self.conn.recv():
                    if (pending := self._pending.get(rid)) is None:
                        continue
                    answers, emit = pending
                    if kind != "event":
                        answers.put((kind, rest))
                    elif emit is not None:
                        try:
                            emit(rest[0])
                        except Exception as exc:  # noqa: BLE001 - raised in the request's own thread, as before
                            self._pending[rid] = (answers, None)
                            answers.put(("raise", [exc]))
        except (EOFError, OSError):
            pass
        with self._lock:
            self.alive = False
            self.conn.close()
        self.process.join(10)
        reason = self._why_it_ended()
        with self._lock:
            for answers, _ in self._pending.values():
                answers.put(("ended", [reason]))
        with contextlib.suppress(OSError):
            os.unlink(self.log_path)

    def _watch(self) -> None:
        """Tell the worker of each request whose client has gone away, until the worker ends."""
        while self.alive:
            time.sleep(_POLL_S)
            with self._lock:
                gone = [rid for rid, should_stop in self._cancels.items() if should_stop()]
                for rid in gone:
                    del self._cancels[rid]
                    with contextlib.suppress(OSError):
                        self.conn.send(("cancel", rid))

    def _why_it_ended(self) -> str:
        code = self.process.exitcode
        try:
            with open(self.log_path, errors="replace") as fh:
                last = _probe.last_words(fh.read()[-20000:])
        except OSError:
            last = "no output"
        if code is not None and code < 0:
            try:
                how = f"killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"killed by signal {-code}"
        else:
            how = f"stopped (exit status {code})"
        return (
            f"the model worker for {self.path.name} {how} while answering this request; other requests are "
            f"unaffected and the next request for this model starts a new worker. llama.cpp's last lines: {last}"
        )

    def call(self, handler: str, request: BaseModel, emit: Emit | None, cancel: Cancel) -> Any:
        """Send one request to the worker and wait for its answer; its streamed events reach ``emit`` as they come."""
        rid = next(self._ids)
        answers: queue.Queue[tuple[str, list[Any]]] = queue.Queue()
        with self._lock:
            if not self.alive:
                raise ApiError(503, f"the model worker for {self.path.name} has stopped; retry", kind="server_error")
            self._pending[rid] = (answers, emit)
            if cancel is not None:
                self._cancels[rid] = stopper(cancel)
            self.conn.send(("call", rid, handler, request, emit is not None))
        try:
            while True:
                kind, rest = answers.get()
                if kind == "done":
                    return rest[0]
                elif kind == "raise":  # passing on a streamed event failed
                    raise rest[0]
                elif kind == "error":
                    status, message, error_kind, param, code, retry_after, details = rest
                    raise ApiError(
                        status,
                        message,
                        kind=error_kind,
                        param=param,
                        code=code,
                        retry_after=retry_after,
                        details=details,
                    )
                elif kind == "ended":
                    raise ApiError(500, rest[0], kind="server_error", code="model_worker_crashed")
        finally:
            with self._lock:
                self._pending.pop(rid, None)
                self._cancels.pop(rid, None)

    def stop(self) -> None:
        """Ask the worker to stop (it cancels and records its runs in flight, then exits), then make sure."""
        with self._lock, contextlib.suppress(OSError):
            self.conn.send(("stop", 0))
        self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        with contextlib.suppress(OSError):  # now, not from the reader thread, which a stopping server outlives
            os.unlink(self.log_path)


class Supervisor:
    """The API answered with each model in a worker process: the same ``call`` as ``Service.call``."""

    def __init__(self, settings: Settings | None = None) -> None:
        self.service = Service(settings)  # answers what needs no model, and resolves model names
        self.settings = self.service.settings
        store = self.settings.store
        self._worker_settings = self.settings.model_copy(
            update={"api_key": None, "strict_models": False, "store": store.path if isinstance(store, Store) else store}
        )
        self._workers: collections.OrderedDict[Path, _Worker] = collections.OrderedDict()
        self._lock = threading.Lock()

    def call(self, route: Route, request: BaseModel, emit: Emit | None = None, cancel: Cancel = None) -> Any:
        """Answer one route: routes without a model here, routes that use one in that model's worker."""
        if not route.uses_model:
            answer = self.service.call(route, request)
            if route.handler == "status":  # with each worker's scheduler
                loaded = [w.call("engines", NoQuery(), None, None)["engines"] for w in self._live()]
                answer["engines"] = [engine for engines in loaded for engine in engines]
            return answer
        _, path = self.service.model_path(getattr(request, "model", None))
        return self._worker(path).call(route.handler, request, emit, cancel)

    def _worker(self, path: Path) -> _Worker:
        with self._lock:
            worker = self._workers.get(path)
            if worker is not None and worker.alive:
                self._workers.move_to_end(path)
                return worker
            self._workers.pop(path, None)
            idle = [p for p, w in self._workers.items() if not w.busy or not w.alive]
            for old in idle[: max(0, len(self._workers) + 1 - MAX_WORKERS)]:
                threading.Thread(target=self._workers.pop(old).stop, daemon=True).start()
            settings = self._worker_settings.model_copy(update={"model": str(path)})
            worker = self._workers[path] = _Worker(path, settings)
            return worker

    def _live(self) -> list[_Worker]:
        with self._lock:
            return [w for w in self._workers.values() if w.alive]

    def workers(self) -> dict[str, int]:
        """The running workers: model file name -> process id."""
        return {w.path.name: w.process.pid or 0 for w in self._live()}

    def close(self) -> None:
        """Stop every worker (their runs in flight end as cancelled and are recorded)."""
        with self._lock:
            workers = [*self._workers.values()]
            self._workers.clear()
        for worker in workers:
            worker.stop()
