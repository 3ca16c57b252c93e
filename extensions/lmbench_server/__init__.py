"""Jupyter server extension: the lmbench HTTP API inside a running Jupyter server, under ``/lmbench/``.

Enabled automatically when lmbench is installed (``etc/jupyter/jupyter_server_config.d``);
protected by Jupyter's own token authentication. Routes, request and answer formats are those of
``lmbench serve`` (see ``lmbench.serve._service``); the default model is ``$LMBENCH_MODEL`` or lmbench's
default, resolved on the first request so that starting Jupyter never loads or downloads a model.
Models run in supervised worker processes (``lmbench.serve._supervisor``): a model file that crashes
llama.cpp fails its request, never the Jupyter server.
lmbench itself is imported when the extension loads, not when Jupyter lists its extensions.

``c.LmbenchServer.root_routes = True`` also mounts the API at the server's root paths that Jupyter
does not use (``/api/generate``, ``/v1/...``, ``/health``; not ``/api/status``, which is Jupyter's),
so one port serves JupyterLab and the LM Studio guides' examples (the lmbench image does this). Those
routes are guarded as ``lmbench serve`` guards its own: Host and Origin checks, and
``c.LmbenchServer.api_key`` when set, instead of Jupyter's token.
"""

from __future__ import annotations

import os
import threading
from typing import Any

# Root paths of the API that Jupyter answers itself (its server status): left to Jupyter.
_NOT_JUPYTERS = r"(?!api/status/?$)"


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lmbench_server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import tornado.web
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join

    from lmbench.serve._routes import route_pattern
    from lmbench.serve._server import WORKERS, ApiRoutes, StandaloneHandler
    from lmbench.serve._settings import from_config
    from lmbench.serve._supervisor import Supervisor

    class LmbenchApiHandler(ApiRoutes, APIHandler):
        """The API's routes behind Jupyter's authentication."""

        def initialize(self, get_backend: Any, executor: ThreadPoolExecutor) -> None:
            self.get_backend = get_backend
            self.executor = executor

        @tornado.web.authenticated
        async def get(self, route: str) -> None:
            await self.dispatch("GET", route)

        @tornado.web.authenticated
        async def post(self, route: str) -> None:
            await self.dispatch("POST", route)

    class RootApiHandler(StandaloneHandler):
        """The API at the root paths, guarded by Host, Origin and API key checks as in ``lmbench serve``."""

        def initialize(self, get_backend: Any, executor: ThreadPoolExecutor, bound_host: str) -> None:
            self.get_backend = get_backend
            self.executor = executor
            self.bound_host = bound_host

        def check_xsrf_cookie(self) -> None:
            """No XSRF cookie, as in ``lmbench serve``: POST bodies must be JSON and browser origins are checked."""

    lock = threading.Lock()
    backends: list[Supervisor] = []
    # c.LmbenchServer.parallel = 8 (any setting of `lmbench serve`) in jupyter_server_config.py, checked now.
    # Jupyter's token guards the routes under /lmbench/; c.LmbenchServer.api_key guards the root routes.
    config = serverapp.config.get("LmbenchServer", {})
    settings = from_config(config)
    root_routes, api_key = bool(config.get("root_routes", False)), settings.api_key

    def get_backend() -> Supervisor:
        with lock:
            if not backends:
                model = settings.model or os.environ.get("LMBENCH_MODEL") or None
                backends.append(Supervisor(settings.model_copy(update={"model": model})))
            return backends[0]

    def close_backends() -> None:
        """Stop the model workers: their runs in flight end as cancelled, and are recorded."""
        with lock:
            for backend in backends:
                backend.close()
            backends.clear()

    # jupyter_server calls the stop hooks of extension apps only, not of module extensions like this one.
    cleanup_extensions = serverapp.cleanup_extensions

    async def cleanup_with_workers() -> None:
        await cleanup_extensions()
        close_backends()

    serverapp.cleanup_extensions = cleanup_with_workers

    executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="lmbench-api")
    base_url = serverapp.web_app.settings["base_url"]
    base = url_path_join(base_url, "lmbench")
    handlers: list[Any] = [
        (url_path_join(base, route_pattern()), LmbenchApiHandler, {"get_backend": get_backend, "executor": executor})
    ]
    if root_routes:
        options = {"get_backend": get_backend, "executor": executor, "bound_host": serverapp.ip}
        handlers.append((url_path_join(base_url, _NOT_JUPYTERS + route_pattern()), RootApiHandler, options))
    serverapp.web_app.add_handlers(".*$", handlers)
    serverapp.log.info(f"lmbench API at {base}/")
    if root_routes and api_key:
        serverapp.log.info(f"lmbench API also at {base_url} (/api/generate, /v1/..., /health), with the API key")
    elif root_routes:
        serverapp.log.warning(
            f"lmbench API also at {base_url} (/api/generate, /v1/..., /health) WITHOUT a key: anyone who reaches "
            "this port can use it; publish the port on 127.0.0.1 only, or set an API key (LMBENCH_API_KEY)"
        )
