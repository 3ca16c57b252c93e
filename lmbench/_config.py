"""Where lmbench keeps its files: ``$LMBENCH_HOME`` (default ``~/.lmbench``)."""

from __future__ import annotations

import os
from pathlib import Path


def home() -> Path:
    """The lmbench home folder, created on first use."""
    path = Path(os.environ.get("LMBENCH_HOME") or Path.home() / ".lmbench").expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path
