"""Output metrics: a registry of per-run and per-group measures, built-ins registered like any other.

Per-run metrics (``fn(run) -> float``) are stored with each run. Group metrics
(``fn(texts) -> float``) describe the samples of one grid cell across seeds.

Built-ins, one line each (range; which way means "more diverse"):

- ``chars``, ``words``: output length in characters and words (0..; longer is longer).
- ``distinct_1/2/3``: unique word n-grams / all word n-grams (0..1; higher is more diverse).
- ``repetition_rate``: share of word 3-grams that occur more than once in the text (0..1; higher is more repetitive).
- ``mean_logprob``: mean log-probability of the generated tokens (<= 0; lower is more surprising/diverse).
- ``perplexity``: exp(-mean_logprob) (>= 1; higher is more surprising/diverse).
- ``mean_entropy``: mean entropy of the next-token distribution in nats (>= 0; higher is more uncertain).
- ``self_similarity`` (group): mean pairwise similarity of the samples (rapidfuzz ratio, 0..1; lower is more diverse).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import ParameterError
from .run import Run

Kind = Literal["run", "group"]


@dataclass(frozen=True)
class Metric:
    """A named measure of one run (``kind="run"``) or of the texts of one group (``kind="group"``)."""

    name: str
    fn: Callable[[Any], float]
    kind: Kind
    description: str = ""
    default: bool = True  # part of metrics="default" (reference scores and assertions are chosen by need)
    bounds: tuple[float, float] | None = None  # the range every value lies in (plots draw the axis over it)
    label: str = ""  # what a person reads (the panel's Compare tab, tables): "distinct word pairs"


_registry: dict[str, Metric] = {}


def register(
    name: str,
    fn: Callable[[Any], float],
    *,
    kind: Kind = "run",
    description: str = "",
    default: bool = True,
    bounds: tuple[float, float] | None = None,
    label: str = "",
) -> None:
    """Add a metric; ``fn(run) -> float`` for ``kind="run"``, ``fn(texts) -> float`` for ``kind="group"``.

    ``default=False`` leaves it out of ``metrics="default"`` (it is computed when asked for by name);
    ``bounds`` is the range of its values when it has one (``(0, 1)`` for a share); ``label`` its name in
    words (default: the name with spaces).
    """
    if kind not in ("run", "group"):
        raise ParameterError(f"metric kind must be 'run' or 'group', not {kind!r}", name="kind", value=kind)
    text = description or (fn.__doc__ or "").strip().split("\n")[0]
    _registry[name] = Metric(name, fn, kind, text, default, bounds, label or name.replace("_", " "))


def unregister(name: str) -> None:
    """Remove a metric from the registry."""
    _registry.pop(name, None)


def available(kind: Kind | None = None) -> dict[str, Metric]:
    """Registered metrics by name, optionally only one kind."""
    return {n: m for n, m in _registry.items() if kind is None or m.kind == kind}


def select(names: str | Sequence[str] | None, kind: Kind) -> list[Metric]:
    """The metrics a sweep asked for: ``"default"`` (all registered), None (none) or a list of names."""
    if names is None:
        return []
    if names == "default":
        return [m for m in available(kind).values() if m.default]
    wanted = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in wanted if n not in _registry]
    if unknown:
        raise ParameterError(f"unknown metric {unknown[0]!r}; registered metrics: {', '.join(_registry)}")
    return [_registry[n] for n in wanted if _registry[n].kind == kind]


def _safe(metric: Metric, value: Any) -> float:
    try:
        return float(metric.fn(value))
    except Exception as exc:  # noqa: BLE001 - a broken metric must never lose the run
        warnings.warn(f"metric {metric.name!r} failed ({type(exc).__name__}: {exc}); recorded NaN", stacklevel=3)
        return math.nan


def compute(run: Run, metrics: Sequence[Metric] | None = None) -> dict[str, float]:
    """Per-run metric values for ``run`` (the default run metrics unless others are given)."""
    chosen = select("default", "run") if metrics is None else metrics
    return {m.name: _safe(m, run) for m in chosen if m.kind == "run"}


def compute_group(texts: Sequence[str], metrics: Sequence[Metric] | None = None) -> dict[str, float]:
    """Group metric values for the texts of one cell."""
    chosen = select("default", "group") if metrics is None else metrics
    return {m.name: _safe(m, list(texts)) for m in chosen if m.kind == "group"}


def bootstrap(values: np.ndarray, *, rounds: int = 2000, seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean: it stays within the values' own range, so a
    bounded metric's interval never leaves its bounds (NaN with fewer than two values)."""
    values = values[~np.isnan(values)]
    if len(values) < 2:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    means = rng.choice(values, size=(rounds, len(values)), replace=True).mean(axis=1)
    return (float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5)))


def summarize(df: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Mean, 95% interval (``low``, ``high``) and count of each metric per group of rows.

    Intervals are bootstrap intervals of the mean (``bootstrap``). A group metric such as
    ``self_similarity`` has one value per grid cell, repeated on each seed's row of a sweep table:
    it counts once per cell (``n`` is the number of cells, not of seeds).
    """
    keys = [by] if isinstance(by, str) else list(by)
    everything = [*available("run"), *available("group"), "completion_tokens"]
    columns = [c for c in (metrics or everything) if c in df]
    cells = [c for c in ["model", "prompt_name", *df.attrs.get("grid", [])] if c in df]
    group_metrics = set(available("group"))
    rows: dict[Any, dict[tuple[str, str], float]] = {}
    for key, part in df.groupby(keys, dropna=False, sort=True):
        row: dict[tuple[str, str], float] = {}
        for column in columns:
            source = part.drop_duplicates(subset=cells) if column in group_metrics and cells else part
            values = pd.to_numeric(source[column], errors="coerce").to_numpy(dtype=float)
            present = values[~np.isnan(values)]
            low, high = bootstrap(present)
            row[(column, "mean")] = float(present.mean()) if len(present) else math.nan
            row[(column, "low")], row[(column, "high")], row[(column, "n")] = low, high, len(present)
        rows[key if isinstance(key, tuple) else (key,)] = row
    out = pd.DataFrame(list(rows.values()))
    out.columns = pd.MultiIndex.from_tuples(out.columns)
    if len(keys) > 1:
        out.index = pd.MultiIndex.from_tuples(list(rows), names=keys)
    else:
        out.index = pd.Index([k[0] for k in rows], name=keys[0])
    return out


_WORD = re.compile(r"\w+", re.UNICODE)


def words_of(text: str) -> list[str]:
    """Lower-cased word tokens (the unit of the n-gram metrics)."""
    return _WORD.findall(text.lower())


def _ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(text: str, n: int) -> float:
    """Unique word n-grams over all word n-grams (NaN when the text has fewer than n words)."""
    grams = _ngrams(words_of(text), n)
    return len(set(grams)) / len(grams) if grams else math.nan


def repetition_rate(text: str, n: int = 3) -> float:
    """Share of word n-gram occurrences whose n-gram occurs more than once."""
    grams = _ngrams(words_of(text), n)
    if not grams:
        return math.nan
    counts = Counter(grams)
    return sum(c for c in counts.values() if c > 1) / len(grams)


def _token_values(run: Run, key: str) -> list[float]:
    return [t[key] for t in run.token_logprobs or [] if key in t]


def mean_logprob(run: Run) -> float:
    """Mean log-probability of the generated tokens (needs the run's logprobs)."""
    values = _token_values(run, "logprob")
    return float(np.mean(values)) if values else math.nan


def self_similarity(texts: Sequence[str]) -> float:
    """Mean pairwise similarity (rapidfuzz normalized Indel ratio, 0..1) between the texts."""
    from rapidfuzz import fuzz

    pairs = list(itertools.combinations(texts, 2))
    return float(np.mean([fuzz.ratio(a, b) / 100 for a, b in pairs])) if pairs else math.nan


register("chars", lambda run: len(run.text), description="Characters in the output.", label="characters")
register("words", lambda run: len(words_of(run.text)), description="Words in the output.")


def _distinct_of_run(run: Run, n: int) -> float:
    return distinct_n(run.text, n)


for _n in (1, 2, 3):
    register(
        f"distinct_{_n}",
        functools.partial(_distinct_of_run, n=_n),
        description=f"Unique word {_n}-grams / all word {_n}-grams (0..1, higher is more diverse).",
        bounds=(0.0, 1.0),
        label=f"distinct {('', 'words', 'word pairs', 'word triples')[_n]}",
    )
register(
    "repetition_rate",
    lambda run: repetition_rate(run.text),
    description=repetition_rate.__doc__ or "",
    bounds=(0.0, 1.0),
    label="repeated 3-grams",
)
register("mean_logprob", mean_logprob, label="mean log-probability")
register(
    "perplexity",
    lambda run: math.exp(-mean_logprob(run)),
    description="exp(-mean_logprob): how surprised the model is by its own output.",
)
register(
    "mean_entropy",
    lambda run: float(np.mean(values)) if (values := _token_values(run, "entropy")) else math.nan,
    description="Mean entropy (nats) of the next-token distribution.",
    label="mean entropy",
)
register("self_similarity", self_similarity, kind="group", bounds=(0.0, 1.0), label="self-similarity")


def label_of(name: str) -> str:
    """A registered metric's name in words (``"distinct word pairs"`` for ``distinct_2``), else ``name``."""
    metric = _registry.get(name)
    return metric.label if metric is not None and metric.label else name


def bounds_of(name: str) -> tuple[float, float] | None:
    """The range of a registered metric's values, if it has one."""
    metric = _registry.get(name)
    return metric.bounds if metric is not None else None
