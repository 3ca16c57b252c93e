"""Check a GGUF file in Python before llama.cpp sees it, so bad files raise instead of crashing.

The header is walked once with ``struct`` (the type codes and block sizes come from the ``gguf``
package): scalar and string values are kept, arrays only counted, so a 49,152-token vocabulary
costs milliseconds where ``gguf.GGUFReader``, which builds an object per element, takes seconds.
"""

from __future__ import annotations

import math
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
    dims: tuple[int, ...]  # llama.cpp's order: the first is the row length
    type: str
    n_bytes: int
    offset: int  # from the start of the file

    @property
    def n_elements(self) -> int:
        return math.prod(self.dims)


@dataclass(frozen=True)
class Header:
    """What the header of a GGUF file says: its metadata (arrays as their lengths) and its tensors."""

    version: int
    fields: dict[str, Any]
    array_lengths: dict[str, int]
    tensors: list[Tensor]
    empty_tokens: int  # entries of tokenizer.ggml.tokens that are empty strings

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

    def skip_array(self) -> tuple[int, int]:
        """Step over an array value; its length and how many of its strings are empty."""
        kind, count = self.unpack("<I"), self.unpack("<Q")
        empty = 0
        if kind == GGUFValueType.STRING:
            if count * 8 > len(self.data) - self.at:
                raise ValueError(f"an array of {count} strings cannot fit in the file")
            for _ in range(count):
                length = struct.unpack_from("<Q", self.data, self.at)[0]
                empty += length == 0
                self.at += 8 + length
        elif kind == GGUFValueType.ARRAY:
            for _ in range(count):
                empty += self.skip_array()[1]
        else:
            fmt = _SCALAR.get(GGUFValueType(kind))
            if fmt is None:
                raise ValueError(f"unknown array element type {kind}")
            self.at += count * struct.calcsize(fmt)
        if self.at > len(self.data):
            raise ValueError("an array runs past the end of the file")
        return int(count), empty


def _parse(data: mmap.mmap) -> Header:
    cur = _Cursor(data)
    cur.at = 4
    version = cur.unpack("<I")
    if version not in SUPPORTED_VERSIONS:
        raise ValueError(f"GGUF version {version} is not supported (supported: {SUPPORTED_VERSIONS})")
    n_tensors, n_kv = cur.unpack("<Q"), cur.unpack("<Q")
    fields: dict[str, Any] = {}
    arrays: dict[str, int] = {}
    empty_tokens = 0
    for _ in range(n_kv):
        key, kind = cur.string(), cur.unpack("<I")
        if kind == GGUFValueType.ARRAY:
            arrays[key], empty = cur.skip_array()
            empty_tokens += empty if key == "tokenizer.ggml.tokens" else 0
        else:
            fields[key] = cur.value(kind)
    if n_tensors * 24 > len(data) - cur.at:
        raise ValueError(f"{n_tensors} tensor entries cannot fit in the file")
    entries = []
    for _ in range(n_tensors):
        name, n_dims = cur.string(), cur.unpack("<I")
        if n_dims > 8:
            raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
        dims = tuple(cur.unpack("<Q") for _ in range(n_dims))
        entries.append((name, dims, cur.unpack("<I"), cur.unpack("<Q")))
    alignment = fields.get("general.alignment", GGUF_DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"general.alignment is {alignment!r}, not a power of two")
    start = -(-cur.at // alignment) * alignment
    tensors = []
    for name, dims, kind, offset in entries:
        try:
            quant = GGMLQuantizationType(kind)
        except ValueError:
            raise ValueError(f"tensor {name!r} has unknown type {kind}") from None
        block, type_size = GGML_QUANT_SIZES[quant]
        if dims and dims[0] % block:
            raise ValueError(f"tensor {name!r} rows of {dims[0]} do not divide into {quant.name} blocks of {block}")
        n_bytes = math.prod(dims) * type_size // block
        tensors.append(Tensor(name, dims, quant.name, n_bytes, start + offset))
    return Header(version, fields, arrays, tensors, empty_tokens)


# Tokenizer models llama.cpp knows (llama-vocab.cpp); another name makes it abort.
KNOWN_TOKENIZERS = ("llama", "gpt2", "bert", "t5", "rwkv", "plamo2", "no_vocab", "none")


def _consistency(header: Header) -> str | None:
    """What in a well-formed header would make llama.cpp abort, or None.

    The metadata must agree with the tensors (layer count, vocabulary and width), numbers llama.cpp
    divides by or takes logarithms of must be sane, and the tokenizer must be one it knows.
    """
    arch = header.field("general.architecture")
    if not isinstance(arch, str) or not arch:
        return "general.architecture is missing"
    if header.field("general.type") == "adapter":
        # A LoRA adapter holds no model metadata; llama.cpp checks its tensors against the model's (and refuses).
        return None
    tokenizer = header.field("tokenizer.ggml.model")
    if tokenizer is not None and tokenizer not in KNOWN_TOKENIZERS:
        return f"unknown tokenizer model {tokenizer!r} (llama.cpp knows: {', '.join(KNOWN_TOKENIZERS)})"
    if header.empty_tokens:
        return f"the vocabulary holds {header.empty_tokens} empty token strings"
    layers = header.field(f"{arch}.block_count")
    blocks = {
        int(t.name.split(".")[1])
        for t in header.tensors
        if t.name.startswith("blk.") and t.name.split(".")[1].isdigit()
    }
    if blocks and (not isinstance(layers, int) or layers != max(blocks) + 1):
        return f"{arch}.block_count is {layers!r} but the file has tensors for {max(blocks) + 1} layers"
    for key, value in header.fields.items():
        if key.endswith(("_epsilon", "_eps")) and (not isinstance(value, float) or not 0 < value < 1):
            return f"{key} is {value!r}; a norm epsilon must be a small positive number"
    for key in (f"{arch}.embedding_length", f"{arch}.context_length", f"{arch}.attention.head_count"):
        value = header.field(key)
        if value is not None and (not isinstance(value, int) or value <= 0):
            return f"{key} is {value!r}; it must be a positive whole number"
    n_vocab = header.array_lengths.get("tokenizer.ggml.tokens")
    embedding = next((t for t in header.tensors if t.name == "token_embd.weight"), None)
    if embedding is not None and len(embedding.dims) == 2:
        width, rows = embedding.dims
        if n_vocab is not None and rows != n_vocab:
            return f"token_embd.weight has {rows} rows but the vocabulary has {n_vocab} tokens"
        if header.field(f"{arch}.embedding_length") not in (None, width):
            return f"{arch}.embedding_length does not match token_embd.weight's width {width}"
    return None


# Why a symbolic link cannot be opened as a model file.
BROKEN_LINK = "a symbolic link that leads to no file (its target is missing, or links loop)"


def read(path: Path) -> Header:
    """Parse the header of ``path`` and check that every tensor's data lies inside the file."""
    if not path.exists():
        if path.is_symlink():
            raise ModelLoadError(path, BROKEN_LINK)
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
    problem = _consistency(header)
    if problem:
        raise ModelLoadError(path, f"inconsistent model file: {problem}")
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
