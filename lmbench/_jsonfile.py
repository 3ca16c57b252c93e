"""lmbench's own JSON files in ``$LMBENCH_HOME``: written atomically, one policy when one is damaged."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from ._config import unwritable
from .errors import LmbenchError, StoreError


def read(path: Path, *, cache: bool = False) -> dict[str, Any]:
    """The mapping stored in ``path`` (empty when the file does not exist).

    A damaged cache is treated as empty (it is rebuilt); a damaged file of the user's own
    (aliases, presets) raises ``LmbenchError`` naming the file, so nothing is silently lost.
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        if cache:
            return {}
        raise LmbenchError(f"{path} is damaged ({exc}); fix or remove it") from None
    if not isinstance(data, dict):
        if cache:
            return {}
        raise LmbenchError(f"{path} is damaged (it must hold a JSON object); fix or remove it")
    return data


def write(path: Path, data: dict[str, Any]) -> None:
    """Replace ``path`` with ``data`` in one step: readers see the old file or the new one, never half of one.

    A folder that cannot be written (read-only, a full disk) raises ``StoreError`` naming the folder and why.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise StoreError(f"cannot write {path.name} in {path.parent}: {unwritable(exc)}") from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise StoreError(f"cannot write {path.name} in {path.parent}: {unwritable(exc)}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
