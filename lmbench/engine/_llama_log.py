"""Capture llama.cpp's log lines instead of letting them spill into the notebook.

llama.cpp has one process-wide log callback; lines go to whichever buffer is active in the
current thread (the engine being loaded or used) and always to a short process-wide tail.
"""

from __future__ import annotations

import collections
import ctypes
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import llama_cpp

_LEVELS = {0: "NONE", 1: "DEBUG", 2: "INFO", 3: "WARN", 4: "ERROR"}

recent: collections.deque[str] = collections.deque(maxlen=500)
_local = threading.local()


def _emit(line: str) -> None:
    recent.append(line)
    sink = getattr(_local, "sink", None)
    if sink is not None:
        sink.append(line)


@llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]  # a ctypes callback type
def _callback(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
    pending: list[str] = _local.__dict__.setdefault("pending", [])
    if level != 5:
        _local.level = _LEVELS.get(level, str(level))
    pending.append(text.decode("utf-8", errors="replace"))
    joined = "".join(pending)
    if "\n" in joined:
        *lines, rest = joined.split("\n")
        pending[:] = [rest] if rest else []
        for line in lines:
            if line.strip():
                _emit(f"[{getattr(_local, 'level', 'INFO')}] {line}")


def install() -> None:
    """Route llama.cpp's logging through lmbench (idempotent)."""
    llama_cpp.llama_log_set(_callback, ctypes.c_void_p(0))


@contextmanager
def capture(sink: collections.deque[str]) -> Iterator[None]:
    """Send llama.cpp log lines emitted by this thread into ``sink`` while active."""
    previous = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield
    finally:
        _local.sink = previous
