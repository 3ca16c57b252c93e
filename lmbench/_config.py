"""Where lmbench keeps its files: ``$LMBENCH_HOME`` (default ``~/.lmbench``)."""

from __future__ import annotations

import errno
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


def unwritable(exc: OSError) -> str:
    """Why writing into a folder failed, in plain words (a full disk, a read-only folder, ...)."""
    reasons = {
        errno.ENOSPC: "the disk is full",
        errno.EDQUOT: "the disk quota is used up",
        errno.EROFS: "the folder is on a read-only file system",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied",
    }
    return reasons.get(exc.errno or 0) or exc.strerror or str(exc)
