"""Check a GGUF file in Python before llama.cpp sees it, so bad files raise instead of crashing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from gguf import GGUFReader

from .errors import ModelLoadError

GGUF_MAGIC = b"GGUF"


def read(path: Path) -> GGUFReader:
    """Parse the header of ``path`` and check that every tensor's data lies inside the file."""
    if not path.exists():
        raise ModelLoadError(path, "no such file")
    if not path.is_file():
        raise ModelLoadError(path, "not a file (is it a directory?)")
    size = path.stat().st_size
    if size == 0:
        raise ModelLoadError(path, "the file is empty")
    try:
        with path.open("rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read the file: {exc.strerror or exc}") from None
    if magic != GGUF_MAGIC:
        raise ModelLoadError(path, f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
    try:
        reader = GGUFReader(path)
    except Exception as exc:  # noqa: BLE001 - any parse failure means a corrupt header
        raise ModelLoadError(path, f"corrupt or truncated GGUF header ({exc})") from None
    if not reader.tensors:
        raise ModelLoadError(path, "the GGUF file holds no tensors")
    end = max(t.data_offset + t.n_bytes for t in reader.tensors)
    if end > size:
        raise ModelLoadError(path, f"truncated: tensor data needs {end} bytes but the file has {size}")
    return reader


def field(reader: GGUFReader, key: str) -> Any:
    """A metadata value as a plain Python value, or None when absent."""
    f = reader.get_field(key)
    if f is None:
        return None
    value = f.contents()
    return value.item() if isinstance(value, np.generic) else value


def summary(reader: GGUFReader) -> dict[str, Any]:
    """The facts about a model that matter when choosing or comparing one."""
    arch = field(reader, "general.architecture") or "unknown"
    file_type = field(reader, "general.file_type")
    types = sorted({t.tensor_type.name for t in reader.tensors})
    return {
        "name": field(reader, "general.name"),
        "architecture": arch,
        "parameters": int(sum(t.n_elements for t in reader.tensors)),
        "quantization": _FILE_TYPES.get(file_type, "/".join(types)) if file_type is not None else "/".join(types),
        "context_length": field(reader, f"{arch}.context_length"),
        "layers": field(reader, f"{arch}.block_count"),
        "embedding_length": field(reader, f"{arch}.embedding_length"),
        "vocab_size": len(reader.get_field("tokenizer.ggml.tokens").data)
        if reader.get_field("tokenizer.ggml.tokens")
        else None,
        "has_chat_template": reader.get_field("tokenizer.chat_template") is not None,
        "chat_template": field(reader, "tokenizer.chat_template"),
    }


def readable_count(n: int | None) -> str:
    """A parameter count as people write it: 135M, 1.7B, 260K."""
    if n is None:
        return "?"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


# llama.cpp's LLAMA_FTYPE values for the common file types.
_FILE_TYPES = {
    0: "F32",
    1: "F16",
    2: "Q4_0",
    3: "Q4_1",
    7: "Q8_0",
    8: "Q5_0",
    9: "Q5_1",
    10: "Q2_K",
    11: "Q3_K_S",
    12: "Q3_K_M",
    13: "Q3_K_L",
    14: "Q4_K_S",
    15: "Q4_K_M",
    16: "Q5_K_S",
    17: "Q5_K_M",
    18: "Q6_K",
    32: "BF16",
}
