"""llama.cpp's native objects that decoding needs, one small class each, freed in ``close()``.

In the manner of llama-cpp-python's ``_internals.py``: a ``Context`` (a KV cache with a stream of
cells per sequence slot) and the ``Batch`` it decodes. Sampler chains live in ``lmbench._sampling``.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

import llama_cpp
import numpy as np

from ..errors import GenerationError
from . import _llama_log

# One decode entry: (token, position, sequence slot, whether its logits are wanted).
Entry = tuple[int, int, int, bool]


def ggml_type_name(value: int) -> str:
    """A ggml tensor type's name as llama.cpp writes it (``f16``, ``q8_0``)."""
    names = {
        getattr(llama_cpp, n): n[len("GGML_TYPE_") :].lower()
        for n in dir(llama_cpp)
        if n.startswith("GGML_TYPE_") and n != "GGML_TYPE_COUNT"
    }
    return names.get(value, str(value))


class Batch:
    """A ``llama_batch`` of up to ``capacity`` tokens, each in one sequence."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.ptr: llama_cpp.llama_batch | None = llama_cpp.llama_batch_init(capacity, 0, 1)

    def fill(self, entries: Sequence[Entry]) -> llama_cpp.llama_batch:
        batch: Any = self.ptr  # ctypes arrays of arrays, which the stubs do not describe
        if batch is None:
            raise GenerationError("the batch was freed")
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        return batch

    def close(self) -> None:
        if self.ptr is not None:
            llama_cpp.llama_batch_free(self.ptr)
            self.ptr = None


class Context:
    """A llama.cpp context on a loaded model: ``slots`` sequences, each with a KV stream of ``per_slot`` cells."""

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        *,
        slots: int,
        per_slot: int,
        n_batch: int,
        n_threads: int,
        logs: collections.deque[str],
    ) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * per_slot
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False  # each sequence attends to its own cells only
        params.no_perf = True
        self.logs = logs
        with _llama_log.capture(logs):
            self.ptr: llama_cpp.llama_context_p | None = llama_cpp.llama_init_from_model(model, params)
        if not self.ptr:
            self.ptr = None
            raise GenerationError(f"llama.cpp could not make a context of {slots} x {per_slot} tokens")
        self.slots, self.per_slot, self.n_batch = slots, per_slot, n_batch
        self.kv_cache_type = ggml_type_name(params.type_k)
        self.memory = llama_cpp.llama_get_memory(self.ptr)
        self.batch = Batch(n_batch)

    @property
    def pointer(self) -> llama_cpp.llama_context_p:
        if self.ptr is None:
            raise GenerationError("the context was freed")
        return self.ptr

    def decode(self, entries: Sequence[Entry]) -> None:
        """One ``llama_decode`` of the entries (at most ``n_batch``)."""
        with _llama_log.capture(self.logs):
            status = llama_cpp.llama_decode(self.ptr, self.batch.fill(entries))
        if status != 0:
            raise GenerationError(f"llama_decode failed with status {status} (batch of {len(entries)} tokens)")

    def logits(self, index: int, n_vocab: int) -> np.ndarray:
        """The logits of the ``index``-th entry of the last decode (a view; copy before the next decode)."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ptr, index), shape=(n_vocab,))

    def copy_sequence(self, source: int, target: int, keep: int) -> None:
        """Make ``target`` hold the first ``keep`` cells of ``source`` (its cells are copied at the next decode)."""
        llama_cpp.llama_memory_seq_rm(self.memory, target, -1, -1)
        llama_cpp.llama_memory_seq_cp(self.memory, source, target, -1, -1)  # streams copy whole
        llama_cpp.llama_memory_seq_rm(self.memory, target, keep, -1)

    def forget(self, slot: int, start: int = 0) -> None:
        """Drop the cells of ``slot`` from position ``start`` on."""
        llama_cpp.llama_memory_seq_rm(self.memory, slot, start, -1)

    def clear(self) -> None:
        llama_cpp.llama_memory_clear(self.memory, True)

    def close(self) -> None:
        self.batch.close()
        if self.ptr is not None:
            llama_cpp.llama_free(self.ptr)
            self.ptr = None
