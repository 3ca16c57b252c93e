"""Paired comparisons of settings: is A really better than B on the same items, and what got worse since last time.

Two settings are compared on the runs they share: the same item (or prompt) and the same seed
(and the same value of every other grid parameter), so the item's own difficulty cancels out.
``paired`` gives the mean difference with a bootstrap interval, a paired test from
``scipy.stats`` (Wilcoxon signed-rank by default, or a sign-flip permutation test; McNemar's
exact test for pass/fail scores), an effect size and the wins, ties and losses.
``regressions`` compares two experiments (or sweeps) item by item, worst change first, with
both texts; ``lmbench compare-runs`` runs it in CI and exits 1 on a regression. The leaderboard
(``lmbench.scores.leaderboard``) marks the settings indistinguishable from the best with
``versus_best``: paired tests against the best, Holm-corrected.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd

from .errors import ParameterError
from .metrics import bootstrap
from .run import BORDER, MUTED
from .store._store import Store, get_store

Test = Literal["auto", "wilcoxon", "permutation", "mcnemar"]
TESTS = ("auto", "wilcoxon", "permutation", "mcnemar")
# Columns that say which item a run answered (besides the grid parameters of a sweep and the seed).
IDENTITY = ("model", "prompt_name", "system", "item")
_BINARY = ("pass", "tests", "exact_match")


def is_pass_fail(metric: str) -> bool:
    """Whether ``metric`` is a 1/0 pass-fail score (compared with McNemar's test)."""
    return metric in _BINARY or metric.startswith("assert_")


@dataclass(frozen=True)
class Paired:
    """The paired comparison of setting ``a`` against ``b`` on one metric (``difference`` is a minus b)."""

    metric: str
    by: str
    a: Any
    b: Any
    n_pairs: int
    mean_a: float
    mean_b: float
    difference: float
    low: float  # 95% bootstrap interval of the mean difference
    high: float
    test: str
    p_value: float
    effect_size: float
    effect: str  # what effect_size is: cohen_dz (mean difference / its SD) or odds_ratio (wins / losses)
    wins: int  # pairs where a is better
    ties: int
    losses: int
    alpha: float
    on: tuple[str, ...]  # the columns runs were paired on

    @property
    def significant(self) -> bool:
        """Whether the test rejects "no difference" at ``alpha``."""
        return bool(self.p_value < self.alpha)

    def to_dict(self) -> dict[str, Any]:
        """The result as plain values (``significant`` included)."""
        return {**asdict(self), "on": list(self.on), "significant": self.significant}

    def __str__(self) -> str:
        verdict = "significant" if self.significant else "not significant"
        return (
            f"{self.metric}: {self.by}={self.a!r} minus {self.by}={self.b!r} = {self.difference:+.4g} "
            f"[{self.low:+.4g}, {self.high:+.4g}] over {self.n_pairs} pairs; {self.test} p={self.p_value:.3g} "
            f"({verdict} at {self.alpha}); {self.effect} {self.effect_size:.3g}; "
            f"wins/ties/losses {self.wins}/{self.ties}/{self.losses}"
        )

    def _repr_html_(self) -> str:
        colour = "var(--jp-success-color1,#2e7d32)" if self.significant else "var(--jp-content-font-color2,#666)"
        return (
            f"<div class='lmbench-paired' style='font-family:sans-serif;{BORDER};border-radius:6px;padding:6px 10px'>"
            f"<b style='color:{colour}'>{'significant' if self.significant else 'not significant'}</b> "
            f"{html.escape(str(self))}<div style='{MUTED};font-size:85%'>paired on "
            f"{html.escape(', '.join(self.on))}</div></div>"
        )


def with_coords(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with its runs' sweep coordinates (item, grid parameters) as columns where it lacks them, as
    ``lmbench.runs()`` returns them inside ``sweep_coords``, and the coordinates named in ``attrs["grid"]``."""
    if "sweep_coords" not in df or not len(df):
        return df
    coords = pd.DataFrame([c if isinstance(c, dict) else {} for c in df["sweep_coords"]], index=df.index)
    out = df.copy()
    for column in coords.columns:
        if column not in out:
            out[column] = coords[column]
    named = [c for c in coords.columns if c not in ("model", "prompt_name", "seed")]
    out.attrs["grid"] = list(dict.fromkeys([*df.attrs.get("grid", []), *named]))
    return out


def pair_keys(df: pd.DataFrame, exclude: Sequence[str] = ()) -> list[str]:
    """The columns that say two runs answered the same thing: item (or prompt), grid values, seed."""
    wanted = [*IDENTITY, *df.attrs.get("grid", [])]
    keys = list(dict.fromkeys(c for c in wanted if c in df and c not in exclude and df[c].notna().any()))
    if not {"prompt_name", "item"} & set(keys) and "prompt" in df and "prompt" not in exclude:
        keys.append("prompt")
    if "seed" in df and "seed" not in exclude:
        keys.append("seed")
    return keys


def _checked_metric(df: pd.DataFrame, metric: str) -> None:
    if not isinstance(metric, str) or metric not in df:
        shown = ", ".join(map(str, df.columns))
        raise ParameterError(f"no column {metric!r} to compare; score the runs first; columns: {shown}", name="metric")


def _check_test(test: str) -> None:
    if test not in TESTS:
        raise ParameterError(f"test must be one of {', '.join(TESTS)}, not {test!r}", name="test", value=test)


def _check_alpha(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float) or not 0 < alpha < 1:
        raise ParameterError(f"alpha must be a number between 0 and 1, not {alpha!r}", name="alpha", value=alpha)


def _unique(frame: pd.DataFrame, on: list[str], side: str) -> None:
    if frame.duplicated(on).any():
        raise ParameterError(
            f"{side} has more than one run for the same {', '.join(on)}: pass on=[...] with the columns that "
            "tell them apart",
            name="on",
        )


def _matched(
    frame_a: pd.DataFrame, frame_b: pd.DataFrame, metric: str, on: list[str], sides: tuple[str, str]
) -> pd.DataFrame:
    """One row per pair (the columns of both sides, suffixed ``_a`` and ``_b``), pairs with a value on both sides."""
    if not on:
        raise ParameterError("no column to pair runs on (item, prompt, seed): pass on=[...]", name="on")
    missing = [c for c in on if c not in frame_a or c not in frame_b]
    if missing:
        raise ParameterError(f"cannot pair on {missing[0]!r}: not a column of both sides", name="on")
    _unique(frame_a, on, sides[0])
    _unique(frame_b, on, sides[1])
    kept = list(dict.fromkeys([*on, metric, *(c for c in ("text", "id") if c in frame_a and c in frame_b)]))
    pairs = frame_a[kept].merge(frame_b[kept], on=on, suffixes=("_a", "_b"))
    values_a = pd.to_numeric(pairs[f"{metric}_a"], errors="coerce")
    values_b = pd.to_numeric(pairs[f"{metric}_b"], errors="coerce")
    return pairs[values_a.notna() & values_b.notna()].reset_index(drop=True)


def _test(
    a: np.ndarray, b: np.ndarray, test: str, metric: str, higher_is_better: bool, seed: int
) -> tuple[str, float, float, str]:
    """The test's name, its p-value, the effect size and what the effect size is."""
    from scipy import stats  # on first use: ``import lmbench`` stays quick

    if test == "auto":
        test = "mcnemar" if is_pass_fail(metric) else "wilcoxon"
    d = a - b
    if test == "mcnemar":
        if not np.isin(np.concatenate([a, b]), (0.0, 1.0)).all():
            raise ParameterError(f"McNemar's test needs 1/0 pass-fail values; {metric!r} has others", name="test")
        up, down = int(((a == 1) & (b == 0)).sum()), int(((a == 0) & (b == 1)).sum())
        p = 1.0 if up + down == 0 else float(stats.binomtest(up, up + down, 0.5).pvalue)  # exact McNemar
        wins, losses = (up, down) if higher_is_better else (down, up)
        ratio = math.nan if wins + losses == 0 else (math.inf if losses == 0 else wins / losses)
        return "mcnemar", p, ratio, "odds_ratio"
    if not d.any():  # every pair tied: nothing to test
        return test, 1.0, 0.0, "cohen_dz"
    spread = float(np.std(d, ddof=1)) if len(d) > 1 else 0.0
    effect = float(np.mean(d)) / spread if spread > 0 else math.nan
    if test == "wilcoxon":
        p = float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    else:
        result = stats.permutation_test(
            (d,), np.mean, permutation_type="samples", n_resamples=9999, random_state=seed, vectorized=True
        )
        p = float(result.pvalue)
    return test, p, effect, "cohen_dz"


def compare_frames(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    metric: str,
    *,
    on: Sequence[str],
    by: str = "",
    a: Any = "a",
    b: Any = "b",
    test: str = "auto",
    alpha: float = 0.05,
    higher_is_better: bool = True,
    seed: int = 0,
) -> Paired:
    """``paired`` for two given tables of runs (the core every paired comparison goes through)."""
    _check_test(test)
    _check_alpha(alpha)
    keys = list(on)
    pairs = _matched(frame_a, frame_b, metric, keys, (f"{by}={a!r}", f"{by}={b!r}"))
    if not len(pairs):
        raise ParameterError(f"no pairs: the two sides share no {', '.join(keys)} with a {metric} value", name="on")
    values_a = pairs[f"{metric}_a"].to_numpy(dtype=float)
    values_b = pairs[f"{metric}_b"].to_numpy(dtype=float)
    name, p, effect, effect_kind = _test(values_a, values_b, test, metric, higher_is_better, seed)
    d = values_a - values_b
    better = d > 0 if higher_is_better else d < 0
    worse = d < 0 if higher_is_better else d > 0
    low, high = bootstrap(d, seed=seed)
    return Paired(
        metric=metric,
        by=by,
        a=a,
        b=b,
        n_pairs=len(d),
        mean_a=float(values_a.mean()),
        mean_b=float(values_b.mean()),
        difference=float(d.mean()),
        low=low,
        high=high,
        test=name,
        p_value=p,
        effect_size=effect,
        effect=effect_kind,
        wins=int(better.sum()),
        ties=int((d == 0).sum()),
        losses=int(worse.sum()),
        alpha=float(alpha),
        on=tuple(keys),
    )


def _side(df: pd.DataFrame, by: str, value: Any) -> pd.DataFrame:
    part = df[df[by] == value]
    if not len(part):
        values = ", ".join(map(repr, pd.unique(df[by].dropna()).tolist()))
        raise ParameterError(f"no runs with {by}={value!r}; its values: {values}", name=by, value=value)
    return part


def paired(
    df: pd.DataFrame,
    metric: str,
    *,
    by: str,
    a: Any,
    b: Any,
    on: Sequence[str] | None = None,
    test: Test = "auto",
    alpha: float = 0.05,
    higher_is_better: bool = True,
    seed: int = 0,
) -> Paired:
    """Compare the runs with ``by == a`` against those with ``by == b`` on ``metric``, pair by pair.

    Runs are paired on ``on`` (by default the item or prompt, every other grid parameter and the
    seed). ``test="auto"`` is Wilcoxon's signed-rank test (``scipy.stats.wilcoxon``), or McNemar's
    exact test for pass/fail scores (``pass``, ``assert_*``, ``exact_match``); ``"permutation"``
    is a sign-flip permutation test of the mean difference. ``higher_is_better=False`` for
    metrics such as ``perplexity`` (it decides wins and losses, not the sign of ``difference``).
    """
    if not isinstance(df, pd.DataFrame):
        raise ParameterError(f"paired needs a runs table (a DataFrame), not {type(df).__name__}", name="df")
    frame = with_coords(df)
    if not isinstance(by, str) or by not in frame:
        raise ParameterError(f"cannot compare by {by!r}: not a column", name="by")
    _checked_metric(frame, metric)
    keys = list(on) if on is not None else pair_keys(frame, exclude=[by])
    return compare_frames(
        _side(frame, by, a),
        _side(frame, by, b),
        metric,
        on=keys,
        by=by,
        a=a,
        b=b,
        test=test,
        alpha=alpha,
        higher_is_better=higher_is_better,
        seed=seed,
    )


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of p-values (controls the family-wise error rate; NaN stays NaN)."""
    values = np.asarray(p_values, dtype=float)
    adjusted = np.full(len(values), math.nan)
    present = np.flatnonzero(~np.isnan(values))
    order = present[np.argsort(values[present], kind="stable")]
    m, running = len(order), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (m - rank) * values[index]))
        adjusted[index] = running
    return adjusted.tolist()


def versus_best(
    df: pd.DataFrame, table: pd.DataFrame, keys: Sequence[str], metric: str, *, alpha: float = 0.05
) -> pd.DataFrame:
    """The leaderboard ``table`` (best row first, one row per value of ``keys``) with each setting's paired
    test against the best on ``metric``, Holm-corrected, and whether it is indistinguishable from the best.

    A setting whose runs do not pair with the best's (other items, other seeds) gets no p-value.
    """
    frame = with_coords(df)
    column, tied = f"{metric} p vs best (Holm)", "tied with best"
    out = table.copy()
    if not len(out) or metric not in frame:
        return out
    key_list = list(keys)
    groups = {k if isinstance(k, tuple) else (k,): g for k, g in frame.groupby(key_list, dropna=False, sort=False)}
    rows = [tuple(row) for row in out[key_list].itertuples(index=False)]
    on = pair_keys(frame, exclude=key_list)
    best = groups.get(rows[0])
    raw: list[float] = [math.nan]
    for row in rows[1:]:
        other = groups.get(row)  # a key holding NaN finds no group
        try:
            p = math.nan if best is None or other is None else compare_frames(best, other, metric, on=on).p_value
        except ParameterError:  # nothing to pair with the best
            p = math.nan
        raw.append(p)
    adjusted = [math.nan, *holm(raw[1:])]
    out[column] = adjusted
    out[tied] = pd.array([True, *(None if math.isnan(p) else bool(p >= alpha) for p in adjusted[1:])], dtype="boolean")
    test = "McNemar's exact test" if is_pass_fail(metric) else "Wilcoxon signed-rank test"
    out.attrs["note"] = (
        f"'{tied}': a paired {test} of {metric} against the best setting (pairs on {', '.join(on) or 'nothing'}), "
        f"p-values Holm-corrected over {len(rows) - 1} comparisons, alpha {alpha}"
    )
    return out


# Regressions between two experiments ----------------------------------------------------------------

Side = pd.DataFrame | str


def _runs_of(side: Side, store: Store, name: str) -> pd.DataFrame:
    """A side given as a runs table, or an experiment name or sweep id in the store."""
    if isinstance(side, pd.DataFrame):
        return side
    if not isinstance(side, str) or not side:
        raise ParameterError(f"{name}: give a runs table, an experiment name or a sweep id, not {side!r}", name=name)
    frame = store.runs(side)
    if not len(frame):
        frame = store.runs(sweep_id=side)
    if not len(frame):
        raise ParameterError(f"no runs in experiment or sweep {side!r} in {store.path}", name=name, value=side)
    return frame


@dataclass
class Regressions:
    """What changed between two experiments over the same items: one row per pair, worst change first."""

    metric: str
    items: pd.DataFrame  # the pairing columns, before, after, change (after - before), verdict, both texts
    summary: Paired  # after against before (``difference`` is after minus before)
    higher_is_better: bool = True

    @property
    def worse(self) -> pd.DataFrame:
        return self.items[self.items["verdict"] == "worse"].reset_index(drop=True)

    @property
    def better(self) -> pd.DataFrame:
        return self.items[self.items["verdict"] == "better"].reset_index(drop=True)

    def failed(self, fail_on: str = "significant", min_change: float = 0.0) -> bool:
        """Whether this is a regression: ``"significant"`` (after is worse and the paired test says so),
        ``"any"`` (some item got worse by more than ``min_change``), or ``"none"`` (never)."""
        if fail_on == "significant":
            s = self.summary  # after minus before
            worse = s.difference < 0 if self.higher_is_better else s.difference > 0
            return s.significant and worse and abs(s.difference) > min_change
        if fail_on == "any":
            return bool((self.items["change"].abs()[self.items["verdict"] == "worse"] > min_change).any())
        if fail_on == "none":
            return False
        raise ParameterError(f"fail_on must be significant, any or none, not {fail_on!r}", name="fail_on")

    def _repr_html_(self) -> str:
        rows = []
        for _, row in pd.concat([self.worse, self.better]).iterrows():
            colour = "#b00020" if row["verdict"] == "worse" else "#2e7d32"
            rows.append(
                f"<tr><td style='{BORDER};padding:4px;color:{colour}'>{row['change']:+.3g}</td>"
                f"<td style='{BORDER};padding:4px;white-space:pre-wrap'>{html.escape(str(row['text_before']))}</td>"
                f"<td style='{BORDER};padding:4px;white-space:pre-wrap'>{html.escape(str(row['text_after']))}</td></tr>"
            )
        return (
            f"{self.summary._repr_html_()}<div style='{MUTED}'>{len(self.worse)} worse, {len(self.better)} better, "
            f"{len(self.items) - len(self.worse) - len(self.better)} unchanged</div>"
            "<table class='lmbench-regressions' style='border-collapse:collapse;width:100%'><thead><tr>"
            f"<th>{html.escape(self.metric)} change</th><th>before</th><th>after</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
        )


def regressions(
    before: Side,
    after: Side,
    metric: str,
    *,
    on: Sequence[str] | None = None,
    higher_is_better: bool = True,
    test: Test = "auto",
    alpha: float = 0.05,
    store: str | os.PathLike[str] | Store | None = None,
) -> Regressions:
    """The items that got worse (and better) from ``before`` to ``after``, ranked by the change.

    Each side is a runs table (a sweep's result, ``lmbench.runs(...)``) or an experiment name or
    sweep id in the store. Runs are paired on ``on`` (by default the item or prompt, the grid
    parameters both sides share with the same values, and the seed); ``summary`` is the paired
    test of after against before.
    """
    target = get_store(store)
    frame_before = with_coords(_runs_of(before, target, "before"))
    frame_after = with_coords(_runs_of(after, target, "after"))
    for frame in (frame_before, frame_after):
        _checked_metric(frame, metric)
    if on is None:
        keys = [k for k in pair_keys(frame_before, exclude=["model"]) if k in pair_keys(frame_after, exclude=["model"])]
        keys = [k for k in keys if k in ("seed", *IDENTITY, "prompt") or _same_values(frame_before, frame_after, k)]
    else:
        keys = list(on)
    summary = compare_frames(
        frame_after,
        frame_before,
        metric,
        on=keys,
        by="run",
        a="after",
        b="before",
        test=test,
        alpha=alpha,
        higher_is_better=higher_is_better,
    )
    pairs = _matched(frame_before, frame_after, metric, keys, ("before", "after"))
    change = pairs[f"{metric}_b"].astype(float) - pairs[f"{metric}_a"].astype(float)
    signed = change if higher_is_better else -change
    items = pairs[keys].copy()
    items["before"] = pairs[f"{metric}_a"].astype(float)
    items["after"] = pairs[f"{metric}_b"].astype(float)
    items["change"] = change
    items["verdict"] = np.select([signed < 0, signed > 0], ["worse", "better"], "same")
    for column, side in (("text", "_a"), ("text", "_b"), ("id", "_a"), ("id", "_b")):
        if column + side in pairs:
            items[f"{column}_{'before' if side == '_a' else 'after'}"] = pairs[column + side]
    items = items.assign(_rank=signed).sort_values("_rank", kind="stable").drop(columns="_rank")
    return Regressions(metric, items.reset_index(drop=True), summary, higher_is_better)


def _same_values(a: pd.DataFrame, b: pd.DataFrame, column: str) -> bool:
    return set(a[column].dropna().unique()) == set(b[column].dropna().unique())
