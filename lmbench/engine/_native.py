"""llama.cpp's native objects that decoding needs, one small class each, freed in ``close()``.

In the manner of llama-cpp-python's ``_internals.py``: the ``Model`` (weights and vocabulary), a
``Context`` (a KV cache with a stream of cells per sequence slot, decoded on a thread of its own)
and the ``Batch`` it decodes. Sampler chains live in ``_sampling``.
"""

from __future__ import annotations

import collections
import ctypes
import functools
import itertools
import queue
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import llama_cpp
import numpy as np

from ..errors import GenerationError, ModelLoadError
from . import _llama_log
from ._threads import Threads

# One decode entry: (token, position, sequence slot, whether its logits are wanted).
Entry = tuple[int, int, int, bool]


_T = TypeVar("_T")

# Load options a caller may give (``lmbench.load(model, use_mmap=False)``), with their defaults.
MODEL_OPTIONS: dict[str, Any] = {"use_mmap": True, "use_mlock": False, "main_gpu": 0, "check_tensors": False}


class Model:
    """A GGUF model loaded with llama.cpp's model functions (weights and vocabulary, no context of its own)."""

    def __init__(
        self,
        path: Path,
        *,
        n_gpu_layers: int,
        use_extra_bufts: bool,
        logs: collections.deque[str],
        lora: Sequence[tuple[str, float]] = (),
        **options: Any,
    ) -> None:
        unknown = sorted(set(options) - set(MODEL_OPTIONS))
        if unknown:
            raise ModelLoadError(path, f"bad load option {unknown[0]!r} (known: {', '.join(MODEL_OPTIONS)})")
        given = {**MODEL_OPTIONS, **options}
        params = llama_cpp.llama_model_default_params()
        params.n_gpu_layers = n_gpu_layers
        params.use_extra_bufts = use_extra_bufts  # weight repacking for the CPU's extra instructions
        params.main_gpu = given["main_gpu"]
        params.check_tensors = given["check_tensors"]
        mmap, mlock = bool(given["use_mmap"]), bool(given["use_mlock"])
        params.load_mode = {
            (True, True): llama_cpp.LLAMA_LOAD_MODE_MMAP_MLOCK,
            (False, True): llama_cpp.LLAMA_LOAD_MODE_MLOCK,
            (True, False): llama_cpp.LLAMA_LOAD_MODE_MMAP,
            (False, False): llama_cpp.LLAMA_LOAD_MODE_NONE,
        }[(mmap, mlock)]
        with _llama_log.capture(logs):
            ptr = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
        if not ptr:
            tail = next((line for line in reversed(logs) if "error" in line.lower()), "")
            raise ModelLoadError(path, f"llama.cpp refused it {tail}".strip())
        self.ptr: llama_cpp.llama_model_p | None = ptr
        self.vocab = llama_cpp.llama_model_get_vocab(ptr)
        # LoRA adapters (llama.cpp frees them with the model) and their scales, set on every context.
        self.adapters: list[tuple[llama_cpp.llama_adapter_lora_p, float]] = []
        for adapter_path, scale in lora:
            with _llama_log.capture(logs):
                adapter = llama_cpp.llama_adapter_lora_init(ptr, adapter_path.encode())
            if not adapter:
                self.close()
                tail = next((line for line in reversed(logs) if "error" in line.lower() or "fail" in line), "")
                raise ModelLoadError(
                    Path(adapter_path), f"llama.cpp refused it as a LoRA adapter of {path.name} {tail}"
                )
            self.adapters.append((adapter, scale))

    @property
    def pointer(self) -> llama_cpp.llama_model_p:
        if self.ptr is None:
            raise GenerationError("the model was freed")
        return self.ptr

    @functools.cached_property
    def metadata(self) -> dict[str, str]:
        """The GGUF key-value metadata as llama.cpp read it (values as text)."""
        found: dict[str, str] = {}
        buffer = ctypes.create_string_buffer(1024)
        for i in range(llama_cpp.llama_model_meta_count(self.pointer)):
            keys = []
            for read in (llama_cpp.llama_model_meta_key_by_index, llama_cpp.llama_model_meta_val_str_by_index):
                n = read(self.pointer, i, buffer, len(buffer))
                if n >= len(buffer):
                    buffer = ctypes.create_string_buffer(n + 1)
                    read(self.pointer, i, buffer, len(buffer))
                keys.append(buffer.value.decode("utf-8", errors="replace"))
            found[keys[0]] = keys[1]
        return found

    def token_text(self, token: int) -> str:
        """The vocabulary's text of ``token`` ("" for -1, llama.cpp's "no such token")."""
        if token == -1:
            return ""
        return llama_cpp.llama_vocab_get_text(self.vocab, token).decode("utf-8", errors="replace")

    @property
    def bos_text(self) -> str:
        """The text of the beginning-of-sequence token, as chat templates write it."""
        return self.token_text(llama_cpp.llama_vocab_bos(self.vocab))

    @property
    def eos_text(self) -> str:
        """The text of the end-of-sequence token, as chat templates write it."""
        return self.token_text(llama_cpp.llama_vocab_eos(self.vocab))

    def close(self) -> None:
        if self.ptr is not None:
            llama_cpp.llama_model_free(self.ptr)
            self.ptr = None


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


class _DecodeThread:
    """The one OS thread that runs a context's decodes, whichever thread drives the scheduler.

    llama.cpp's CPU backend (an OpenMP build) keeps a team of helper threads for each thread that
    calls it; decodes called from the request thread that happens to drive each step switched
    teams, and on a 2-core machine ran 1.3x (an 85M model) to 5x (the test model) slower than the
    same decodes from one thread. Handing each call over costs two thread wake-ups, a few tens of
    microseconds a step. Between decodes the thread is idle, so the scheduler samples half of a
    large batch's sequences on it (``Context.beside``).
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[_Call | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(*args)`` on the decode thread; its result, or its exception raised here."""
        return self.start(fn, *args)()

    def start(self, fn: Callable[..., _T], *args: Any) -> Callable[[], _T]:
        """Start ``fn(*args)`` on the decode thread (after the calls started before it); the function returned
        waits for its outcome. Each call has its own, so one whose outcome nobody waited for (Ctrl-C in
        between) leaves the next ones be."""
        call = _Call(fn, args)
        self._calls.put(call)
        return call.outcome

    def _serve(self) -> None:
        while (call := self._calls.get()) is not None:
            call.make()  # which lets go of the function and its arguments (the context) once made

    def close(self) -> None:
        self._calls.put(None)
        self._thread.join()


class _Call:
    """One call handed to a ``_DecodeThread``, and its outcome."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self._fn: Callable[..., Any] | None = fn
        self._args = args
        self._result: Any = None
        self._error: BaseException | None = None
        self._finished = False
        self._done = threading.Lock()
        self._done.acquire()

    def make(self) -> None:
        fn, self._fn = self._fn, None
        assert fn is not None
        try:
            self._result = fn(*self._args)
        except BaseException as exc:  # noqa: BLE001 - raised in the caller's thread
            self._error = exc
        self._args = ()
        self._finished = True
        self._done.release()

    def outcome(self) -> Any:
        """Wait for the call to end and give its result (or raise its exception). Ctrl-C waits for the call to
        end, as it waits for a native call made in this thread, then is raised."""
        interrupted: BaseException | None = None
        while not self._finished:
            try:
                self._done.acquire()
            except KeyboardInterrupt as exc:
                interrupted = exc
        if interrupted is not None:
            raise interrupted
        if self._error is not None:
            raise self._error
        return self._result


class Context:
    """A llama.cpp context on a loaded model: ``slots`` sequences, each with a KV stream of ``per_slot`` cells."""

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        *,
        slots: int,
        per_slot: int,
        n_batch: int,
        threads: Threads,
        logs: collections.deque[str],
        adapters: Sequence[tuple[llama_cpp.llama_adapter_lora_p, float]] = (),
        observe: Any = None,
    ) -> None:
        """``observe``: a ``ggml_backend_sched_eval_callback`` that sees the graph's tensors as they are
        computed (the importance matrix reads the weights' inputs so); keep it alive as long as the context."""
        n_threads = threads.now()
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = slots * per_slot
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = slots
        params.n_threads = params.n_threads_batch = n_threads
        params.kv_unified = False  # each sequence attends to its own cells only
        params.no_perf = True
        if observe is not None:
            params.cb_eval = observe
        self.logs = logs
        with _llama_log.capture(logs):
            self.ptr: llama_cpp.llama_context_p | None = llama_cpp.llama_init_from_model(model, params)
        if not self.ptr:
            self.ptr = None
            raise GenerationError(f"llama.cpp could not make a context of {slots} x {per_slot} tokens")
        self.slots, self.per_slot, self.n_batch = slots, per_slot, n_batch
        self.threads, self._n_threads = threads, n_threads
        self.kv_cache_type = ggml_type_name(params.type_k)
        self.memory = llama_cpp.llama_get_memory(self.ptr)
        self.batch = Batch(n_batch)
        self._decoder = _DecodeThread("lmbench-decode")
        self._entries: Sequence[Entry] = ()  # the last decode's
        self._outputs: list[int] | None = None  # its entries' output rows so far, counted on first use
        if adapters:
            table: Any = llama_cpp.llama_adapter_lora_p_ctypes * len(adapters)  # the stubs miss void pointers
            pointers = table(*(a for a, _ in adapters))
            scales = (ctypes.c_float * len(adapters))(*(s for _, s in adapters))
            if llama_cpp.llama_set_adapters_lora(self.ptr, pointers, len(adapters), scales) != 0:
                self.close()
                raise GenerationError("llama.cpp could not set the LoRA adapters on the context")

    @property
    def pointer(self) -> llama_cpp.llama_context_p:
        if self.ptr is None:
            raise GenerationError("the context was freed")
        return self.ptr

    def decode(self, entries: Sequence[Entry]) -> None:
        """One ``llama_decode`` of the entries (at most ``n_batch``), with the threads the machine leaves free."""
        n_threads = self.threads.now()
        if n_threads != self._n_threads:
            llama_cpp.llama_set_n_threads(self.ptr, n_threads, n_threads)
            self._n_threads = n_threads
        status = self._decoder.run(self._decode, self.batch.fill(entries))
        if status != 0:
            raise GenerationError(f"llama_decode failed with status {status} (batch of {len(entries)} tokens)")
        self._entries, self._outputs = entries, None

    def beside(self, fn: Callable[..., _T], *args: Any) -> Callable[[], _T]:
        """Start ``fn(*args)`` on the decode thread, idle between decodes, while the caller works on; the function
        returned waits for its result."""
        return self._decoder.start(fn, *args)

    def _decode(self, batch: llama_cpp.llama_batch) -> int:
        """``llama_decode``, then one read of the logits: llama.cpp puts the output rows in batch order on the
        first read after a decode (a batch split into ubatches leaves them out of order), and reads from two
        threads at once (``beside``) must not both do that."""
        with _llama_log.capture(self.logs):
            status = int(llama_cpp.llama_decode(self.ptr, batch))
        if status == 0:
            llama_cpp.llama_get_logits(self.ptr)
        return status

    def logits(self, index: int, n_vocab: int) -> np.ndarray:
        """The logits of the ``index``-th entry of the last decode (a view; copy before the next decode)."""
        return np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.ptr, index), shape=(n_vocab,))

    def logit_rows(self, entries: range, n_vocab: int) -> np.ndarray:
        """The logits of consecutive entries of the last decode that all asked for them, as one view of llama.cpp's
        output buffer (whose rows are the entries with logits, in batch order): no copy a row."""
        if self._outputs is None:  # once a decode: the rows before each entry
            self._outputs = list(itertools.accumulate((bool(e[3]) for e in self._entries), initial=0))
        first = self._outputs[entries.start]
        pointer = llama_cpp.llama_get_logits(self.ptr)
        return np.ctypeslib.as_array(pointer, shape=(self._outputs[-1], n_vocab))[first : first + len(entries)]

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
        self._decoder.close()
        self.batch.close()
        if self.ptr is not None:
            llama_cpp.llama_free(self.ptr)
            self.ptr = None
