"""Model manager: find GGUF files, resolve aliases, read metadata, download from the hub."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import _gguf
from ._config import home
from .errors import ModelLoadError, ModelNotFoundError

DEFAULT_MODEL = "stories260K"


@dataclass(frozen=True)
class CatalogEntry:
    """A model lmbench knows how to fetch by name."""

    repo_id: str
    filename: str
    sha256: str | None = None


_builtin: dict[str, CatalogEntry] = {}


def _aliases_file() -> Path:
    return home() / "aliases.json"


def _saved_aliases() -> dict[str, CatalogEntry]:
    try:
        saved = json.loads(_aliases_file().read_text())
    except (OSError, ValueError):
        return {}
    return {name: CatalogEntry(**entry) for name, entry in saved.items()}


def register_alias(alias: str, repo_id: str, filename: str, sha256: str | None = None, *, save: bool = True) -> None:
    """Make ``alias`` name a file on the Hugging Face hub (downloaded on first use).

    Saved aliases live in ``$LMBENCH_HOME/aliases.json``; ``save=False`` registers for this
    process only (how the built-in catalogue is registered).
    """
    entry = CatalogEntry(repo_id, filename, sha256)
    if not save:
        _builtin[alias] = entry
        return
    saved = {name: e.__dict__ for name, e in _saved_aliases().items()}
    saved[alias] = entry.__dict__
    tmp = _aliases_file().with_suffix(f".{os.getpid()}.tmp")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    tmp.write_text(json.dumps(saved, indent=2, sort_keys=True))
    tmp.replace(_aliases_file())


register_alias(
    "stories260K",
    "ggml-org/tiny-llamas",
    "stories260K.gguf",
    "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d",
    save=False,
)


def catalog() -> dict[str, CatalogEntry]:
    """The known aliases: the built-in catalogue, then the user's saved ones."""
    return {**_builtin, **_saved_aliases()}


def search_dirs() -> list[Path]:
    """Folders searched for GGUF files, in order; only those that exist."""
    candidates = [home() / "models"]
    candidates += [Path(p).expanduser() for p in os.environ.get("LMBENCH_MODEL_PATH", "").split(os.pathsep) if p]
    candidates += [Path.home() / ".lmstudio" / "models", Path.home() / ".cache" / "lm-studio" / "models"]
    candidates.append(_hub_cache())
    seen: dict[Path, None] = {}
    for c in candidates:
        if c.is_dir():
            seen.setdefault(c.resolve(), None)
    return [*seen]


def _hub_cache() -> Path:
    from huggingface_hub.constants import HF_HUB_CACHE

    return Path(os.environ.get("HF_HUB_CACHE") or HF_HUB_CACHE)


def _find_local(filename: str) -> Path | None:
    for folder in search_dirs():
        for path in sorted(folder.rglob(filename)):
            if path.is_file():
                return path
    return None


def _absolute(path: Path) -> Path:
    """An absolute path that keeps a symlink's own name (the hub cache links file names to blobs)."""
    return Path(os.path.abspath(path))


def resolve(model: str | os.PathLike[str] | None = None) -> Path:
    """Turn a path, an alias, a bare file name or ``None`` into an existing model path.

    ``None`` means ``$LMBENCH_MODEL``, then the default alias. An alias is looked for in the
    model folders first and downloaded only when absent.
    """
    if model is None:
        model = os.environ.get("LMBENCH_MODEL") or DEFAULT_MODEL
    text = os.fspath(model)
    path = Path(text).expanduser()
    if path.exists() or path.suffix.lower() == ".gguf" or os.sep in text:
        return _absolute(path)
    known = catalog()
    entry = known.get(text)
    found = _find_local(entry.filename if entry else f"{text}.gguf")
    if found is not None:
        return _absolute(found)
    if entry is not None:
        return pull(entry.repo_id, entry.filename, alias=text)
    raise ModelNotFoundError(
        text,
        "not a file and not a known alias; give a path to a .gguf file, set LMBENCH_MODEL, "
        f"or use one of: {', '.join(sorted(known))}",
    )


_hash_lock = threading.Lock()


def sha256(path: Path) -> str:
    """The file's SHA-256, computed once per file version and cached in ``$LMBENCH_HOME``."""
    stat = path.stat()
    key = f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = home() / "sha256.json"
    with _hash_lock:
        try:
            cache: dict[str, str] = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            cache = {}
        if key in cache:
            return cache[key]
        digest = hashlib.sha256()
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        cache[key] = digest.hexdigest()
        tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache))
        tmp.replace(cache_file)
        return cache[key]


def info(model: str | os.PathLike[str]) -> pd.Series:
    """GGUF metadata of a model, read without loading it into llama.cpp."""
    path = resolve(model)
    facts = {"path": str(path), "size": path.stat().st_size, **_gguf.summary(_gguf.read(path))}
    return pd.Series(facts, name=path.name)


def list() -> pd.DataFrame:  # noqa: A001 - the public name is lmbench.models.list()
    """Every GGUF file in the model folders, with its main metadata."""
    rows: dict[Path, dict[str, Any]] = {}
    aliases = {e.filename: a for a, e in catalog().items()}
    for folder in search_dirs():
        for path in sorted(folder.rglob("*.gguf")):
            real = path.resolve()
            if real in rows or not real.is_file():
                continue
            try:
                meta = _gguf.summary(_gguf.read(real))
            except ModelLoadError as exc:
                meta = {"error": exc.reason}
            rows[real] = {
                "alias": aliases.get(path.name, path.stem),
                "path": str(path),
                "size": real.stat().st_size,
                **meta,
            }
    columns = [
        "alias",
        "path",
        "size",
        "architecture",
        "parameters",
        "quantization",
        "context_length",
        "has_chat_template",
        "layers",
    ]
    frame = pd.DataFrame([*rows.values()])
    return frame.reindex(columns=[*columns, *(c for c in frame.columns if c not in columns)])


def _resolvable(url: str) -> bool:
    """Whether the host of ``url`` resolves; a proxy, if one is set, is trusted to reach it.

    Checked before downloading because huggingface_hub retries an unreachable host for ~20 s.
    """
    if any(os.environ.get(name) for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY")):
        return True
    try:
        socket.getaddrinfo(urllib.parse.urlsplit(url).hostname, None)
    except (OSError, UnicodeError):
        return False
    return True


def pull(repo_id: str, filename: str, *, alias: str | None = None, revision: str | None = None) -> Path:
    """Download a GGUF file from the Hugging Face hub into its cache (resumable), verify it, return its path.

    The file is registered under ``alias`` (default: the file name without ``.gguf``) so that
    ``lmbench.load(alias)`` finds it; a catalogue alias's SHA-256 is checked. ``HF_ENDPOINT``
    selects another hub (a mirror, or a local test server).
    """
    from huggingface_hub import constants, hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    alias = alias or Path(filename).stem
    endpoint = os.environ.get("HF_ENDPOINT") or constants.ENDPOINT
    online = _resolvable(endpoint)
    try:
        local = Path(
            hf_hub_download(
                repo_id,
                filename,
                revision=revision,
                endpoint=endpoint,
                cache_dir=_hub_cache(),
                local_files_only=not online,  # offline: the cache or a clear error, at once
            )
        )
    except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as exc:
        why = str(exc) if online else f"cannot reach {endpoint} and the file is not in the Hugging Face cache"
        raise ModelNotFoundError(
            f"{repo_id}/{filename}",
            f"download failed: {why} (to use a copy you have: put {filename} into {home() / 'models'}, "
            "add its folder to LMBENCH_MODEL_PATH, or set LMBENCH_MODEL to the .gguf file)",
        ) from None
    known = catalog()
    expected = known[alias].sha256 if alias in known else None
    try:
        _gguf.read(local)
        if expected and sha256(local) != expected:
            raise ModelLoadError(local, f"downloaded file's sha256 does not match the catalogue ({expected})")
    except ModelLoadError:
        blob = local.resolve()  # a bad download must not stay in the cache, where it would be found again
        local.unlink(missing_ok=True)
        blob.unlink(missing_ok=True)
        raise
    if alias not in known:
        register_alias(alias, repo_id, filename, sha256(local))
    return _absolute(local)
