"""The HTTP transport for ``lmbench.serve``: tornado handlers shared by ``lmbench serve`` and the Jupyter extension.

Routes come from ``lmbench.serve.ROUTES``. Requests are answered by a backend: by default a
``Supervisor``, which keeps each model in a worker process (``_supervisor``), so no model
file can take the server down. Streaming answers are server-sent events; a client that
disconnects cancels its run (which is still recorded, as cancelled). ``lmbench serve`` checks
every request's Host, Origin and API key before routing (``_guard``); inside Jupyter,
Jupyter's own checks and token do that.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ClassVar, Protocol

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web
from pydantic import BaseModel

from ..errors import LmbenchError
from ..generation import Cancel
from . import _guard as _http_guard
from ._errors import ApiError, api_error
from ._requests import parse, parse_body
from ._routes import Route, find_route
from ._service import Emit, Service
from ._settings import Settings
from ._supervisor import Supervisor

log = logging.getLogger("lmbench.serve")
# Threads that wait on answers (the work itself happens in the model's scheduler, in its worker process).
WORKERS = 256


class Backend(Protocol):
    """What answers the routes: a ``Service`` in this process or a ``Supervisor`` of worker processes."""

    settings: Settings

    def call(self, route: Route, request: BaseModel, emit: Emit | None = None, cancel: Cancel = None) -> Any: ...


class ApiRoutes(tornado.web.RequestHandler):
    """Answers the API's routes for a backend: JSON, or server-sent events for streams.

    Each request is parsed into its route's request model first (a 400 naming the field if it
    does not fit), so no backend ever sees an unchecked body. Subclasses say where the backend
    and the thread pool come from (``initialize``).
    """

    get_backend: Callable[[], Backend]
    executor: ThreadPoolExecutor
    _cancel: threading.Event | None = None
    served_by: str | None = None  # the model named in the answer, for the request log

    def _json(self, status: int, body: dict[str, Any], retry_after: int | None = None) -> None:
        self.served_by = _model_of(body) or self.served_by
        self.set_status(status)
        if retry_after is not None:
            self.set_header("Retry-After", str(retry_after))
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def dispatch(self, method: str, path: str) -> None:
        try:
            backend = self.get_backend()
            routes = find_route(path.rstrip("/"))
            if not routes:
                raise ApiError(404, f"no route {self.request.path}")
            route = routes.get(method)
            if route is None:
                raise ApiError(405, f"use {' or '.join(routes)} for {self.request.path}")
            if method == "GET":
                query = parse(route.request, {k: self.get_query_argument(k) for k in self.request.query_arguments})
                return self._json(200, await self._in_thread(lambda: backend.call(route, query)))
            if not _http_guard.is_json(self.request.headers.get("Content-Type")):
                raise ApiError(415, "send the request body as JSON (Content-Type: application/json)")
            request = parse(route.request, parse_body(self.request.body, backend.settings.max_body_bytes))
            cancel = self._cancel = threading.Event()
            if route.streams and getattr(request, "stream", False):
                return await self._stream(route, backend, request)
            self._json(200, await self._in_thread(lambda: backend.call(route, request, None, cancel)))
        except ApiError as exc:
            self._json(exc.status, exc.body(), exc.retry_after)
        except LmbenchError as exc:
            error = api_error(exc)
            self._json(error.status, error.body())

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _stream(self, route: Route, backend: Backend, request: BaseModel) -> None:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        mailbox = _Mailbox.of(loop)
        cancel = self._cancel
        assert cancel is not None

        def push(kind: str, value: Any) -> None:
            try:
                mailbox.put(events, (kind, value))
            except RuntimeError:  # the server's loop has ended: nobody listens any more, so stop generating
                cancel.set()

        def work() -> None:
            try:
                push("done", backend.call(route, request, lambda event: push("event", event), cancel))
            except ApiError as exc:
                push("error", exc)
            except LmbenchError as exc:
                push("error", api_error(exc))
            except Exception as exc:  # noqa: BLE001 - reported to the client as a server error
                push("error", ApiError(500, f"{type(exc).__name__}: {exc}", kind="server_error"))

        job = loop.run_in_executor(self.executor, work)
        started = False
        try:
            while True:
                kind, value = await events.get()
                if kind == "error" and not started:
                    return self._json(value.status, value.body(), value.retry_after)
                if not started:
                    self.set_header("Content-Type", "text/event-stream")
                    self.set_header("Cache-Control", "no-cache")
                    started = True
                if isinstance(value, dict):
                    self.served_by = _model_of(value) or self.served_by
                while kind == "event":  # the events already here go out in one flush
                    self.write(_event(route, value))
                    if events.empty():
                        break
                    kind, value = events.get_nowait()
                if kind == "event":
                    await self.flush()
                    continue
                final = value.body() if kind == "error" else value
                if final is not None:
                    self.write(_event(route, final))
                if route.done_marker:
                    self.write("data: [DONE]\n\n")
                self.finish()
                return
        except tornado.iostream.StreamClosedError:
            cancel.set()
        finally:
            await job

    def on_connection_close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(ApiError(status_code, self._reason).body()))


class _Mailbox:
    """Items for a loop's queues from other threads, handed over with one wake-up of the loop per burst.

    A decode step streams a piece to each of up to ``--parallel`` requests at once; waking the loop
    once for all of them, not once each, leaves the cores to llama.cpp's threads.
    """

    _loops: ClassVar[weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Mailbox]] = weakref.WeakKeyDictionary()
    _made: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._lock = threading.Lock()
        self._items: list[tuple[asyncio.Queue[Any], Any]] = []

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _Mailbox:
        """The loop's mailbox (made on first use)."""
        with cls._made:
            mailbox = cls._loops.get(loop)
            if mailbox is None:
                mailbox = cls._loops[loop] = cls(loop)
            return mailbox

    def put(self, queue: asyncio.Queue[Any], item: Any) -> None:
        """Queue ``item`` for ``queue``; raises RuntimeError once the loop has closed."""
        with self._lock:
            self._items.append((queue, item))
            if len(self._items) > 1:  # a wake-up is on its way
                return
        try:
            self._loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            with self._lock:
                self._items.clear()
            raise

    def _deliver(self) -> None:
        with self._lock:
            items, self._items = self._items, []
        for queue, item in items:
            queue.put_nowait(item)


def _event(route: Route, value: dict[str, Any]) -> str:
    """One server-sent event; routes with named events (Anthropic's) name each by its ``type``."""
    name = f"event: {value.get('type', 'error')}\n" if route.named_events else ""
    return f"{name}data: {json.dumps(value)}\n\n"


def _model_of(body: Any) -> str | None:
    """The model an answer names: at its top (OpenAI, lmbench) or in its message or response (Anthropic's and
    the Responses API's first stream events)."""
    if not isinstance(body, dict):
        return None
    for found in (body, body.get("message"), body.get("response")):
        if isinstance(found, dict) and isinstance(found.get("model"), str):
            return str(found["model"])
    return None


def _log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    took = 1000 * request.request_time()
    served = getattr(handler, "served_by", None)
    model = f" model {served}" if served else ""
    log.info("%s %s %s %.1fms%s", handler.get_status(), request.method, request.path, took, model)


class StandaloneHandler(ApiRoutes):
    """``lmbench serve``'s handler for every path: Host, Origin and API key are checked before routing."""

    def initialize(self, backend: Backend, executor: ThreadPoolExecutor, bound_host: str) -> None:
        self.get_backend = lambda: backend
        self.executor = executor
        self.bound_host = bound_host

    def prepare(self) -> None:
        settings = self.get_backend().settings
        headers = self.request.headers
        origin = headers.get("Origin")
        route = find_route(self.path_args[0].rstrip("/")) if self.path_args else {}
        public = self.request.method == "OPTIONS" or any(r.public for r in route.values())
        refusal = _http_guard.check(
            host=headers.get("Host"),
            origin=origin,
            authorization=headers.get("Authorization"),
            x_api_key=headers.get("x-api-key"),
            settings=settings if not public else _without_key(settings),
            bound_host=self.bound_host,
        )
        if refusal is not None:
            self._json(refusal.status, refusal.body())
            return
        if origin is not None:
            self.set_header("Access-Control-Allow-Origin", origin)
            self.set_header("Vary", "Origin")

    async def get(self, path: str) -> None:
        await self.dispatch("GET", path)

    async def post(self, path: str) -> None:
        await self.dispatch("POST", path)

    def options(self, path: str) -> None:
        """CORS preflight: answered without the API key, for allowed origins only (checked in ``prepare``)."""
        self.set_status(204)
        self.set_header("Access-Control-Allow-Methods", _http_guard.CORS_METHODS)
        self.set_header("Access-Control-Allow-Headers", _http_guard.CORS_HEADERS)
        self.set_header("Access-Control-Max-Age", "600")
        self.finish()


def _without_key(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_key": None})


class Server:
    """``lmbench serve``: the API on ``host:port`` (``port=0`` picks a free one), in the foreground or a thread.

    ``isolate`` (the default) keeps each model in a supervised worker process; ``False`` answers
    in this process (a model that crashes llama.cpp then takes this process with it).
    """

    def __init__(
        self, settings: Settings | None = None, *, host: str = "127.0.0.1", port: int = 8080, isolate: bool = True
    ) -> None:
        self.backend: Supervisor | Service = Supervisor(settings) if isolate else Service(settings)
        self.service = self.backend.service if isinstance(self.backend, Supervisor) else self.backend
        self.host, self.port = host, port
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="lmbench-api")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _application(self) -> tornado.web.Application:
        options = {"backend": self.backend, "executor": self.executor, "bound_host": self.host}
        return tornado.web.Application([(r"/(.*)", StandaloneHandler, options)], log_function=_log_request)

    async def _main(self, ready: threading.Event) -> None:
        sockets = tornado.netutil.bind_sockets(self.port, address=self.host)
        self.port = sockets[0].getsockname()[1]
        # Bodies over the API's limit get a JSON 413 from the handler; far bigger ones are cut off by tornado.
        limit = max(4 * self.service.settings.max_body_bytes, 16 << 20)
        http = tornado.httpserver.HTTPServer(self._application(), max_body_size=limit)
        http.add_sockets(sockets)
        self._loop = asyncio.get_running_loop()
        ready.set()
        try:
            await asyncio.get_running_loop().run_in_executor(None, self._stopped.wait)
        finally:
            http.stop()
            await http.close_all_connections()

    def serve_forever(self) -> None:
        """Serve (starting if needed) until ``stop()`` or Ctrl-C."""
        if self._thread is None:
            self.start()
        try:
            while not self._stopped.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def start(self) -> str:
        """Serve from a background thread; returns the URL once it accepts connections."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._main(ready))
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that called start()
                failure.append(exc)
                ready.set()

        self._thread = threading.Thread(target=run, name="lmbench-api-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise LmbenchError(f"cannot serve on {self.host}:{self.port}: {failure[0]}")
        return self.url

    def stop(self) -> None:
        """Stop serving (finishing requests in flight) and release the port."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(30)
        self.executor.shutdown(wait=True, cancel_futures=True)  # generations in flight end (cancelled) and are recorded
        if isinstance(self.backend, Supervisor):
            self.backend.close()

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
