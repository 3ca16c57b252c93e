"""Where lmbench keeps its files: ``$LMBENCH_HOME`` (default ``~/.lmbench``)."""

from __future__ import annotations

import os
from pathlib import Path

from .errors import StoreError


def home() -> Path:
    """The lmbench home folder, created on first use."""
    path = Path(os.environ.get("LMBENCH_HOME") or Path.home() / ".lmbench").expanduser()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise StoreError(f"lmbench's home {path} (LMBENCH_HOME) is a file, not a folder") from None
    except OSError as exc:
        raise StoreError(f"cannot create lmbench's home {path} (LMBENCH_HOME): {exc.strerror or exc}") from None
    return path
