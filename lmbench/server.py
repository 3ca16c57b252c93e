"""The HTTP transport for ``lmbench.api``: tornado handlers shared by ``lmbench serve`` and the Jupyter extension.

Generation runs in a small thread pool; the engine's lock queues concurrent requests on the one
model. Streaming answers are server-sent events; a client that disconnects cancels its run
(which is still recorded, as cancelled).
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import tornado.httpserver
import tornado.iostream
import tornado.netutil
import tornado.web

from . import models
from .api import ApiError, Service, Settings, parse_body, stream_chunks
from .errors import LmbenchError

log = logging.getLogger("lmbench.api")
WORKERS = 4
POST_ROUTES = {"api/generate": "generate", "v1/completions": "completion", "v1/chat/completions": "chat_completion"}
# The route names, as a regex group; each transport puts its own prefix before it.
ROUTES = r"(api/generate|api/runs|api/params|api/status|v1/models|v1/completions|v1/chat/completions)/?"


class ApiRoutes:
    """Mixed into a ``tornado.web.RequestHandler``: dispatches to a ``Service`` and writes JSON or events."""

    get_service: Callable[[], Service]
    executor: ThreadPoolExecutor
    _cancel: threading.Event | None = None

    def _json(self, status: int, body: dict[str, Any]) -> None:
        self.set_status(status)  # type: ignore[attr-defined]
        self.set_header("Content-Type", "application/json")  # type: ignore[attr-defined]
        self.finish(json.dumps(body))  # type: ignore[attr-defined]

    async def dispatch(self, method: str, route: str) -> None:
        try:
            service = self.get_service()
            if method == "GET":
                query = {k: self.get_query_argument(k) for k in self.request.query_arguments}  # type: ignore[attr-defined]
                answers = {"v1/models": service.list_models, "api/status": service.status, "api/params": service.params}
                if route == "api/runs":
                    return self._json(200, await self._in_thread(lambda: service.runs(query)))
                if route not in answers:
                    raise ApiError(405, f"use POST for /{route}")
                return self._json(200, answers[route]())
            if route not in POST_ROUTES:
                raise ApiError(405, f"use GET for /{route}")
            body = parse_body(self.request.body, service.settings.max_body_bytes)  # type: ignore[attr-defined]
            handler = getattr(service, POST_ROUTES[route])
            self._cancel = threading.Event()
            if body.get("stream"):
                return await self._stream(service, route, handler, body)
            result = await self._in_thread(lambda: handler(body, None, self._cancel))
            self._json(200, result)
        except ApiError as exc:
            self._json(exc.status, exc.body())
        except LmbenchError as exc:
            self._json(500, ApiError(500, str(exc), kind="server_error").body())

    async def _in_thread(self, fn: Callable[[], Any]) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    async def _stream(self, service: Service, route: str, handler: Callable, body: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        cancel = self._cancel
        assert cancel is not None

        def push(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the server's loop has ended: nobody listens any more, so stop generating
                cancel.set()

        def work() -> None:
            try:
                push("done", handler(body, lambda piece: push("token", piece), cancel))
            except ApiError as exc:
                push("error", exc)
            except Exception as exc:  # noqa: BLE001 - reported to the client as a server error
                push("error", ApiError(500, f"{type(exc).__name__}: {exc}", kind="server_error"))

        model = models.model_id(service.model_path(body.get("model")))
        make = stream_chunks("chat" if "chat" in route else "text", model, int(time.time()), uuid.uuid4().hex)
        job = loop.run_in_executor(self.executor, work)
        started = False
        try:
            while True:
                kind, value = await events.get()
                if kind == "error" and not started:
                    return self._json(value.status, value.body())
                if not started:
                    self.set_header("Content-Type", "text/event-stream")  # type: ignore[attr-defined]
                    self.set_header("Cache-Control", "no-cache")  # type: ignore[attr-defined]
                    started = True
                if kind == "token":
                    event = {"text": value} if route == "api/generate" else make(value, None)
                elif kind == "done":
                    event = {**value, "done": True} if route == "api/generate" else make(None, _finish_of(value))
                else:
                    event = value.body()
                self.write(f"data: {json.dumps(event)}\n\n")  # type: ignore[attr-defined]
                if kind != "token":
                    self.write("data: [DONE]\n\n")  # type: ignore[attr-defined]
                    self.finish()  # type: ignore[attr-defined]
                    return
                await self.flush()  # type: ignore[attr-defined]
        except tornado.iostream.StreamClosedError:
            cancel.set()
        finally:
            await job

    def on_connection_close(self) -> None:
        if self._cancel is not None:
            self._cancel.set()


def _log_request(handler: tornado.web.RequestHandler) -> None:
    request = handler.request
    took = 1000 * request.request_time()
    log.info("%s %s %s %.1fms", handler.get_status(), request.method, request.uri, took)


def _finish_of(result: dict[str, Any]) -> str:
    return result["choices"][0]["finish_reason"]


class StandaloneHandler(ApiRoutes, tornado.web.RequestHandler):
    """``lmbench serve``'s handler: an optional bearer API key guards every route."""

    def initialize(self, service: Service, executor: ThreadPoolExecutor) -> None:
        self.get_service = lambda: service
        self.executor = executor

    def prepare(self) -> None:
        key = self.get_service().settings.api_key
        if key and self.request.headers.get("Authorization", "") != f"Bearer {key}":
            self._json(401, ApiError(401, "missing or wrong API key (Authorization: Bearer ...)").body())

    async def get(self, route: str) -> None:
        await self.dispatch("GET", route)

    async def post(self, route: str) -> None:
        await self.dispatch("POST", route)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.finish(json.dumps(ApiError(status_code, self._reason).body()))


class Server:
    """``lmbench serve``: the API on ``host:port`` (``port=0`` picks a free one), in the foreground or a thread."""

    def __init__(self, settings: Settings | None = None, *, host: str = "127.0.0.1", port: int = 8080) -> None:
        self.service = Service(settings)
        self.host, self.port = host, port
        self.executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="lmbench-api")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopped = threading.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _application(self) -> tornado.web.Application:
        routes = [(f"/{ROUTES}", StandaloneHandler, {"service": self.service, "executor": self.executor})]
        return tornado.web.Application(routes, default_handler_class=_NotFound, log_function=_log_request)

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

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _NotFound(tornado.web.RequestHandler):
    def prepare(self) -> None:
        self.set_status(404)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(ApiError(404, f"no route {self.request.path}").body()))
