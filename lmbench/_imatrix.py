"""Importance matrices made by lmbench's engine, as llama.cpp's ``llama-imatrix`` makes them.

For every weight matrix of the model's blocks, the sum over the evaluated tokens of each input
column's squared activation, and how many tokens were summed (``<weight>.in_sum2`` and
``<weight>.counts`` in a GGUF file, the format ``llama-imatrix`` writes and ``llama-quantize``
reads). The activations are read in a llama.cpp eval callback (``cb_eval``): the scheduler offers
every graph node, the callback asks for the matrix multiplications by a ``blk.`` weight and then
reads their input (``src[1]``) with ``ggml_backend_tensor_get``. That needs ggml's tensor struct,
declared here from ``ggml.h``; its size is checked against ggml's own before anything is read.
"""

from __future__ import annotations

import collections
import ctypes
from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np

from .engine import Engine
from .engine._native import Context
from .errors import GenerationError, ParameterError

# What llama-imatrix skips: batches of fewer tokens than this say little about a weight's inputs.
MIN_TOKENS = 16
_GGML_TYPE_F32 = 0
_GGML_OBJECT_SIZE = 32  # ggml's struct ggml_object, which ggml_tensor_overhead() counts with the tensor


class _Tensor(ctypes.Structure):
    """``struct ggml_tensor`` of ggml.h (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10, GGML_MAX_NAME 64)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
        ("extra", ctypes.c_void_p),
        ("padding", ctypes.c_char * 8),
    ]


def _ggml() -> ctypes.CDLL:
    """ggml's base library as llama-cpp-python ships it (already loaded with llama.cpp), its functions typed."""
    library = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    library.ggml_op_name.argtypes, library.ggml_op_name.restype = [ctypes.c_int], ctypes.c_char_p
    library.ggml_nbytes.argtypes, library.ggml_nbytes.restype = [ctypes.c_void_p], ctypes.c_size_t
    library.ggml_tensor_overhead.argtypes, library.ggml_tensor_overhead.restype = [], ctypes.c_size_t
    library.ggml_backend_tensor_get.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_size_t]
    library.ggml_backend_tensor_get.restype = None
    if library.ggml_tensor_overhead() != _GGML_OBJECT_SIZE + ctypes.sizeof(_Tensor):
        raise GenerationError("this llama.cpp's ggml_tensor is laid out otherwise: make the matrix with llama-imatrix")
    return library


def weight_name(name: bytes) -> str:
    """A weight's name without the backend's ``CPU#...#`` decoration, as llama-imatrix files it."""
    text = name.decode("utf-8", errors="replace")
    return text.split("#")[1] if "#" in text else text


class Collector:
    """Sums of squared inputs and token counts per ``blk.`` weight, filled by the eval callback."""

    def __init__(self) -> None:
        self.ggml = _ggml()
        self.sums: dict[str, np.ndarray] = {}
        self.counts: dict[str, int] = {}
        self.error: BaseException | None = None
        self._ops: dict[int, bytes] = {}
        self.callback = llama_cpp.ggml_backend_sched_eval_callback(self._observe)

    def _op(self, op: int) -> bytes:
        if op not in self._ops:
            self._ops[op] = self.ggml.ggml_op_name(op) or b""
        return self._ops[op]

    def _observe(self, pointer: int, ask: bool, data: Any) -> bool:
        try:
            tensor = _Tensor.from_address(pointer)
            if self._op(tensor.op) not in (b"MUL_MAT", b"MUL_MAT_ID") or not tensor.src[0] or not tensor.src[1]:
                return not ask  # not asked for; once computed, carry on
            weight, inputs = _Tensor.from_address(tensor.src[0]), _Tensor.from_address(tensor.src[1])
            name = weight_name(weight.name)
            if ask:
                wanted = inputs.ne[1] >= MIN_TOKENS and inputs.type == _GGML_TYPE_F32 and name.startswith("blk.")
                return bool(wanted)
            self._collect(name, weight, inputs, tensor.src[1], self._op(tensor.op))
        except BaseException as exc:  # noqa: BLE001 - raised in C's stack; kept and raised after the decode
            self.error = exc
        return True

    def _collect(self, name: str, weight: _Tensor, inputs: _Tensor, address: int, op: bytes) -> None:
        if op == b"MUL_MAT_ID" or weight.ne[2] * weight.ne[3] != 1:
            raise ParameterError(
                f"{name} is a stack of expert matrices: make this model's matrix with llama.cpp's llama-imatrix",
                name="model",
            )
        size = self.ggml.ggml_nbytes(address)
        raw = np.empty(size, dtype=np.uint8)
        self.ggml.ggml_backend_tensor_get(address, raw.ctypes.data, 0, size)
        shape = tuple(int(n) for n in reversed(inputs.ne))
        strides = tuple(int(n) for n in reversed(inputs.nb))
        rows = np.lib.stride_tricks.as_strided(raw.view(np.float32), shape=shape, strides=strides)
        squares = np.square(rows.reshape(-1, shape[-1]), dtype=np.float64)
        self.sums[name] = self.sums.get(name, 0.0) + squares.sum(axis=0)
        self.counts[name] = self.counts.get(name, 0) + squares.shape[0]


def compute(engine: Engine, texts: list[str], chunk: int) -> tuple[Collector, int]:
    """Run ``texts`` (their tokens one after another, in chunks of ``chunk``) through a context that
    collects every block weight's inputs; the collector and how many chunks went in."""
    tokens = [token for text in texts for token in engine.tokenize(text)]
    chunks = [tokens[at : at + chunk] for at in range(0, len(tokens), chunk)]
    chunks = [piece for piece in chunks if len(piece) >= MIN_TOKENS]
    if not chunks:
        raise ParameterError(
            f"the texts are {len(tokens)} tokens: an importance matrix needs at least {MIN_TOKENS}", name="texts"
        )
    collector = Collector()
    with engine.lock:
        context = Context(
            engine.model.pointer,
            slots=1,
            per_slot=chunk,
            n_batch=chunk,
            threads=engine.threads,
            logs=collections.deque(maxlen=200),
            observe=collector.callback,
        )
        try:
            for piece in chunks:
                context.clear()
                # Every position an output, as llama-imatrix asks: else llama.cpp keeps only the rows it
                # needs after the last layer's attention, and that layer's feed-forward sees one token.
                context.decode([(token, pos, 0, True) for pos, token in enumerate(piece)])
                if collector.error is not None:
                    raise collector.error
        finally:
            context.close()
    return collector, len(chunks)


def write(path: Path, collector: Collector, *, datasets: list[str], chunks: int, chunk: int) -> Path:
    """The collected sums as llama-imatrix's GGUF file (``general.type = imatrix``), one entry per weight."""
    writer = gguf.GGUFWriter(path, "")
    writer.add_string("general.type", "imatrix")
    writer.add_array("imatrix.datasets", datasets)
    writer.add_uint32("imatrix.chunk_count", chunks)
    writer.add_uint32("imatrix.chunk_size", chunk)
    for name in sorted(collector.sums):
        writer.add_tensor(f"{name}.in_sum2", collector.sums[name].astype(np.float32)[None, :])
        writer.add_tensor(f"{name}.counts", np.array([[collector.counts[name]]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path
