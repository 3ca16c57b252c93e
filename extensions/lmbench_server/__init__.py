"""Jupyter server extension: the lmbench HTTP API inside a running Jupyter server, under ``/lmbench/``.

Enabled automatically when lmbench is installed (``etc/jupyter/jupyter_server_config.d``);
protected by Jupyter's own token authentication. Routes, request and answer formats are those of
``lmbench serve`` (see ``lmbench.serve._service``); the default model is ``$LMBENCH_MODEL`` or lmbench's
default, resolved on the first request so that starting Jupyter never loads or downloads a model.
Models run in supervised worker processes (``lmbench.serve._supervisor``): a model file that crashes
llama.cpp fails its request, never the Jupyter server.
lmbench itself is imported when the extension loads, not when Jupyter lists its extensions.
"""

from __future__ import annotations

import os
import threading
from typing import Any


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "lmbench_server"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from concurrent.futures import ThreadPoolExecutor

    import tornado.web
    from jupyter_server.base.handlers import APIHandler
    from jupyter_server.utils import url_path_join

    from lmbench.serve._routes import route_pattern
    from lmbench.serve._server import WORKERS, ApiRoutes
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

    lock = threading.Lock()
    backends: list[Supervisor] = []
    # c.LmbenchServer.parallel = 8 (any setting of `lmbench serve`) in jupyter_server_config.py, checked now.
    # Jupyter's token guards the routes, so an API key or Host and Origin lists do not apply here.
    settings = from_config(serverapp.config.get("LmbenchServer", {}))

    def get_backend() -> Supervisor:
        with lock:
            if not backends:
                model = settings.model or os.environ.get("LMBENCH_MODEL") or None
                backends.append(Supervisor(settings.model_copy(update={"model": model})))
            return backends[0]

    executor = ThreadPoolExecutor(WORKERS, thread_name_prefix="lmbench-api")
    base = url_path_join(serverapp.web_app.settings["base_url"], "lmbench")
    serverapp.web_app.add_handlers(
        ".*$",
        [(url_path_join(base, route_pattern()), LmbenchApiHandler, {"get_backend": get_backend, "executor": executor})],
    )
    serverapp.log.info(f"lmbench API at {base}/")
