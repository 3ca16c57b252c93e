"""Check a GGUF file in Python before llama.cpp sees it, so bad files raise instead of crashing.

The header is walked once with ``struct`` (the type codes and block sizes come from the ``gguf``
package): scalar and string values are kept, arrays only counted, so a 49,152-token vocabulary
costs milliseconds where ``gguf.GGUFReader``, which builds an object per element, takes seconds.
"""

from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gguf.constants import GGML_QUANT_SIZES, GGUF_DEFAULT_ALIGNMENT, GGMLQuantizationType, GGUFValueType

from .errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)

_SCALAR = {
    GGUFValueType.UINT8: "<B",
    GGUFValueType.INT8: "<b",
    GGUFValueType.UINT16: "<H",
    GGUFValueType.INT16: "<h",
    GGUFValueType.UINT32: "<I",
    GGUFValueType.INT32: "<i",
    GGUFValueType.FLOAT32: "<f",
    GGUFValueType.BOOL: "<?",
    GGUFValueType.UINT64: "<Q",
    GGUFValueType.INT64: "<q",
    GGUFValueType.FLOAT64: "<d",
}


@dataclass(frozen=True)
class Tensor:
    """One tensor's entry in the header."""

    name: str
    n_elements: int
    type: str
    n_bytes: int
    offset: int  # from the start of the file


@dataclass(frozen=True)
class Header:
    """What the header of a GGUF file says: its metadata (arrays as their lengths) and its tensors."""

    version: int
    fields: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[Tensor]

    def field(self, key: str) -> Any:
        """A metadata value, or None when absent."""
        return self.fields.get(key)


class _Cursor:
    """Reads little-endian values from a buffer, failing cleanly past its end."""

    def __init__(self, data: mmap.mmap) -> None:
        self.data, self.at = data, 0

    def unpack(self, fmt: str) -> Any:
        value = struct.unpack_from(fmt, self.data, self.at)[0]
        self.at += struct.calcsize(fmt)
        return value

    def string(self) -> str:
        n = self.unpack("<Q")
        if self.at + n > len(self.data):
            raise ValueError(f"a string of {n} bytes runs past the end of the file")
        raw = self.data[self.at : self.at + n]
        self.at += n
        return raw.decode("utf-8", errors="replace")

    def value(self, kind: int) -> Any:
        if kind == GGUFValueType.STRING:
            return self.string()
        fmt = _SCALAR.get(GGUFValueType(kind))
        if fmt is None:
            raise ValueError(f"unknown value type {kind}")
        return self.unpack(fmt)

    def skip_array(self) -> int:
        """Step over an array value; its length."""
        kind, count = self.unpack("<I"), self.unpack("<Q")
        if kind == GGUFValueType.STRING:
            if count * 8 > len(self.data) - self.at:
                raise ValueError(f"an array of {count} strings cannot fit in the file")
            for _ in range(count):
                self.at += 8 + struct.unpack_from("<Q", self.data, self.at)[0]
        elif kind == GGUFValueType.ARRAY:
            for _ in range(count):
                self.skip_array()
        else:
            fmt = _SCALAR.get(GGUFValueType(kind))
            if fmt is None:
                raise ValueError(f"unknown array element type {kind}")
            self.at += count * struct.calcsize(fmt)
        if self.at > len(self.data):
            raise ValueError("an array runs past the end of the file")
        return int(count)


def _parse(data: mmap.mmap) -> Header:
    cur = _Cursor(data)
    cur.at = 4
    version = cur.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"GGUF version {version} is not supported (supported: {SUPPORTED_VERSIONS})")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    fields: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    for _ in range(n_kv):
        key, kind = cur.string(), cur.unpack("<I")
        if kind == GGUFValueType.ARRAY:
            arrays[key] = cur.skip_array()
        else:
            fields[key] = cur.value(kind)
    if n_tensors * 24 > len(data) - cur.at:
        raise ValueError(f"{n_tensors} tensor entries cannot fit in the file")
    entries = []
    for _ in range(n_tensors):
        name, n_dims = cur.string(), cur.unpack("<I")
        if n_dims > 8:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        n_elements = 1
        for _ in range(n_dims):
            n_elements *= cur.unpack("<Q")
        entries.append((name, n_elements, cur.unpack("<I"), cur.unpack("<Q")))
    alignment = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment is {alignment!r}, not a power of two")
    start = -(-cur.at // alignment) * alignment
    tensors = []
    for name, n_elements, kind, offset in entries:
        try:
            quant = GGMLQuantizationType(kind)
        except ValueError:
            raise ValueError(f"tensor {name!r} has unknown type {kind}") from None
        block, type_size = GGML_QUANT_SIZES[quant]
        tensors.append(Tensor(name, n_elements, quant.name, n_elements * type_size // block, start + offset))
    return Header(version, fields, arrays, tensors)


def read(path: Path) -> Header:
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
            if magic != GGUF_MAGIC:
                raise ModelLoadError(path, f"not a GGUF file (starts with {magic!r}, expected {GGUF_MAGIC!r})")
            with mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
                header = _parse(data)
    except OSError as exc:
        raise ModelLoadError(path, f"cannot read the file: {exc.strerror or exc}") from None
    except (ValueError, struct.error, OverflowError, KeyError) as exc:
        raise ModelLoadError(path, f"corrupt or truncated GGUF header ({exc})") from None
    if not header.tensors:
        raise ModelLoadError(path, "the GGUF file holds no tensors")
    end = max(t.offset + t.n_bytes for t in header.tensors)
    if end > size:
        raise ModelLoadError(path, f"truncated: tensor data needs {end} bytes but the file has {size}")
    return header


def summary(header: Header) -> dict[str, Any]:
    """The facts about a model that matter when choosing or comparing one."""
    arch = header.field("general.architecture") or "unknown"
    file_type = header.field("general.file_type")
    types = "/".join(sorted({t.type for t in header.tensors}))
    return {
        "name": header.field("general.name"),
        "architecture": arch,
        "parameters": sum(t.n_elements for t in header.tensors),
        "quantization": _FILE_TYPES.get(file_type, types) if file_type is not None else types,
        "context_length": header.field(f"{arch}.context_length"),
        "layers": header.field(f"{arch}.block_count"),
        "embedding_length": header.field(f"{arch}.embedding_length"),
        "vocab_size": header.array_lengths.get("tokenizer.ggml.tokens"),
        "has_chat_template": header.field("tokenizer.chat_template") is not None,
        "chat_template": header.field("tokenizer.chat_template"),
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
