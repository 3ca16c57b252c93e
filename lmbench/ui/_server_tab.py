"""The Server tab: the local HTTP API started from the panel, its examples and its request log."""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as w

from ..errors import LmbenchError
from ..serve._server import Server
from . import _html as view
from ._parts import Host, button, row


class ServerTab:
    """The local API served from the panel (as LM Studio's Developer tab does): port, key, URL, request log."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.server: Server | None = None
        self.port = w.BoundedIntText(8080, min=0, max=65535, description=t("port"), tooltip=t("0 picks a free port"))
        self.key = w.Password(placeholder=t("API key (optional)"), layout=w.Layout(width="16em"))
        self.button = button(t("Start server"), "success", t("Serve the API on 127.0.0.1"), "lmbench-serve")
        self.button.layout.width = "auto"
        self.button.on_click(lambda _: self.toggle())
        self.info = w.HTML(view.server_info(None, None, t=t))
        self.info.add_class("lmbench-server-info")
        self.log = w.HTML()
        self.log.add_class("lmbench-server-log")
        self._requests: collections.deque[str] = collections.deque(maxlen=200)
        self._handler = _RequestLog(self._on_request)
        self.box = w.VBox([row([self.port, self.key, self.button]), self.info, self.log])

    def toggle(self) -> None:
        """Start the API on 127.0.0.1 with the panel's model and store, or stop it."""
        t = self.host.t
        if self.server is not None:
            self.server.stop()
            logging.getLogger("lmbench.serve").removeHandler(self._handler)
            self.server = None
            self.button.description, self.button.button_style = t("Start server"), "success"
            self.info.value = view.server_info(None, None, t=t)
            self.host.event(t("API server stopped"))
            return
        settings = self.host.server_settings(self.key.value or None)
        try:
            server = Server(settings, port=self.port.value)
            url = server.start()
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.server = server
        api_log = logging.getLogger("lmbench.serve")
        api_log.setLevel(logging.INFO)
        api_log.addHandler(self._handler)
        self.button.description, self.button.button_style = t("Stop server"), "danger"
        self.info.value = view.server_info(
            url, settings.api_key, self._example_request(), server.service.default_id, t=t
        )
        self.host.event(t("API server on {url} (model {model})").format(url=url, model=server.service.default_id))

    def _example_request(self) -> dict[str, Any]:
        """The examples' request: the panel's prompt (or the guides' own) and its main settings."""
        try:
            values = self.host.values()
        except LmbenchError:  # a setting the form refuses: the examples keep the guides' values
            values = {}
        request: dict[str, Any] = {"prompt": self.host.prompt_text().strip() or "Once upon a time"}
        request.update({k: values[k] for k in ("temperature", "top_p", "max_tokens") if k in values})
        return request

    def _on_request(self, line: str) -> None:
        self._requests.append(f"{datetime.now():%H:%M:%S} {line}")
        self.log.value = view.log(self._requests, [])


class _RequestLog(logging.Handler):
    """Hands the API server's request lines to the Server tab."""

    def __init__(self, show: Callable[[str], None]) -> None:
        super().__init__(logging.INFO)
        self._show = show

    def emit(self, record: logging.LogRecord) -> None:
        self._show(record.getMessage())
