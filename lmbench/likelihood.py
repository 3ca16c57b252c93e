"""Likelihood evaluation: the model scoring given text instead of generating it.

``loglikelihood`` scores continuations of contexts (the summed log-probability of the continuation,
its token count, whether greedy decoding would have produced it); ``perplexity`` scores whole
texts in rolling windows. Both follow lm-evaluation-harness: a context's trailing whitespace moves
to its continuation, the continuation's tokens are those of ``context + continuation`` after the
context's, and rolling windows of ``window`` tokens predict each token of a text exactly once
(``stride`` new tokens a window; fewer than ``window`` gives later windows more context).

Every pair and every text is recorded as a run of its own kind (``Run.kind``: ``"loglikelihood"``
or ``"perplexity"``) in the run store: the context as the prompt, the scored text as the text, the
numbers as metrics, each token in ``token_logprobs``. So they are re-read, filtered, exported and
compared like any run (``lmbench.runs(kind="perplexity")``), with the model, item and labels.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import llama_cpp
import pandas as pd

from .engine import Engine, TokenScores
from .engine._engine import load_engine
from .errors import ParameterError
from .generation import build_run
from .params import check_text, validate_params
from .run import Labels, Run
from .store import Store, get_store

# The generation parameters recorded with a scoring run: nothing is sampled (greedy is the reference).
SCORING_PARAMS = validate_params({"max_tokens": 1, "temperature": 0.0, "seed": 0})
StoreArg = str | os.PathLike[str] | Store | None
# Contexts evaluated together before their other continuations join (see ``_waves``).
WAVE = 4


@dataclass
class Scored:
    """One (context, continuation) pair as scored: its tokens and the model's view of the continuation."""

    context: str
    continuation: str
    context_tokens: list[int]
    continuation_tokens: list[int]
    scores: TokenScores

    @property
    def logprob(self) -> float:
        return self.scores.total

    @property
    def is_greedy(self) -> bool:
        return self.scores.is_greedy


def prefix_token(engine: Engine) -> int:
    """The token an empty context stands for: BOS, else end of sequence (as lm-evaluation-harness does)."""
    bos = llama_cpp.llama_vocab_bos(engine.vocab)
    return int(bos) if bos >= 0 else int(llama_cpp.llama_vocab_eos(engine.vocab))


def encode_pair(engine: Engine, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """The tokens of a context and of its continuation, the way lm-evaluation-harness splits them."""
    spaces = len(context) - len(context.rstrip())
    if spaces:
        context, continuation = context[:-spaces], context[-spaces:] + continuation
    if not context:
        return [prefix_token(engine)], engine.tokenize(continuation, add_bos=False)
    whole = engine.tokenize(context + continuation)
    context_tokens = engine.tokenize(context)
    return context_tokens, whole[len(context_tokens) :]


def check_pairs(pairs: Any) -> list[tuple[str, str]]:
    """``pairs`` as (context, continuation) strings, else ``ParameterError`` naming the bad one."""
    if isinstance(pairs, str | bytes) or not isinstance(pairs, Sequence):
        raise ParameterError("pairs must be a list of (context, continuation) pairs of strings", name="pairs")
    checked = []
    for i, pair in enumerate(pairs):
        if isinstance(pair, str | bytes) or not isinstance(pair, Sequence) or len(pair) != 2:
            raise ParameterError(f"pairs[{i}] must be a (context, continuation) pair, not {pair!r}", name="pairs")
        context = check_text(f"pairs[{i}] context", pair[0])
        continuation = check_text(f"pairs[{i}] continuation", pair[1])
        if not continuation:
            raise ParameterError(f"pairs[{i}]: the continuation is empty; there is nothing to score", name="pairs")
        checked.append((context, continuation))
    return checked


def score_pairs(engine: Engine, pairs: Sequence[tuple[str, str]], *, top: int = 0) -> list[Scored]:
    """Score checked pairs in one batch (pairs with the same context next to each other share its cells)."""
    encoded = [encode_pair(engine, c, x) for c, x in pairs]
    for (context, continuation), (_, tokens) in zip(pairs, encoded, strict=True):
        if not tokens:
            raise ParameterError(f"the continuation {continuation!r} of {context[-40:]!r} has no tokens", name="pairs")
    order = _waves([encoded[i][0] for i in range(len(pairs))])
    results = engine.score(
        [encoded[i][0] + encoded[i][1] for i in order], start=[len(encoded[i][0]) for i in order], top=top
    )
    scored: list[Scored | None] = [None] * len(pairs)
    for i, result in zip(order, results, strict=True):
        scored[i] = Scored(pairs[i][0], pairs[i][1], encoded[i][0], encoded[i][1], result)
    return [s for s in scored if s is not None]


def _waves(contexts: list[list[int]], width: int = WAVE) -> list[int]:
    """An order for scoring: pairs grouped by context, ``width`` contexts at a time, each wave's first
    pairs before the rest, so the first ones evaluate their contexts together in one decode and the
    rest then take those cells (a pair waits for a context being evaluated that it shares)."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i in sorted(range(len(contexts)), key=lambda i: contexts[i]):
        groups.setdefault(tuple(contexts[i]), []).append(i)
    members = list(groups.values())
    order = []
    for at in range(0, len(members), width):
        wave = members[at : at + width]
        order += [g[0] for g in wave] + [i for g in wave for i in g[1:]]
    return order


def token_entries(engine: Engine, scores: TokenScores) -> list[dict[str, Any]]:
    """Each scored token as ``Run.token_logprobs`` keeps it: id, text, log-probability, greedy, the top tokens."""

    def text(token: int) -> str:
        return engine.piece(token).decode("utf-8", errors="replace")

    entries = []
    for i, token in enumerate(scores.tokens):
        entry: dict[str, Any] = {
            "id": token,
            "token": text(token),
            "logprob": float(scores.logprobs[i]),
            "greedy": bool(scores.greedy[i]),
        }
        if scores.top_ids.shape[1]:
            entry["top"] = [
                {"id": int(t), "token": text(int(t)), "logprob": float(lp)}
                for t, lp in zip(scores.top_ids[i], scores.top_logprobs[i], strict=True)
            ]
        entries.append(entry)
    return entries


def scoring_run(
    engine: Engine,
    kind: str,
    prompt: str,
    text: str,
    *,
    prompt_tokens: int,
    scores: Sequence[TokenScores],
    metrics: dict[str, float],
    labels: Labels,
) -> Run:
    """The run that records one scored text (``scores``: its windows, or its one sequence)."""
    run = build_run(
        engine,
        prompt,
        SCORING_PARAMS,
        text=text,
        finish="stop",
        prompt_tokens=prompt_tokens,
        n_generated=sum(len(s.tokens) for s in scores),
        ttft=None,
        total=sum(s.total_s for s in scores),
        labels=labels,
        kind=kind,
        prompt_cached_tokens=sum(s.cached for s in scores),
        batch_size=max(s.batch_size for s in scores),
        token_logprobs=[entry for s in scores for entry in token_entries(engine, s)],
    )
    run.metrics = metrics
    return run


def pair_metrics(scored: Scored) -> dict[str, float]:
    """The numbers kept with a scored pair: summed log-probability, token count, greedy (1/0), bytes."""
    return {
        "logprob": scored.logprob,
        "tokens": float(len(scored.continuation_tokens)),
        "is_greedy": float(scored.is_greedy),
        "bytes": float(len(scored.continuation.encode("utf-8"))),
    }


def loglikelihood(
    pairs: Sequence[tuple[str, str]],
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    top: int = 0,
    experiment: str | None = None,
    tags: list[str] | None = None,
    store: StoreArg = None,
    source: str = "python",
) -> pd.DataFrame:
    """The log-likelihood of each continuation given its context, recorded as ``"loglikelihood"`` runs.

    One row per pair, in order: ``logprob`` (summed, nats), ``tokens`` (the continuation's),
    ``is_greedy`` (greedy decoding from the context gives exactly the continuation) and the
    ``run_id`` it was recorded under. All pairs are scored in one batch; pairs with the same
    context share its evaluation. ``top`` keeps that many likeliest tokens per position in the
    run's ``token_logprobs``.
    """
    checked = check_pairs(pairs)
    labels = Labels.checked(experiment, tags, source)
    engine = load_engine(model)
    scored = score_pairs(engine, checked, top=top)
    runs = [
        scoring_run(
            engine,
            "loglikelihood",
            s.context,
            s.continuation,
            prompt_tokens=len(s.context_tokens),
            scores=[s.scores],
            metrics=pair_metrics(s),
            labels=labels,
        )
        for s in scored
    ]
    get_store(store).record(runs)
    return pd.DataFrame(
        {
            "context": [s.context for s in scored],
            "continuation": [s.continuation for s in scored],
            "logprob": [s.logprob for s in scored],
            "tokens": [len(s.continuation_tokens) for s in scored],
            "is_greedy": [s.is_greedy for s in scored],
            "run_id": [r.id for r in runs],
        }
    )


def rolling_windows(n: int, window: int, stride: int) -> list[tuple[int, int]]:
    """The windows that predict each of ``n`` tokens once: (first, end) in the sequence prefix + tokens.

    A window feeds the ``window`` tokens before ``end`` and scores the sequence's tokens from
    ``first`` to ``end`` (lm-evaluation-harness's rolling windows with ``context_len = window -
    stride + 1``; the first window scores up to ``window`` tokens after the prefix).
    """
    windows = [(1, min(window, n) + 1)]
    predicted = windows[0][1] - 1
    while predicted < n:
        scored = min(n - predicted, stride)
        end = predicted + scored + 1
        windows.append((end - scored, end))
        predicted += scored
    return windows


@dataclass
class Perplexity:
    """``lmbench.perplexity``'s answer: one row per text (``texts``) and the whole set (``overall``)."""

    texts: pd.DataFrame
    overall: dict[str, float]

    def _repr_html_(self) -> str:
        summary = ", ".join(f"{k} {v:.4g}" for k, v in self.overall.items())
        return f"<div><b>perplexity</b> · {summary}</div>{self.texts.drop(columns=['text']).to_html(index=False)}"


def _normalised(logprob: float, tokens: int, words: int, nbytes: int) -> dict[str, float]:
    """Perplexity per token, word and byte, and bits per byte, from a summed log-probability."""
    return {
        "logprob": logprob,
        "tokens": float(tokens),
        "words": float(words),
        "bytes": float(nbytes),
        "perplexity": math.exp(-logprob / tokens),
        "word_perplexity": math.exp(-logprob / words),
        "byte_perplexity": math.exp(-logprob / nbytes),
        "bits_per_byte": -logprob / nbytes / math.log(2),
    }


def _check_window(name: str, value: Any, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ParameterError(f"{name} must be a whole number from {low} to {high}, not {value!r}", name=name)
    return value


def perplexity(
    texts: str | Sequence[str],
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    window: int | None = None,
    stride: int | None = None,
    experiment: str | None = None,
    tags: list[str] | None = None,
    store: StoreArg = None,
    source: str = "python",
) -> Perplexity:
    """Rolling-window perplexity of each text and of all together, recorded as ``"perplexity"`` runs.

    Each text is scored after the model's BOS token in windows of ``window`` tokens (default: the
    context less one), each scoring ``stride`` new tokens (default: ``window``, disjoint windows as
    lm-evaluation-harness scores them); a smaller stride gives each scored token more context.
    Per text and overall: the summed ``logprob``, ``tokens``, ``words`` and ``bytes``, and the
    perplexity per token, word and byte (lm-evaluation-harness's ``word_perplexity``,
    ``byte_perplexity``, ``bits_per_byte``). ``windows`` lists the (first, end) token range each
    window scored.
    """
    items = [texts] if isinstance(texts, str) else texts
    if isinstance(items, bytes) or not isinstance(items, Sequence) or not items:
        raise ParameterError("texts must be a string or a non-empty list of strings", name="texts")
    checked = [check_text(f"texts[{i}]", t) for i, t in enumerate(items)]
    labels = Labels.checked(experiment, tags, source)
    engine = load_engine(model)
    width = _check_window("window", engine.n_ctx - 1 if window is None else window, 1, engine.n_ctx - 1)
    step = _check_window("stride", width if stride is None else stride, 1, width)
    prefix = prefix_token(engine)
    encoded = [engine.tokenize(text, add_bos=False) for text in checked]
    for i, tokens in enumerate(encoded):
        if not tokens:
            raise ParameterError(f"texts[{i}] has no tokens; there is nothing to score", name="texts")
    sequences, starts, owners, spans = [], [], [], []
    for i, tokens in enumerate(encoded):
        full = [prefix, *tokens]
        for first, end in rolling_windows(len(tokens), width, step):
            begin = max(end - width - 1, 0)
            sequences.append(full[begin:end])
            starts.append(first - begin)
            owners.append(i)
            spans.append((first - 1, end - 1))
    results = engine.score(sequences, start=starts)
    rows, runs = [], []
    for i, text in enumerate(checked):
        mine = [k for k, owner in enumerate(owners) if owner == i]
        scores = [results[k] for k in mine]
        values = _normalised(
            sum(s.total for s in scores), len(encoded[i]), len(re.split(r"\s+", text)), len(text.encode("utf-8"))
        )
        run = scoring_run(
            engine,
            "perplexity",
            "",
            text,
            prompt_tokens=0,
            scores=scores,
            metrics={**values, "window": float(width), "stride": float(step)},
            labels=labels,
        )
        runs.append(run)
        rows.append({"text": text, **values, "windows": [spans[k] for k in mine], "run_id": run.id})
    get_store(store).record(runs)
    frame = pd.DataFrame(rows)
    for column in ("tokens", "words", "bytes"):
        frame[column] = frame[column].astype(int)
    total = frame[["logprob", "tokens", "words", "bytes"]].sum()
    overall = {
        **_normalised(float(total["logprob"]), int(total["tokens"]), int(total["words"]), int(total["bytes"])),
        "texts": float(len(frame)),
    }
    return Perplexity(frame, overall)
