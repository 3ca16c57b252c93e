"""Pairwise human judgement as a ranking: which pairs to show, Bradley-Terry scores with ties, agreement.

A vote compares two runs of the same item and seed that differ in one setting (``by``: a
temperature, a model, a template). The scores are Bradley-Terry strengths with ties by
Davidson's model (1970): with strengths ``p_i = exp(s_i)`` and a tie parameter ``nu``,

    P(i beats j) = p_i / (p_i + p_j + nu * sqrt(p_i p_j)),   P(tie) = nu * sqrt(p_i p_j) / (same),

fitted by maximum likelihood with ``scipy.optimize`` (a weak normal prior on the strengths keeps a
setting that never lost finite). "Both bad" counts as a tie; skips do not count. Intervals are
percentile bootstrap intervals over the votes. ``Pairing`` picks the next pair to show: first it
covers every pair of settings, then favours close and little-compared pairs, and it says it is
done when every interval is narrower than ``precision`` or the budget is spent.
"""

from __future__ import annotations

import hashlib
import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import optimize, stats

from .errors import ParameterError
from .store._store import Store, get_store

if TYPE_CHECKING:
    import plotly.graph_objects as go

# Which way a pairwise verdict counts: 1 for run_a, 0 for run_b, 0.5 a tie; skips are left out.
OUTCOMES = {"a": 1.0, "b": 0.0, "tie": 0.5, "bad": 0.5}
PRIOR_SD = 3.0  # a normal prior on log-strengths: weak, but finite for a setting that never lost
DEFAULT_PRECISION = 1.0  # widest 95% interval (log-strength) at which a ranking counts as settled


def _setting(df: pd.DataFrame, by: str) -> pd.Series:
    """The ``by`` column of the runs, checked: it exists and holds at least two distinct scalar settings."""
    if not isinstance(by, str) or by not in df:
        raise ParameterError(
            f"cannot compare by {by!r}: not a column; columns: {', '.join(map(str, df.columns))}", name="by", value=by
        )
    values = df[by]
    if not all(isinstance(v, Hashable) for v in values):
        raise ParameterError(f"column {by!r} holds lists or dicts: compare by a column of single values", name="by")
    if values.nunique(dropna=False) < 2:
        raise ParameterError(f"column {by!r} has fewer than two settings to compare", name="by", value=by)
    return values


def _item_key(run: pd.Series) -> str:
    """What makes two runs comparable: the same data-set item (else the same prompt) and the same seed."""
    item = run.get("item")
    ident = item.get("id") if isinstance(item, dict) else None
    return f"{ident if ident is not None else run['prompt']}\x00{run['seed']}"


def _votes(ratings: pd.DataFrame, setting_of: dict[str, Any]) -> pd.DataFrame:
    """Pairwise verdicts between runs of ``setting_of`` as (setting a, setting b, outcome for a) rows."""
    pairs = ratings[(ratings.kind == "pairwise") & ratings.verdict.isin(list(OUTCOMES))]
    pairs = pairs[pairs.run_a.isin(setting_of) & pairs.run_b.isin(setting_of)]
    frame = pd.DataFrame(
        {
            "a": pairs.run_a.map(setting_of),
            "b": pairs.run_b.map(setting_of),
            "outcome": pairs.verdict.map(OUTCOMES).astype(float),
            "rater": pairs.rater,
        }
    )
    return frame[frame.a != frame.b].reset_index(drop=True)


def _neg_log_likelihood(params: np.ndarray, i: np.ndarray, j: np.ndarray, outcome: np.ndarray) -> tuple[float, Any]:
    """Davidson's negative log-likelihood (with the prior) and its gradient; the last parameter is log(nu)."""
    strengths, log_nu = params[:-1], params[-1]
    si, sj = strengths[i], strengths[j]
    terms = np.stack([si, sj, log_nu + (si + sj) / 2])
    norm = np.logaddexp.reduce(terms, axis=0)
    win, loss, tie = outcome == 1.0, outcome == 0.0, outcome == 0.5
    ll = np.where(win, si, 0.0) + np.where(loss, sj, 0.0) + np.where(tie, terms[2], 0.0) - norm
    share = np.exp(terms - norm)  # each term's share of the normaliser
    d_si = win + tie / 2 - (share[0] + share[2] / 2)
    d_sj = loss + tie / 2 - (share[1] + share[2] / 2)
    grad = np.zeros_like(params)
    np.add.at(grad, i, -d_si)
    np.add.at(grad, j, -d_sj)
    grad[-1] = -(tie - share[2]).sum()
    grad[:-1] += strengths / PRIOR_SD**2
    return float(-ll.sum() + (strengths**2).sum() / (2 * PRIOR_SD**2)), grad


def _fit(n: int, i: np.ndarray, j: np.ndarray, outcome: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """Centred log-strengths of ``n`` settings and log(nu), the tie parameter, last (BFGS: L-BFGS-B's
    set-up costs ten times more on problems this small)."""
    if start is None:
        start = np.zeros(n + 1)
        start[-1] = -1.0
    result = optimize.minimize(_neg_log_likelihood, start, args=(i, j, outcome), jac=True, method="BFGS")
    params = np.asarray(result.x, dtype=float)
    params[:-1] -= params[:-1].mean()
    return params


def _wald_widths(params: np.ndarray, i: np.ndarray, j: np.ndarray, outcome: np.ndarray) -> np.ndarray:
    """Widths of the 95% normal (Laplace) intervals of the centred strengths: cheap enough to check after every
    vote whether the ranking is settled (the reported intervals are bootstrap intervals)."""
    step = 1e-5
    hessian = np.empty((len(params), len(params)))
    for k in range(len(params)):
        up, down = params.copy(), params.copy()
        up[k] += step
        down[k] -= step
        hessian[k] = (_neg_log_likelihood(up, i, j, outcome)[1] - _neg_log_likelihood(down, i, j, outcome)[1]) / (
            2 * step
        )
    covariance = np.linalg.pinv((hessian + hessian.T) / 2)[:-1, :-1]
    centre = np.eye(len(covariance)) - 1 / len(covariance)
    return 2 * 1.96 * np.sqrt(np.clip(np.diag(centre @ covariance @ centre.T), 0, None))


def bradley_terry(
    votes: pd.DataFrame, settings: Sequence[Any] | None = None, *, rounds: int = 200, seed: int = 0
) -> pd.DataFrame:
    """Davidson-Bradley-Terry scores of settings from votes (columns ``a``, ``b``, ``outcome`` for ``a``).

    One row per setting, best first: ``score`` (centred log-strength), ``low``/``high`` (95%
    bootstrap interval), ``win_rate`` (ties as half), ``n`` (votes it took part in), ``rank``.
    ``attrs["tie_strength"]`` is Davidson's ``nu``.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 0:
        raise ParameterError(f"rounds must be a whole number >= 0, not {rounds!r}", name="rounds", value=rounds)
    names = list(settings) if settings is not None else sorted({*votes.a, *votes.b}, key=str)
    index = {name: k for k, name in enumerate(names)}
    i = votes.a.map(index).to_numpy(dtype=int)
    j = votes.b.map(index).to_numpy(dtype=int)
    outcome = votes.outcome.to_numpy(dtype=float)
    fitted = _fit(len(names), i, j, outcome)
    rng = np.random.default_rng(seed)
    draws = np.empty((rounds, len(names)))
    for r in range(rounds):
        pick = rng.integers(0, len(outcome), len(outcome))
        draws[r] = _fit(len(names), i[pick], j[pick], outcome[pick], fitted)[:-1]
    wins = np.bincount(i, outcome, len(names)) + np.bincount(j, 1 - outcome, len(names))
    counts = np.bincount(i, minlength=len(names)) + np.bincount(j, minlength=len(names))
    table = pd.DataFrame(
        {
            "setting": names,
            "score": fitted[:-1],
            "low": np.percentile(draws, 2.5, axis=0) if rounds and len(outcome) else np.nan,
            "high": np.percentile(draws, 97.5, axis=0) if rounds and len(outcome) else np.nan,
            "win_rate": np.divide(wins, counts, out=np.full(len(names), np.nan), where=counts > 0),
            "n": counts,
        }
    )
    table = table.sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    table["rank"] = np.arange(1, len(table) + 1)
    table.attrs["tie_strength"] = float(math.exp(fitted[-1]))
    table.attrs["votes"] = len(outcome)
    return table


def arena_scores(
    df: pd.DataFrame,
    by: str = "temperature",
    *,
    ratings: pd.DataFrame | None = None,
    rounds: int = 200,
    seed: int = 0,
    store: Store | str | None = None,
) -> pd.DataFrame:
    """Rank the settings of ``by`` in the runs ``df`` by the pairwise votes on them (see ``bradley_terry``).

    ``ratings`` defaults to every vote in the store; only votes between runs of ``df`` count.
    The ``setting`` column is named after ``by``.
    """
    values = _setting(df, by)
    setting_of = dict(zip(df["id"], values, strict=True))
    votes = _votes(get_store(store).ratings("pairwise") if ratings is None else ratings, setting_of)
    if votes.empty:
        raise ParameterError(f"no pairwise votes between runs of this table that differ in {by!r}: vote first")
    settings = sorted(set(values), key=lambda v: (str(type(v)), v))
    table = bradley_terry(votes, settings, rounds=rounds, seed=seed).rename(columns={"setting": by})
    table.attrs["by"] = by
    return table


def plot_arena(scores: pd.DataFrame) -> go.Figure:
    """The settings' scores with their 95% intervals, best on top (a forest plot)."""
    import plotly.graph_objects as go

    by = scores.attrs.get("by", scores.columns[0])
    ordered = scores.iloc[::-1]
    labels = [str(v) for v in ordered[by]]
    figure = go.Figure(
        go.Scatter(
            x=ordered["score"],
            y=labels,
            mode="markers",
            error_x={
                "type": "data",
                "symmetric": False,
                "array": (ordered["high"] - ordered["score"]).to_numpy(),
                "arrayminus": (ordered["score"] - ordered["low"]).to_numpy(),
            },
            customdata=np.stack([ordered["win_rate"], ordered["n"]], axis=-1),
            hovertemplate="%{y}: %{x:.2f}<br>win rate %{customdata[0]:.0%} of %{customdata[1]} votes<extra></extra>",
        )
    )
    figure.update_layout(
        title=f"Human preference by {by} ({scores.attrs.get('votes', '?')} votes)",
        xaxis_title="Bradley-Terry score (log-strength, 95% bootstrap interval)",
        yaxis_title=by,
        yaxis={"type": "category"},
        template="plotly_white",
        height=max(260, 60 * len(scores) + 120),
    )
    return figure


def cohen_kappa(first: Sequence[Any], second: Sequence[Any]) -> float:
    """Cohen's kappa of two raters' labels of the same things (1 agree fully, 0 as chance; NaN if undefined)."""
    if len(first) != len(second):
        raise ParameterError("kappa needs the two raters' labels of the same things, in the same order")
    if not len(first):
        return math.nan
    labels = sorted({*first, *second}, key=str)
    index = {label: k for k, label in enumerate(labels)}
    table = np.zeros((len(labels), len(labels)))
    np.add.at(table, ([index[v] for v in first], [index[v] for v in second]), 1)
    table /= table.sum()
    observed = np.trace(table)
    expected = float(table.sum(axis=1) @ table.sum(axis=0))
    return math.nan if expected == 1.0 else float((observed - expected) / (1 - expected))


def _canonical(ratings: pd.DataFrame) -> pd.DataFrame:
    """Decisive and tied pairwise votes as (pair of runs in a fixed order, label, rater): swaps made equal."""
    pairs = ratings[(ratings.kind == "pairwise") & ratings.verdict.isin(list(OUTCOMES))]
    swap = pairs.run_a > pairs.run_b
    outcome = pairs.verdict.map(OUTCOMES).where(~swap, 1 - pairs.verdict.map(OUTCOMES))
    first = pairs.run_a.where(~swap, pairs.run_b)
    second = pairs.run_b.where(~swap, pairs.run_a)
    label = outcome.map({1.0: "first", 0.0: "second", 0.5: "tie"})
    return pd.DataFrame({"pair": first + "|" + second, "label": label, "rater": pairs.rater})


def rater_agreement(ratings: pd.DataFrame | None = None, *, store: Store | str | None = None) -> pd.DataFrame:
    """Cohen's kappa for every two raters over the pairs both voted on (first / second better / tie).

    A rater's latest vote on a pair counts. One row per two raters: ``n`` shared pairs, ``agreement``
    (share of equal verdicts) and ``kappa``.
    """
    frame = _canonical(get_store(store).ratings("pairwise") if ratings is None else ratings)
    latest = frame.groupby(["rater", "pair"]).label.last().unstack("rater")
    rows = []
    for one, other in itertools.combinations(sorted(latest.columns), 2):
        both = latest[[one, other]].dropna()
        rows.append(
            {
                "rater": one,
                "other": other,
                "n": len(both),
                "agreement": float((both[one] == both[other]).mean()) if len(both) else math.nan,
                "kappa": cohen_kappa(list(both[one]), list(both[other])),
            }
        )
    return pd.DataFrame(rows, columns=["rater", "other", "n", "agreement", "kappa"])


def judge_agreement(
    df: pd.DataFrame,
    metric: str,
    by: str | None = None,
    *,
    ratings: pd.DataFrame | None = None,
    store: Store | str | None = None,
) -> dict[str, float]:
    """How often people agree with an automatic score (``metric``: ``judge``, ``rougeL``, ``rating_score``...).

    ``votes``/``agreement``: of the decisive pairwise votes between runs of ``df`` whose ``metric``
    differs, the share where the preferred run scores higher. With ``by``, also Kendall's tau (and its
    p-value) between the human ranking of the settings (``arena_scores``) and their mean ``metric``.
    """
    if metric not in df:
        raise ParameterError(f"no column {metric!r} to compare with; score the runs first", name="metric")
    votes = get_store(store).ratings("pairwise") if ratings is None else ratings
    value = dict(zip(df["id"], df[metric].astype(float), strict=True))
    decisive = votes[votes.verdict.isin(["a", "b"]) & votes.run_a.isin(value) & votes.run_b.isin(value)]
    preferred = np.where(decisive.verdict == "a", decisive.run_a, decisive.run_b)
    other = np.where(decisive.verdict == "a", decisive.run_b, decisive.run_a)
    gap = np.array([value[p] - value[o] for p, o in zip(preferred, other, strict=True)], dtype=float)
    gap = gap[~np.isnan(gap) & (gap != 0)]
    result = {"votes": float(len(gap)), "agreement": float((gap > 0).mean()) if len(gap) else math.nan}
    if by is not None:
        scores = arena_scores(df, by, ratings=votes, rounds=0, store=store)
        means = df.groupby(by)[metric].mean()
        tau = stats.kendalltau(scores["score"], scores[by].map(means))
        result["kendall_tau"], result["p_value"] = float(tau.statistic), float(tau.pvalue)
    return result


@dataclass(frozen=True)
class Pair:
    """Two runs to show: same item and seed, different settings."""

    run_a: str
    run_b: str
    setting_a: Any
    setting_b: Any


class Pairing:
    """Which pair of runs to show next, so that few votes rank the settings of ``by``.

    Every pair of settings is shown once before any twice; after that the pair whose outcome is
    least certain under the current fit (close scores), and least compared, comes first, with a
    random item each time. ``done`` once ``budget`` votes are in, no unseen pair of runs is left,
    or every setting's 95% interval is narrower than ``precision``.
    """

    def __init__(
        self,
        df: pd.DataFrame,
        by: str,
        *,
        budget: int | None = None,
        precision: float = DEFAULT_PRECISION,
        seed: int | None = None,
    ) -> None:
        values = _setting(df, by)
        self.by = by
        self.settings = sorted(set(values), key=lambda v: (str(type(v)), v))
        self.setting_of: dict[str, Any] = dict(zip(df["id"], values, strict=True))
        groups: dict[tuple[str, Any], list[str]] = {}
        for (_, run), setting in zip(df.iterrows(), values, strict=True):
            groups.setdefault((_item_key(run), setting), []).append(str(run["id"]))
        self._candidates: dict[tuple[Any, Any], list[tuple[str, str]]] = {}
        for a, b in itertools.combinations(self.settings, 2):
            found = [
                (ra, rb)
                for (key, setting), ids in groups.items()
                if setting == a
                for ra in ids
                for rb in groups.get((key, b), [])
            ]
            if found:
                self._candidates[(a, b)] = found
        if not self._candidates:
            raise ParameterError(
                f"no two runs of the same item and seed differ in {by!r}: sweep {by} over the same items and seeds",
                name="by",
            )
        available = sum(len(v) for v in self._candidates.values())
        self.budget = min(available, budget if budget is not None else 10 * len(self._candidates))
        if self.budget < 1:
            raise ParameterError(f"budget must be at least 1, not {budget}", name="budget", value=budget)
        self.precision = precision
        self.session = hashlib.sha256(f"{by}\x00{','.join(sorted(self.setting_of))}".encode()).hexdigest()[:16]
        self._rng = np.random.default_rng(seed)

    def progress(self, ratings: pd.DataFrame) -> int:
        """How many of this session's pairs are voted on (skips included: they were seen)."""
        return int(self._mine(ratings).shape[0])

    def _mine(self, ratings: pd.DataFrame) -> pd.DataFrame:
        return ratings[(ratings.kind == "pairwise") & (ratings.session == self.session)]

    def scores(self, ratings: pd.DataFrame, rounds: int = 100) -> pd.DataFrame | None:
        """The current ranking from this session's votes (None before the first counted vote)."""
        votes = _votes(self._mine(ratings), self.setting_of)
        return None if votes.empty else bradley_terry(votes, self.settings, rounds=rounds)

    def settled(self, ratings: pd.DataFrame) -> bool:
        """Every pair of settings compared and every 95% interval narrower than ``precision``."""
        votes = _votes(self._mine(ratings), self.setting_of)
        seen = {tuple(sorted((a, b), key=lambda v: (str(type(v)), v))) for a, b in zip(votes.a, votes.b, strict=True)}
        if not set(self._candidates) <= seen:
            return False
        index = {name: k for k, name in enumerate(self.settings)}
        i, j = votes.a.map(index).to_numpy(dtype=int), votes.b.map(index).to_numpy(dtype=int)
        outcome = votes.outcome.to_numpy(dtype=float)
        widths = _wald_widths(_fit(len(self.settings), i, j, outcome), i, j, outcome)
        return bool((widths < self.precision).all())

    def next(self, ratings: pd.DataFrame) -> Pair | None:
        """The next pair to show (settings in random screen order is the widget's part), or None when done."""
        mine = self._mine(ratings)
        if len(mine) >= self.budget or self.settled(ratings):
            return None
        shown = {frozenset(p) for p in zip(mine.run_a, mine.run_b, strict=True)}
        open_pairs = {key: [c for c in runs if frozenset(c) not in shown] for key, runs in self._candidates.items()}
        open_pairs = {key: runs for key, runs in open_pairs.items() if runs}
        if not open_pairs:
            return None
        compared = {key: len(self._candidates[key]) - len(runs) for key, runs in open_pairs.items()}
        table = self.scores(ratings, rounds=0)
        strength = dict(zip(table["setting"], table["score"], strict=True)) if table is not None else {}

        def informative(key: tuple[Any, Any]) -> float:
            gap = strength.get(key[0], 0.0) - strength.get(key[1], 0.0)
            p = 1 / (1 + math.exp(-gap))
            return p * (1 - p) / math.sqrt(1 + compared[key])

        fewest = min(compared.values())
        if fewest == 0:  # cover every pair of settings first
            choices = [key for key, n in compared.items() if n == 0]
        else:
            best = max(informative(key) for key in open_pairs)
            choices = [key for key in open_pairs if informative(key) >= 0.8 * best]
        key = choices[int(self._rng.integers(len(choices)))]
        run_a, run_b = open_pairs[key][int(self._rng.integers(len(open_pairs[key])))]
        return Pair(run_a, run_b, key[0], key[1])
