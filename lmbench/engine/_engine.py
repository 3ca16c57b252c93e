"""The llama.cpp engine: one loaded model, cached per process, with the scheduler that decodes for it."""

from __future__ import annotations

import collections
import ctypes
import functools
import math
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from .. import _gguf, _grammar, models
from ..errors import ContextOverflowError, EngineClosedError, GenerationError, ModelLoadError, ParameterError
from ..params import GenerationParams, validate_params
from . import _llama_log, _probe, _sequence
from ._drafting import DraftModel, same_vocabulary
from ._embed import Embedder
from ._native import Model
from ._sampling import SamplerChain
from ._scheduler import Request, Scheduler
from ._scoring import Scoring, TokenScores
from ._threads import Threads

_llama_log.install()
# KV cells the default scoring layout may take (slots x cells per slot): the memory of long windows stays bounded.
SCORE_CELLS = 8192
# The most sequence slots one engine decodes together (the server's --parallel has the same bound).
MAX_PARALLEL = 256


def physical_cores() -> int:
    """Physical CPU cores available to this process (llama.cpp runs best with one thread each)."""
    try:
        cores: set[tuple[str, str]] = set()
        phys = core = ""
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                key, value = key.strip(), value.strip()
                if key == "physical id":
                    phys = value
                elif key == "core id":
                    core = value
                elif not key and core:
                    cores.add((phys, core))
        if core:
            cores.add((phys, core))
        available = len(os.sched_getaffinity(0))
        return max(1, min(len(cores) or available, available))
    except (OSError, AttributeError):
        return max(1, (os.cpu_count() or 2) // 2)


def cpu_has_amx() -> bool:
    """Whether the CPU offers Intel AMX, which llama.cpp uses to repack quantized weights."""
    try:
        with open("/proc/cpuinfo") as fh:
            return any(line.startswith("flags") and " amx_int8" in line for line in fh)
    except OSError:
        return False


def preflight(path: Path, weight_repack: bool) -> tuple[dict[str, Any], str]:
    """Everything that can refuse a model file before it is loaded: the header checks and the child-process test.

    Returns the file's GGUF facts and digest (both cached per file version).
    """
    info = models.metadata(path)
    digest = models.sha256(path)
    _probe.verify(path, digest, repack=weight_repack)  # a file that crashes llama.cpp crashes a child
    return info, digest


class Engine:
    """A GGUF model loaded into llama.cpp, with its captured log and its scheduler.

    Every generation is a request to ``scheduler`` (``lmbench._scheduler``), which decodes
    concurrent requests together in up to ``parallel`` sequence slots of ``n_ctx`` tokens each.
    ``weight_repack`` lets llama.cpp repack quantized weights for the CPU's extra instructions.
    ``None`` (the default) turns it off on CPUs with AMX: there, llama.cpp's AMX path (as bundled
    with llama-cpp-python 0.3.36) was seen to crash the process on Q8_0 models.
    """

    def __init__(
        self,
        path: Path,
        *,
        n_ctx: int,
        n_threads: int | None,
        n_gpu_layers: int,
        weight_repack: bool | None = None,
        lora: tuple[tuple[str, float], ...] = (),
        **load_options: Any,
    ) -> None:
        started = time.perf_counter()
        self.path = path
        self.logs: collections.deque[str] = collections.deque(maxlen=2000)
        self.lock = threading.RLock()
        # The user's n_threads always wins; left out, the engine decodes with the cores others leave free.
        self.threads = Threads(n_threads or physical_cores(), fixed=n_threads is not None)
        self.load_options = dict(load_options)
        self.weight_repack = not cpu_has_amx() if weight_repack is None else weight_repack
        # What it takes to load this model again (after it was closed to make room for another).
        repack_choice = {} if weight_repack is None else {"weight_repack": weight_repack}
        self.lora = dict(lora)  # adapter path -> scale
        self.load_args: dict[str, Any] = {
            "n_ctx": n_ctx,
            "n_threads": n_threads,
            "n_gpu_layers": n_gpu_layers,
            **repack_choice,
            "lora": lora,
            **load_options,
        }
        self.info, self.sha256 = preflight(path, self.weight_repack)
        self.size = path.stat().st_size
        checked = time.perf_counter()
        self._model: Model | None = Model(
            path,
            n_gpu_layers=n_gpu_layers,
            use_extra_bufts=self.weight_repack,
            logs=self.logs,
            lora=lora,
            **load_options,
        )
        done = time.perf_counter()
        # The whole wait (checks, digest, the child-process test on a new file, llama.cpp's load), with its parts.
        self.load_s = done - started
        self.load_parts = {"checks_s": checked - started, "llama_cpp_s": done - checked}
        self._load_unclaimed = True
        self._claim_lock = threading.Lock()
        model = self._model.pointer
        self.n_ctx = n_ctx or llama_cpp.llama_model_n_ctx_train(model)
        self._vocab = self._model.vocab
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(self._vocab)
        self._piece_buf = ctypes.create_string_buffer(256)
        self._pieces: dict[int, bytes] = {}
        self._embedder: Embedder | None = None
        self._special_pieces: dict[int, bytes] = {}
        head_kv = llama_cpp.llama_model_n_head_kv(model) or 1
        width = llama_cpp.llama_model_n_embd(model) // max(llama_cpp.llama_model_n_head(model), 1) * head_kv
        self.scheduler = Scheduler(
            model,
            n_ctx=self.n_ctx,
            threads=self.threads,
            n_vocab=self.n_vocab,
            end_tokens=self.eog_tokens,
            kv_bytes_per_cell=2 * 2 * llama_cpp.llama_model_n_layer(model) * width,
            logs=self.logs,
            adapters=self._model.adapters,
        )
        self.logs.append(
            f"[lmbench] loaded {path.name} in {self.load_s:.3f}s (checks {self.load_parts['checks_s']:.3f}s, "
            f"llama.cpp {self.load_parts['llama_cpp_s']:.3f}s; n_ctx={self.n_ctx}, threads {self.threads.describe()})"
        )

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def n_threads(self) -> int:
        """The threads llama.cpp decodes with now (``threads.describe()`` says whether they are chosen or fixed)."""
        return self.threads.current

    @property
    def closed(self) -> bool:
        return self._model is None

    @property
    def model(self) -> Model:
        """The loaded llama.cpp model (raises once the engine is closed)."""
        if self._model is None:
            raise EngineClosedError(f"the engine for {self.name} was closed; call lmbench.load() again")
        return self._model

    @property
    def n_embd(self) -> int:
        """The width of the model's embeddings (and hidden states)."""
        return int(llama_cpp.llama_model_n_embd(self.model.pointer))

    @property
    def metadata(self) -> dict[str, str]:
        """The model file's GGUF metadata as llama.cpp read it."""
        return self.model.metadata

    def tokenize(self, text: str, *, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of ``text`` as this model sees it (``special``: parse special-token text such as ``<s>``).

        The buffer is sized from the text (a token covers at least one byte), not from the model's
        trained context, which a model file can set to anything.
        """
        self.model  # noqa: B018 - raises once the engine is closed
        data = text.encode("utf-8")
        size = len(data) + 8
        buffer = (llama_cpp.llama_token * size)()
        n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, size, add_bos, special)
        if n < 0:
            size = -n
            buffer = (llama_cpp.llama_token * size)()
            n = llama_cpp.llama_tokenize(self._vocab, data, len(data), buffer, size, add_bos, special)
        return list(buffer[:n])

    @property
    def vocab(self) -> llama_cpp.llama_vocab_p:
        """The model's vocabulary (llama.cpp's pointer)."""
        self.model  # noqa: B018 - raises once the engine is closed
        return self._vocab

    def check_constraint(self, params: GenerationParams) -> None:
        """Raise ``ParameterError`` now, before any run starts, if the grammar of ``params`` does not parse
        or its ``logit_bias`` names a token outside this model's vocabulary.

        A large grammar is built in a child process first: a crash there is an error here, not the end of this process.
        """
        outside = sorted(t for t in params.logit_bias or () if t >= self.n_vocab)
        if outside:
            raise ParameterError(
                f"logit_bias names token {outside[0]}, outside {self.name}'s vocabulary (token ids 0 to "
                f"{self.n_vocab - 1})",
                name="logit_bias",
                value=outside[0],
            )
        grammar = params.constraint()
        if grammar is not None:
            try:
                _grammar.verify(grammar, self.path)
            except ValueError as exc:
                raise ParameterError(str(exc), name="json_schema" if params.json_schema else "grammar") from None
            SamplerChain(params, 0, self.n_vocab, (), self.vocab).close()

    def check_draft(self, params: GenerationParams) -> None:
        """Load the draft model ``params.draft`` names (once), or raise ``ParameterError`` now, before any run
        starts, when its vocabulary is not this model's: its drafts would be other tokens."""
        draft = params.draft
        if draft is None or draft == "ngram" or draft in self.scheduler.draft_models:
            return
        path = models.resolve(draft)
        model = Model(
            path, n_gpu_layers=self.load_args["n_gpu_layers"] or 0, use_extra_bufts=self.weight_repack, logs=self.logs
        )
        why = same_vocabulary(self.model, model)
        if why is not None:
            model.close()
            raise ParameterError(
                f"the draft model {path.name} has another vocabulary than {self.name} ({why}): "
                "a draft model must have the same tokens",
                name="draft",
                value=draft,
            )
        self.scheduler.draft_models[draft] = DraftModel(model, self.threads, self.logs)
        self.logs.append(f"[lmbench] loaded the draft model {path.name} for {self.name}")

    def detokenize(self, tokens: list[int]) -> str:
        """The text of ``tokens`` (special tokens written out); ids outside the vocabulary raise ``ParameterError``."""
        bad = next(
            (t for t in tokens if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.n_vocab), None
        )
        if bad is not None or not isinstance(tokens, list):
            raise ParameterError(
                f"tokens must be a list of token ids from 0 to {self.n_vocab - 1}; got {bad!r}",
                name="tokens",
                value=bad,
            )
        return b"".join(self.piece(t, special=True) for t in tokens).decode("utf-8", errors="replace")

    def score(
        self,
        sequences: Sequence[Sequence[int]],
        *,
        start: int | Sequence[int] = 1,
        top: int = 0,
        distributions: bool = False,
        slots: int | None = None,
        cancel: Callable[[], bool] | None = None,
    ) -> list[TokenScores]:
        """Teacher-forced scores of each token sequence from position ``start`` on (one per sequence, or one for all).

        Every sequence is fed whole through the scheduler, several per decode; a prefix one
        sequence shares with another (a context with several continuations) is evaluated once.
        ``top`` asks for the most likely tokens at each scored position; ``distributions`` for
        every token's log-probability there (to compare two models on the same tokens).
        ``slots`` sequence slots are used when the scheduler is idle (default: up to 16, at most
        ``SCORE_CELLS`` KV cells in all).
        """
        seqs = [self._checked_tokens(tokens, f"sequences[{i}]") for i, tokens in enumerate(sequences)]
        starts = [start] * len(seqs) if isinstance(start, int) else list(start)
        if len(starts) != len(seqs):
            raise ParameterError(f"start has {len(starts)} values for {len(seqs)} sequences", name="start")
        for i, (tokens, first) in enumerate(zip(seqs, starts, strict=True)):
            if isinstance(first, bool) or not isinstance(first, int) or not 1 <= first < len(tokens):
                raise ParameterError(
                    f"sequences[{i}]: start must be a whole number from 1 to {len(tokens) - 1} (a token is scored "
                    f"given the ones before it), not {first!r}",
                    name="start",
                    value=first,
                )
            if len(tokens) > self.n_ctx:
                raise ContextOverflowError(len(tokens), self.n_ctx)
        if isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= 100:
            raise ParameterError(f"top must be a whole number from 0 to 100, not {top!r}", name="top", value=top)
        if slots is not None and (isinstance(slots, bool) or not isinstance(slots, int) or not 1 <= slots <= 256):
            raise ParameterError(f"slots must be a whole number from 1 to 256, not {slots!r}", name="slots")
        if not seqs:
            return []
        params = validate_params({"max_tokens": 1, "temperature": 0.0, "seed": 0})  # a scored sequence samples nothing
        per_slot = -(-max(map(len, seqs)) // 256) * 256
        layout = (slots or min(len(seqs), 16, max(1, SCORE_CELLS // per_slot)), per_slot)
        requests = []
        for tokens, first in zip(seqs, starts, strict=True):
            fed = tokens[:-1]
            progress = _sequence.Sequence(params, n_prompt=len(fed), n_ctx=self.n_ctx, piece=self.piece, end_tokens=())
            scoring = Scoring(tokens, first, top=top, distributions=distributions, n_vocab=self.n_vocab)
            requests.append(Request(fed, progress, (), cancel or _never, layout=layout, scoring=scoring))
        self.scheduler.submit(requests)
        self.scheduler.run(requests)
        for request in requests:
            reason = request.sequence.finish_reason
            if request.failure is not None or reason != "stop":
                detail = request.failure or request.sequence.error or reason
                raise GenerationError(f"scoring did not finish: {detail}") from request.failure
        return [
            r.scoring.result(cached=r.cached, total_s=r.sequence.total, batch_size=max(r.batch_size, 1))
            for r in requests
            if r.scoring is not None
        ]

    def _checked_tokens(self, tokens: Any, name: str) -> list[int]:
        """``tokens`` as a list of ids in this model's vocabulary, else ``ParameterError`` naming the bad one."""
        if isinstance(tokens, str | bytes) or not isinstance(tokens, Sequence):
            raise ParameterError(f"{name} must be a list of token ids, not {type(tokens).__name__}", name=name)
        bad = next(
            (t for t in tokens if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < self.n_vocab), None
        )
        if bad is not None:
            raise ParameterError(
                f"{name}: token ids run from 0 to {self.n_vocab - 1}; got {bad!r}", name=name, value=bad
            )
        return list(tokens)

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The raw bytes of one token (may be part of a multi-byte character); cached per token."""
        cache = self._special_pieces if special else self._pieces
        cached = cache.get(token)
        if cached is not None:
            return cached
        n = llama_cpp.llama_token_to_piece(self._vocab, token, self._piece_buf, len(self._piece_buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
            piece = buf.raw[:n]
        else:
            piece = self._piece_buf.raw[:n]
        cache[token] = piece
        return piece

    @functools.cached_property
    def eog_tokens(self) -> frozenset[int]:
        """Every token that ends generation (end of sequence, end of turn, ...)."""
        return frozenset(t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(self._vocab, t))

    def is_end(self, token: int) -> bool:
        """Whether ``token`` ends generation (end of sequence / turn)."""
        return token in self.eog_tokens

    @property
    def parallel(self) -> int:
        """How many requests decode together (sequence slots of ``n_ctx`` tokens each); 1 by default."""
        return self.scheduler.parallel

    @parallel.setter
    def parallel(self, n: int) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_PARALLEL:
            raise ParameterError(
                f"parallel must be a whole number from 1 to {MAX_PARALLEL}, not {n!r}", name="parallel", value=n
            )
        self.scheduler.parallel = n

    def embed(self, texts: Sequence[str | list[int]]) -> list[np.ndarray]:
        """Normalised embeddings of texts (or token ids, taken as given), from a context with embeddings on
        made on first use (``_embed``)."""
        with self.lock:
            if self._embedder is None:
                self._embedder = Embedder(self.model.pointer, n_ctx=self.n_ctx, n_threads=self.n_threads)
            return [self._embedder.embed(t if isinstance(t, list) else self.tokenize(t)) for t in texts]

    def close(self) -> None:
        """Free the model's memory now (the engine cannot be used afterwards)."""
        with self.lock:
            if self._embedder is not None:
                self._embedder.close()
                self._embedder = None
            self.scheduler.close()
            if self._model is not None:
                self._model.close()
                self._model = None
                self.logs.append(f"[lmbench] unloaded {self.name}")

    def claim_load_s(self) -> float:
        """The load time, the first time it is asked for (the first run made after loading carries it), else 0."""
        with self._claim_lock:
            unclaimed, self._load_unclaimed = self._load_unclaimed, False
        return self.load_s if unclaimed else 0.0

    def __repr__(self) -> str:
        if self.closed:
            return f"<lmbench.Engine {self.name} (closed)>"
        status = self.scheduler.status()
        kv = f"{status['slots']} x {status['cells_per_slot']} cells, {status['kv_cache_bytes'] / 2**20:.1f} MiB"
        return (
            f"<lmbench.Engine {self.name} (n_ctx={self.n_ctx}, threads {self.threads.describe()}, "
            f"parallel={self.parallel}; KV cache {kv if status['slots'] else 'not made yet'})>"
        )


_FileKey = tuple[str, int, int]
_CacheKey = tuple[str, int, int, tuple[tuple[str, Any], ...]]
_cache: collections.OrderedDict[_CacheKey, Engine] = collections.OrderedDict()
_cache_lock = threading.RLock()
_max_models = int(os.environ.get("LMBENCH_MAX_MODELS", "1"))


def set_max_models(n: int) -> None:
    """How many models may stay loaded at once (least recently used ones are closed first)."""
    global _max_models
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ParameterError(f"max models must be a whole number of at least 1, not {n!r}", name="n", value=n)
    with _cache_lock:
        _max_models = n
        _evict(keep=n)


def _evict(keep: int) -> None:
    while len(_cache) > keep:
        _, engine = _cache.popitem(last=False)
        engine.close()


def load_engine(
    model: str | os.PathLike[str] | Engine | None = None,
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    lora: Mapping[str | os.PathLike[str], float] | None = None,
    **load_options: Any,
) -> Engine:
    """``load`` for any model reference, an ``Engine`` included (a closed one is loaded again).

    A loaded engine of the same file is reused whenever the settings this call gives agree with its
    own (settings left out agree with any), so ``load(path, n_threads=1)`` followed by
    ``generate(..., model=path)`` keeps the user's settings. A call that asks for other settings
    loads another copy and says so in a warning. A closed engine (unloaded to make room for another
    model) is loaded again with its own settings, so notebook cells that hold an engine keep working
    after the panel switched models. LoRA adapters are not a setting left out: a call without
    ``lora`` means the model without adapters.
    """
    if isinstance(model, Engine):
        if not model.closed:
            return model
        return load_engine(model.path, **{**model.load_args, "lora": model.lora})
    path = models.resolve(model)
    try:
        stat = path.stat()
    except OSError as exc:
        raise ModelLoadError(path, exc.strerror or "no such file") from None
    adapters = checked_lora(lora or {})  # always a choice: a file named without adapters means the base model
    asked = {"n_ctx": n_ctx, "n_threads": n_threads, "n_gpu_layers": n_gpu_layers, "lora": adapters, **load_options}
    given = {name: value for name, value in asked.items() if value is not None}
    file: _FileKey = (str(path), stat.st_size, stat.st_mtime_ns)
    with _cache_lock:
        same_file = [(key, e) for key, e in reversed(_cache.items()) if key[:3] == file and not e.closed]
        for key, engine in same_file:
            if all(engine.load_args.get(name) == value for name, value in given.items()):
                _cache.move_to_end(key)
                return engine
        options = {"n_ctx": 2048, "n_threads": None, "n_gpu_layers": 0, **given}
        if same_file:
            loaded_args = same_file[0][1].load_args
            differ = ", ".join(
                f"{k}={v!r} (loaded: {loaded_args.get(k)!r})"
                for k, v in given.items()
                if loaded_args.get(k) != v and k != "lora"  # another adapter is another model, on purpose
            )
            if differ:
                warnings.warn(
                    f"{path.name} is loaded with other settings; loading it again with {differ}", stacklevel=3
                )
        repack = options.get("weight_repack")
        preflight(path, not cpu_has_amx() if repack is None else bool(repack))  # a bad file leaves loaded models be
        _evict(keep=_max_models - 1)
        engine = Engine(path, **options)
        for adapter, scale in engine.lora.items():
            models.register_variant(Path(adapter), base=path, kind="adapter", scale=scale)
        _cache[(file[0], file[1], file[2], tuple(sorted(options.items())))] = engine
        return engine


def checked_lora(lora: Any) -> tuple[tuple[str, float], ...]:
    """``lora`` ({adapter file: scale}) as sorted (absolute path, scale) pairs; ``ParameterError``/``ModelLoadError``.

    An empty mapping means no adapter.
    """
    if not isinstance(lora, Mapping):
        raise ParameterError(
            f"lora must map adapter files to scales, like {{'adapter.gguf': 0.8}}, not {lora!r}", name="lora"
        )
    pairs = []
    for file, scale in lora.items():
        if isinstance(scale, bool) or not isinstance(scale, int | float) or not math.isfinite(scale):
            raise ParameterError(
                f"lora[{file!r}]: the scale must be a finite number, not {scale!r}", name="lora", value=scale
            )
        path = Path(os.path.abspath(Path(file).expanduser()))
        header = _gguf.read(path)  # ModelLoadError when it is no GGUF file
        if header.field("general.type") != "adapter":
            raise ModelLoadError(path, "not a LoRA adapter (its general.type is not 'adapter')")
        pairs.append((str(path), float(scale)))
    return tuple(sorted(pairs))


def load(
    model: str | os.PathLike[str] | None = None,
    *,
    n_ctx: int | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int | None = None,
    lora: Mapping[str | os.PathLike[str], float] | None = None,
    **load_options: Any,
) -> Engine:
    """Load a GGUF model (a path or an alias), or return the already loaded engine for it.

    ``None`` means ``$LMBENCH_MODEL`` or else the default model. Settings left out take their
    defaults (``n_ctx`` 2048, ``n_gpu_layers`` 0; without ``n_threads`` the engine decodes with
    the physical cores that other processes leave free, re-checked as it goes) on a first load
    and agree with any loaded engine of the same file. Bad files raise ``ModelLoadError`` with the
    reason; they never reach llama.cpp. ``lora`` applies LoRA adapters with their scales
    (``{"adapter.gguf": 0.8}``); each is recorded with every run and listed beside its base model.
    """
    return load_engine(model, n_ctx=n_ctx, n_threads=n_threads, n_gpu_layers=n_gpu_layers, lora=lora, **load_options)


def tokenize(
    text: str,
    model: str | os.PathLike[str] | Engine | None = None,
    *,
    add_special: bool = True,
    parse_special: bool = False,
) -> list[int]:
    """The token ids of ``text`` for a model (loaded if needed): what counts against its context.

    ``add_special`` adds the model's BOS token; ``parse_special`` reads special-token text such
    as ``<|im_start|>`` as those tokens.
    """
    if not isinstance(text, str):
        raise ParameterError(f"text must be a string, not {type(text).__name__}", name="text", value=text)
    engine = load_engine(model)
    with engine.lock:
        return engine.tokenize(text, add_bos=add_special, special=parse_special)


def detokenize(tokens: list[int], model: str | os.PathLike[str] | Engine | None = None) -> str:
    """The text of token ids for a model (loaded if needed)."""
    engine = load_engine(model)
    return engine.detokenize(tokens)


def embed(texts: str | list[str], model: str | os.PathLike[str] | Engine | None = None) -> np.ndarray:
    """Embeddings of ``texts`` (one row each, L2-normalised: a dot product is the cosine similarity).

    The model is loaded (or found in the engine cache) as for ``generate``; its embeddings context
    is made on first use. A model with a pooling layer gives its pooled vector, others the mean of
    their token vectors.
    """
    batch = [texts] if isinstance(texts, str) else list(texts)
    if not batch or not all(isinstance(t, str) for t in batch):
        raise ParameterError("texts must be a string or a non-empty list of strings", name="texts")
    return np.stack(load_engine(model).embed(batch))


def unload(model: str | os.PathLike[str] | None = None) -> None:
    """Close every loaded engine, or only those of ``model``."""
    path = None if model is None else str(models.resolve(model))
    with _cache_lock:
        for key in [k for k in _cache if path is None or k[0] == path]:
            _cache.pop(key).close()


def loaded() -> list[Engine]:
    """The engines currently resident, least recently used first."""
    with _cache_lock:
        return [*_cache.values()]


def _never() -> bool:
    return False
