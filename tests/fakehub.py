"""A local stand-in for the Hugging Face hub's file endpoints (``HF_ENDPOINT`` points huggingface_hub at it).

Serves ``HEAD``/``GET /{repo_id}/resolve/{revision}/{filename}`` with the headers
huggingface_hub reads (commit, ETag, size) and byte ranges, so downloads can resume. A file
can be set to break off its first download half-way, to test resuming.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    files: dict[tuple[str, str], bytes] = field(default_factory=dict)
    interrupt_once: set[tuple[str, str]] = field(default_factory=set)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)
    url: str = ""

    def add(self, repo_id: str, filename: str, data: bytes, *, interrupt_once: bool = False) -> None:
        self.files[(repo_id, filename)] = data
        if interrupt_once:
            self.interrupt_once.add((repo_id, filename))


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def _file(self) -> tuple[tuple[str, str], bytes] | None:
            match = re.fullmatch(r"/(.+?/.+?)/resolve/([^/]+)/(.+)", self.path.split("?")[0])
            if not match:
                return None
            key = (match[1], match[3])
            return (key, hub.files[key]) if key in hub.files else None

        def _headers(self, status: int, data: bytes, length: int, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("Content-Length", str(length))
            self.send_header("Accept-Ranges", "bytes")
            for name, value in (extra or {}).items():
                self.send_header(name, value)
            self.end_headers()

        def do_HEAD(self) -> None:
            hub.requests.append(("HEAD", self.path, None))
            found = self._file()
            if found is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self._headers(200, found[1], len(found[1]))

        def do_GET(self) -> None:
            byte_range = self.headers.get("Range")
            hub.requests.append(("GET", self.path, byte_range))
            found = self._file()
            if found is None:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            key, data = found
            start = int(re.match(r"bytes=(\d+)-", byte_range)[1]) if byte_range else 0
            body = data[start:]
            status = 206 if start else 200
            extra = {"Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}"} if start else {}
            self._headers(status, data, len(body), extra)
            if key in hub.interrupt_once:
                hub.interrupt_once.discard(key)
                self.wfile.write(body[: len(body) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(body)

    return Handler


@contextmanager
def serve() -> Iterator[FakeHub]:
    """A running fake hub on 127.0.0.1 (a free port); stops when the block ends."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
