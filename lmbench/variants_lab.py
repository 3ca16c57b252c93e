"""Model variants: which file to run, answered on your own prompts.

``quantize`` makes quantized copies of a model with llama.cpp's quantizer (in a child process) and
records each copy's source in the model list; ``drift`` compares candidates with a reference on
the same token sequences (teacher-forced, through each engine's scheduler): per-token KL
divergence, top-1 agreement, perplexity; ``variants`` puts size, memory, load time, speed, drift
and a task score of each file in one table, one row per file.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gguf
import llama_cpp
import numpy as np
import pandas as pd

from . import _gguf, _imatrix, _quantizer, datasets, models
from ._config import home
from ._progress import Progress
from .engine import Engine, TokenScores, unload
from .engine._engine import load_engine, physical_cores
from .errors import ParameterError
from .generation import generate
from .params import check_text

ModelArg = str | os.PathLike[str] | Engine


# Quantization ------------------------------------------------------------------------------------


def _tensor_types(path: Path) -> set[str]:
    return {t.type.upper() for t in _gguf.read(path).tensors}


def _checked_types(types: str | Sequence[str]) -> list[str]:
    names = [types] if isinstance(types, str) else list(types)
    if not names or not all(isinstance(t, str) for t in names):
        raise ParameterError("types must be a file type name or a non-empty list of them", name="types", value=types)
    unknown = [t for t in names if t.upper() not in _quantizer.FILE_TYPES]
    if unknown:
        raise ParameterError(
            f"unknown quantization type {unknown[0]!r} (llama.cpp knows: {', '.join(sorted(_quantizer.FILE_TYPES))})",
            name="types",
            value=unknown[0],
        )
    return list(dict.fromkeys(t.upper() for t in names))


_SUMS, _COUNTS = ".in_sum2", ".counts"


def _importance(imatrix: Path, model: Path) -> dict[str, np.ndarray]:
    """The importance values in ``imatrix`` (``llama-imatrix``'s GGUF file) by weight name, checked against ``model``.

    As ``llama-quantize`` reads it: each ``<weight>.in_sum2`` (sums of squared activations, one row per
    expert) divided by its ``<weight>.counts``; a row no token reached counts as all ones. Every entry
    must name a weight of ``model`` with as many input columns (an imatrix made for another model
    would otherwise be used or dropped silently).
    """

    def refuse(why: str) -> ParameterError:
        return ParameterError(f"imatrix {imatrix.name}: {why}", name="imatrix", value=str(imatrix))

    if not imatrix.is_file():
        raise refuse("no such file")
    try:
        tensors = {t.name: np.asarray(t.data, dtype=np.float64) for t in gguf.GGUFReader(imatrix).tensors}
    except (ValueError, OSError) as exc:
        raise refuse(
            f"not a GGUF importance matrix ({exc}); make one with llama.cpp's llama-imatrix, whose default "
            "output format is GGUF (the older .dat format is not read)"
        ) from exc
    weights = {t.name: t.dims for t in _gguf.read(model).tensors}
    names = sorted(n.removesuffix(_SUMS) for n in tensors if n.endswith(_SUMS))
    if not names:
        raise refuse(f"it holds no {_SUMS} tensors, so no importance values")
    values = {}
    for name in names:
        sums, counts = tensors[name + _SUMS], tensors.get(name + _COUNTS)
        if counts is None:
            raise refuse(f"{name} has {_SUMS} but no {_COUNTS}")
        dims = weights.get(name)
        if dims is None:
            raise refuse(f"{model.name} has no weight {name!r}: the matrix was made for another model")
        rows = counts.reshape(-1)
        expected = dims[0] * math.prod(dims[2:])
        if sums.size != expected or sums.size % rows.size:
            raise refuse(f"{name} has {sums.size} values, {model.name}'s weight needs {expected}")
        per_row = sums.reshape(rows.size, -1) / np.where(rows > 0, rows, 1)[:, None]
        per_row[rows <= 0] = 1.0
        if not np.isfinite(per_row).all() or (per_row < 0).any():
            raise refuse(f"{name} has negative or non-finite values")
        values[name] = per_row.reshape(-1).astype(np.float32)
    return values


def imatrix(
    model: ModelArg,
    *,
    texts: str | Sequence[str] | None = None,
    data: datasets.DataArg = None,
    column: str = "text",
    out: str | os.PathLike[str] | None = None,
    chunk: int = 512,
) -> Path:
    """An importance matrix of ``model`` on your texts, written as llama.cpp's ``llama-imatrix`` writes it.

    The texts (``texts``, or column ``column`` of ``data``) are tokenized one after another and
    evaluated in chunks of ``chunk`` tokens by a llama.cpp context on the loaded model whose eval
    callback sums, for every weight of the model's blocks, each input column's squared activation
    (chunks under 16 tokens are skipped, as llama-imatrix does). The GGUF file (default
    ``$LMBENCH_HOME/imatrix/<model>.imatrix.gguf``) is what ``quantize(..., imatrix=)`` and
    ``llama-quantize --imatrix`` read. Mixture-of-experts models are refused (use llama-imatrix).
    """
    if isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < _imatrix.MIN_TOKENS:
        raise ParameterError(
            f"chunk must be a whole number of at least {_imatrix.MIN_TOKENS} tokens, not {chunk!r}", name="chunk"
        )
    items = _texts(texts, data, column)
    engine = load_engine(model)
    target = (
        Path(out)
        if out is not None
        else home() / "imatrix" / f"{models.strip_quantization(engine.path.name)}.imatrix.gguf"
    )
    if target.suffix.lower() != ".gguf":
        raise ParameterError(f"out must be a .gguf file, not {target.name!r}", name="out", value=str(target))
    collector, chunks = _imatrix.compute(engine, items, chunk)
    target.parent.mkdir(parents=True, exist_ok=True)
    source = [os.fspath(data)] if isinstance(data, str | os.PathLike) else ["texts" if data is None else "data"]
    return _imatrix.write(target, collector, datasets=source, chunks=chunks, chunk=chunk)


def quantize(
    source: str | os.PathLike[str] | None,
    types: str | Sequence[str] = ("Q8_0",),
    *,
    out: str | os.PathLike[str] | None = None,
    requantize: bool = False,
    imatrix: str | os.PathLike[str] | None = None,
    threads: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Quantized copies of ``source`` (a path or an alias), one per type in ``types`` ("Q8_0", "Q4_K_M", ...).

    llama.cpp's quantizer runs in a child process (a crash there cannot take the kernel down),
    with a progress display per tensor. Each file ``<name>.<TYPE>.gguf`` goes into ``out``
    (default: ``$LMBENCH_HOME/models``, which ``load`` searches) and is recorded in the model
    list with its source; a copy already made from the same source file is reused. A source that
    is already quantized is refused unless ``requantize=True`` (quantizing twice loses more than
    once). ``imatrix``: an importance matrix file as llama.cpp's ``llama-imatrix`` writes it (GGUF),
    made for this model; llama.cpp then weighs each weight's rounding error by how strongly its inputs
    are used, and the copies are named ``<name>-imatrix.<TYPE>.gguf``. One row per type: ``type``,
    ``path``, ``file_mb``, ``source``, ``imatrix``, ``seconds``, ``reused``.
    """
    names = _checked_types(types)
    path = models.resolve(source)
    held = _tensor_types(path) - _quantizer.FULL_PRECISION
    if held and not requantize:
        raise ParameterError(
            f"{path.name} is already quantized ({', '.join(sorted(held))} tensors): quantizing it again loses "
            "more precision; quantize the F32/F16/BF16 original, or pass requantize=True",
            name="source",
            value=str(path),
        )
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ParameterError(f"threads must be a whole number of at least 1, not {threads!r}", name="threads")
    matrix = Path(imatrix).expanduser().resolve() if imatrix is not None else None
    importance = _importance(matrix, path) if matrix is not None else None
    folder = Path(out).expanduser() if out is not None else home() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    stem = models.strip_quantization(path.name) + ("-imatrix" if matrix else "")
    source_id = {
        "source_sha256": models.sha256(path),
        "imatrix_sha256": models.sha256(matrix) if matrix else None,
    }
    made = models.variants()
    rows = []
    with tempfile.TemporaryDirectory(prefix="lmbench-imatrix-") as scratch:
        values = None
        if importance is not None:
            values = Path(scratch) / "imatrix.npz"
            np.savez(values, **importance)  # type: ignore[arg-type]  # mypy: a key could be allow_pickle
        for name in names:
            target = (folder / f"{stem}.{name}.gguf").resolve()
            started = time.perf_counter()
            facts = made.get(str(target), {})
            reused = facts.get("type") == name and all(facts.get(k) == v for k, v in source_id.items())
            if not reused:
                bar = Progress(1, desc=f"quantize {name}", unit="tensor", disable=not progress)

                def step(i: int, n: int, bar: Progress = bar) -> None:
                    bar.total = n
                    bar.update()

                why = _quantizer.run(
                    path,
                    target,
                    _quantizer.FILE_TYPES[name],
                    threads=threads or physical_cores(),
                    requantize=requantize,
                    step=step,
                    imatrix=values,
                )
                bar.close()
                if why is not None:
                    raise ParameterError(f"{path.name} -> {name}: {why}", name="types", value=name)
                models.register_variant(target, base=path, kind="quantized", type=name, **source_id)
            rows.append(
                {
                    "type": name,
                    "path": str(target),
                    "file_mb": target.stat().st_size / 2**20,
                    "source": str(path),
                    "imatrix": str(matrix) if matrix else None,
                    "seconds": time.perf_counter() - started,
                    "reused": reused,
                }
            )
    return pd.DataFrame(rows)


# Drift -------------------------------------------------------------------------------------------


@dataclass
class Drift:
    """Candidates against a reference on the same tokens: ``summary`` one row per candidate, ``positions`` the worst.

    ``summary``: ``kl_mean`` and ``kl_p99`` (nats per token, KL(reference || candidate)),
    ``top1_agreement`` (share of positions where both rank the same token first), ``ppl`` and
    ``delta_ppl`` (the candidate's perplexity on the texts, minus the reference's), ``tokens``.
    ``positions``: for each candidate, the positions of largest KL with the token there and both
    models' top 5 (token text and probability).
    """

    reference: str
    summary: pd.DataFrame
    positions: pd.DataFrame

    def _repr_html_(self) -> str:
        return (
            f"<b>drift against {self.reference}</b>{self.summary.to_html(index=False)}"
            f"<b>largest disagreements</b>{self.positions.to_html(index=False)}"
        )


def _texts(texts: str | Sequence[str] | None, data: datasets.DataArg, column: str) -> list[str]:
    if (texts is None) == (data is None):
        raise ParameterError("give the texts to compare on as texts=... or data=..., one of them", name="texts")
    if data is not None:
        items = datasets.load(data)
        missing = next((i for i, item in enumerate(items) if not isinstance(item.vars.get(column), str)), None)
        if missing is not None:
            raise ParameterError(f"data row {missing} has no text in column {column!r}", name="column", value=column)
        return [item.vars[column] for item in items]
    listed = [texts] if isinstance(texts, str) else texts
    if not isinstance(listed, Sequence) or not listed:
        raise ParameterError("texts must be a string or a non-empty list of strings", name="texts")
    return [check_text(f"texts[{i}]", t) for i, t in enumerate(listed)]


def _vocabulary(engine: Engine) -> str:
    """A digest of every token's text, in id order: two models with equal digests read token ids the same way."""
    digest = hashlib.sha256()
    for token in range(engine.n_vocab):
        digest.update(engine.model.token_text(token).encode() + b"\0")
    return digest.hexdigest()


def _scored(engine: Engine, sequences: list[list[int]]) -> list[TokenScores]:
    with engine.lock:
        return engine.score(sequences, start=1, top=5, distributions=True)


def _top(engine: Engine, ids: np.ndarray, logprobs: np.ndarray) -> list[tuple[str, float]]:
    return [(engine.model.token_text(int(t)), round(math.exp(lp), 4)) for t, lp in zip(ids, logprobs, strict=True)]


def drift(
    reference: ModelArg,
    candidates: Sequence[ModelArg],
    *,
    texts: str | Sequence[str] | None = None,
    data: datasets.DataArg = None,
    column: str = "text",
    worst: int = 5,
) -> Drift:
    """How far each candidate's next-token distributions drift from ``reference``'s on the same texts.

    Each text (``texts``, or column ``column`` of ``data``) is tokenized once by the reference and
    teacher-forced through every model (``Engine.score``, batched by its scheduler); at each
    position the full distributions are compared. The candidates must read token ids as the
    reference does (same vocabulary), else ``ParameterError``. ``worst`` positions of largest KL
    are kept per candidate. ``drift(ref, [ref])`` gives KL 0 and agreement 1 exactly.
    """
    if isinstance(candidates, str | os.PathLike | Engine) or not isinstance(candidates, Sequence) or not candidates:
        raise ParameterError("candidates must be a non-empty list of models", name="candidates")
    if isinstance(worst, bool) or not isinstance(worst, int) or worst < 0:
        raise ParameterError(f"worst must be a whole number of at least 0, not {worst!r}", name="worst")
    items = _texts(texts, data, column)
    engine = load_engine(reference)
    ref_name, ref_vocab = engine.name, _vocabulary(engine)
    sequences = [engine.tokenize(text)[: engine.n_ctx] for text in items]
    short = next((i for i, tokens in enumerate(sequences) if len(tokens) < 2), None)
    if short is not None:
        raise ParameterError(f"text {short} is too short to compare on (it needs two tokens)", name="texts")
    ref_scores = _scored(engine, sequences)
    ref_dist = np.concatenate([s.distributions for s in ref_scores if s.distributions is not None])
    ref_top = np.concatenate([s.top_ids for s in ref_scores])
    ref_top_lp = np.concatenate([s.top_logprobs for s in ref_scores])
    ref_lp = np.concatenate([s.logprobs for s in ref_scores])
    where = [(i, p) for i, s in enumerate(ref_scores) for p in range(s.start, s.start + len(s.logprobs))]
    ref_ppl = math.exp(-float(ref_lp.mean()))
    rows, worst_rows = [], []
    for candidate in candidates:
        other = load_engine(candidate)
        if other.n_vocab != ref_dist.shape[1] or _vocabulary(other) != ref_vocab:
            raise ParameterError(
                f"{other.name} has another vocabulary than {ref_name} ({other.n_vocab} vs {ref_dist.shape[1]} "
                "tokens or other token texts): their distributions cannot be compared token by token",
                name="candidates",
                value=other.name,
            )
        scores = _scored(other, sequences)
        dist = np.concatenate([s.distributions for s in scores if s.distributions is not None])
        kl = np.maximum((np.exp(ref_dist) * (ref_dist - dist)).sum(axis=1, dtype=np.float64), 0.0)
        top = np.concatenate([s.top_ids for s in scores])
        top_lp = np.concatenate([s.top_logprobs for s in scores])
        lp = np.concatenate([s.logprobs for s in scores])
        ppl = math.exp(-float(lp.mean()))
        rows.append(
            {
                "model": other.name,
                "path": str(other.path),
                "kl_mean": float(kl.mean()),
                "kl_p99": float(np.quantile(kl, 0.99)),
                "top1_agreement": float((top[:, 0] == ref_top[:, 0]).mean()),
                "ppl": ppl,
                "delta_ppl": ppl - ref_ppl,
                "tokens": len(kl),
            }
        )
        for k in np.argsort(-kl, kind="stable")[:worst]:
            text, position = where[k]
            tokens = sequences[text]
            worst_rows.append(
                {
                    "model": other.name,
                    "text": text,
                    "position": position,
                    "context": other.detokenize(tokens[max(1, position - 8) : position]),
                    "token": other.model.token_text(tokens[position]),
                    "kl": float(kl[k]),
                    "reference_top5": _top(other, ref_top[k], ref_top_lp[k]),
                    "candidate_top5": _top(other, top[k], top_lp[k]),
                }
            )
    columns = ["model", "text", "position", "context", "token", "kl", "reference_top5", "candidate_top5"]
    return Drift(ref_name, pd.DataFrame(rows), pd.DataFrame(worst_rows, columns=columns))


# The variants table ------------------------------------------------------------------------------

VARIANT_COLUMNS = [
    "variant",
    "path",
    "quantization",
    "file_mb",
    "memory_mb",
    "load_s",
    "prompt_tokens_per_s",
    "tokens_per_s",
    "kl_mean",
    "kl_p99",
    "top1_agreement",
    "delta_ppl",
    "score",
]

Task = Callable[[str], float | Mapping[str, float]]


def variants(
    files: Sequence[str | os.PathLike[str]],
    *,
    reference: str | os.PathLike[str] | None = None,
    texts: str | Sequence[str] | None = None,
    data: datasets.DataArg = None,
    column: str = "text",
    task: Task | None = None,
    prompt: str | None = None,
    max_tokens: int = 64,
    experiment: str = "variants",
    store: Any = None,
) -> pd.DataFrame:
    """One row per model file: size, memory, load time, speed, drift against ``reference`` and a task score.

    ``reference`` (default: the first file) is what the others drift from, measured on ``texts``
    or ``data`` (see ``drift``). Each file is loaded fresh (``load_s``: llama.cpp's load, without
    lmbench's one-time file checks; ``memory_mb``: its weights plus its KV cache), warmed up with
    one token, then evaluates ``prompt`` and generates ``max_tokens`` greedy tokens from ``prompt`` (default: the texts
    joined) as a recorded run in ``experiment``: ``prompt_tokens_per_s`` and ``tokens_per_s``. ``task``
    is called with each file's path and returns a score (column ``score``) or several (their
    names as columns), e.g. an accuracy from ``lmbench.choose``.
    """
    if isinstance(files, str | os.PathLike) or not isinstance(files, Sequence) or not files:
        raise ParameterError("files must be a non-empty list of model files or aliases", name="files")
    if task is not None and not callable(task):
        raise ParameterError("task must be a function of a model path that returns a score", name="task")
    paths = list(dict.fromkeys(models.resolve(f) for f in files))
    ref_path = models.resolve(reference) if reference is not None else paths[0]
    if prompt is not None:
        check_text("prompt", prompt)
    found = drift(ref_path, paths, texts=texts, data=data, column=column, worst=0).summary.set_index("path")
    text = prompt if prompt is not None else " ".join(_texts(texts, data, column))
    rows = []
    for path in paths:
        unload(path)
        engine = load_engine(path)
        prompt_tokens = engine.tokenize(text)[: max(1, engine.n_ctx // 2 - max_tokens)]
        asked = engine.detokenize(prompt_tokens[1:]) if len(prompt_tokens) > 1 else text
        # The warm-up makes the KV cache; its own prompt, so the measured one is evaluated whole.
        for words, n, tags in (("Warm up.", 1, ["variants", "warm-up"]), (asked, max_tokens, ["variants"])):
            run = generate(
                words,
                model=engine,
                max_tokens=n,
                temperature=0.0,
                seed=0,
                ignore_eos=True,
                experiment=experiment,
                tags=tags,
                store=store,
            )
        status = engine.scheduler.status()
        memory = llama_cpp.llama_model_size(engine.model.pointer) + status["kv_cache_bytes"]
        facts = found.loc[str(path)]
        row: dict[str, Any] = {
            "variant": models.model_id(path),
            "path": str(path),
            "quantization": models.metadata(path)["quantization"],
            "file_mb": path.stat().st_size / 2**20,
            "memory_mb": memory / 2**20,
            "load_s": engine.load_parts["llama_cpp_s"],
            "prompt_tokens_per_s": (run.prompt_tokens - run.prompt_cached_tokens) / run.ttft_s
            if run.ttft_s
            else math.nan,
            "tokens_per_s": run.tokens_per_s,
            **{name: float(facts[name]) for name in ("kl_mean", "kl_p99", "top1_agreement", "delta_ppl")},
            "score": math.nan,
        }
        if task is not None:
            result = task(str(path))
            row.update({"score": float(result)} if isinstance(result, int | float) else dict(result))
        rows.append(row)
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in VARIANT_COLUMNS]
    return frame.reindex(columns=[*VARIANT_COLUMNS, *extra])


# Columns of the variants table where less is better (everything else: more is better).
LOWER_IS_BETTER = frozenset({"kl_mean", "kl_p99", "delta_ppl", "file_mb", "memory_mb", "load_s"})


def frontier(df: pd.DataFrame, x: str = "tokens_per_s", y: str = "top1_agreement") -> pd.Series:
    """Which rows no other row beats on both ``x`` and ``y`` (the Pareto frontier; ``LOWER_IS_BETTER`` respected)."""
    missing = [c for c in (x, y) if c not in df.columns]
    if missing:
        raise ParameterError(f"the table has no column {missing[0]!r}", name="x" if missing[0] == x else "y")
    signs = np.array([-1.0 if c in LOWER_IS_BETTER else 1.0 for c in (x, y)])
    points = df[[x, y]].to_numpy(dtype=float) * signs  # now more is better on both
    known = ~np.isnan(points).any(axis=1)
    at_least = (points[None, :, :] >= points[:, None, :]).all(axis=2)
    better = (points[None, :, :] > points[:, None, :]).any(axis=2)
    beaten = (at_least & better & known[None, :]).any(axis=1)
    return pd.Series(known & ~beaten, index=df.index, name="on_frontier")
