"""Human preferences as a ranking: Davidson-Bradley-Terry on votes with a known order, ties, kappa, pair choice."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import lmbench
from lmbench import preferences

TRUE = {"t0.0": 1.5, "t0.5": 0.5, "t1.0": -0.5, "t1.5": -1.5}


def _simulated(n: int, nu: float, seed: int) -> pd.DataFrame:
    """Votes drawn from Davidson's model with the ``TRUE`` strengths and tie parameter ``nu``."""
    rng = np.random.default_rng(seed)
    names = list(TRUE)
    rows = []
    for _ in range(n):
        a, b = rng.choice(names, 2, replace=False)
        pa, pb = math.exp(TRUE[a]), math.exp(TRUE[b])
        tie = nu * math.sqrt(pa * pb)
        outcome = rng.choice([1.0, 0.0, 0.5], p=np.array([pa, pb, tie]) / (pa + pb + tie))
        rows.append({"a": a, "b": b, "outcome": outcome})
    return pd.DataFrame(rows)


pytestmark = pytest.mark.no_test_model


def test_a_known_order_is_recovered_with_its_strengths_and_ties() -> None:
    table = preferences.bradley_terry(_simulated(1500, nu=0.6, seed=1), rounds=100)
    assert table.setting.tolist() == ["t0.0", "t0.5", "t1.0", "t1.5"]
    assert table["rank"].tolist() == [1, 2, 3, 4]
    truth = np.array([TRUE[s] for s in table.setting])
    assert np.abs(table.score.to_numpy() - (truth - truth.mean())).max() < 0.25
    assert abs(table.attrs["tie_strength"] - 0.6) < 0.15
    assert (table.low <= table.score).all() and (table.score <= table.high).all()
    assert table.n.sum() == 2 * 1500


def test_only_ties_mean_equal_settings_and_a_strong_tie_parameter() -> None:
    votes = pd.DataFrame({"a": ["x", "y", "z"] * 20, "b": ["y", "z", "x"] * 20, "outcome": 0.5})
    table = preferences.bradley_terry(votes, rounds=50)
    assert np.abs(table.score).max() < 1e-3
    assert table.attrs["tie_strength"] > 20
    assert table.win_rate.tolist() == [0.5, 0.5, 0.5]


def test_a_setting_that_never_loses_stays_finite_and_first() -> None:
    votes = pd.DataFrame({"a": ["best"] * 5 + ["mid"] * 5, "b": ["mid"] * 5 + ["worst"] * 5, "outcome": 1.0})
    table = preferences.bradley_terry(votes, rounds=50)
    assert table.setting.tolist() == ["best", "mid", "worst"]
    assert np.isfinite(table[["score", "low", "high"]].to_numpy()).all()
    assert table.win_rate.tolist() == [1.0, 0.5, 0.0]


def test_fewer_votes_mean_wider_intervals() -> None:
    few = preferences.bradley_terry(_simulated(40, nu=0.3, seed=2), rounds=100)
    many = preferences.bradley_terry(_simulated(800, nu=0.3, seed=2), rounds=100)
    assert (few.high - few.low).mean() > 2 * (many.high - many.low).mean()


def test_cohen_kappa_matches_worked_examples() -> None:
    # Two raters, 50 items: 20 both yes, 15 both no, 5 and 10 disagreements (Wikipedia's example: 0.4).
    first = ["yes"] * 20 + ["yes"] * 5 + ["no"] * 10 + ["no"] * 15
    second = ["yes"] * 20 + ["no"] * 5 + ["yes"] * 10 + ["no"] * 15
    assert preferences.cohen_kappa(first, second) == pytest.approx(0.4)
    assert preferences.cohen_kappa(["a", "b", "a"], ["a", "b", "a"]) == 1.0
    assert math.isnan(preferences.cohen_kappa(["a", "a"], ["a", "a"])), "undefined when both always say the same"
    with pytest.raises(lmbench.ParameterError):
        preferences.cohen_kappa(["a"], ["a", "b"])


def _votes(rows: list[tuple[str, str, str, str]], session: str = "s") -> pd.DataFrame:
    columns = ["kind", "run_a", "run_b", "verdict", "rater", "session"]
    return pd.DataFrame([("pairwise", a, b, v, r, session) for a, b, v, r in rows], columns=columns)


def test_rater_agreement_sees_through_the_order_of_a_pair() -> None:
    votes = _votes(
        [
            ("r1", "r2", "a", "ana"),
            ("r2", "r1", "b", "ben"),  # the same verdict, pair stored the other way round
            ("r3", "r4", "tie", "ana"),
            ("r3", "r4", "bad", "ben"),  # both bad counts as a tie
            ("r5", "r6", "a", "ana"),
            ("r5", "r6", "b", "ben"),
            ("r7", "r8", "skip", "ana"),
        ]
    )
    table = preferences.rater_agreement(votes)
    assert table[["rater", "other", "n"]].values.tolist() == [["ana", "ben", 3]]
    assert table.agreement[0] == pytest.approx(2 / 3)
    assert table.kappa[0] == pytest.approx(
        preferences.cohen_kappa(["first", "tie", "first"], ["first", "tie", "second"])
    )


def _frame(settings: list[float], items: int, seeds: int) -> pd.DataFrame:
    rows = [
        {"id": f"{s}-{i}-{seed}", "temperature": s, "prompt": f"p{i}", "seed": seed, "item": None}
        for s in settings
        for i in range(items)
        for seed in range(seeds)
    ]
    return pd.DataFrame(rows)


def test_pairing_covers_every_pair_of_settings_first_then_stops() -> None:
    df = _frame([0.0, 0.5, 1.0, 1.5], items=3, seeds=2)
    pairing = preferences.Pairing(df, "temperature", budget=30, seed=0)
    votes = _votes([])
    truth = {0.0: 3, 0.5: 2, 1.0: 1, 1.5: 0}
    seen: list[frozenset[float]] = []
    while (pair := pairing.next(votes)) is not None:
        assert pair.run_a != pair.run_b and pair.setting_a != pair.setting_b
        a, b = df.set_index("id").loc[[pair.run_a, pair.run_b]].itertuples()
        assert (a.prompt, a.seed) == (b.prompt, b.seed), "the same item and seed"
        seen.append(frozenset((pair.setting_a, pair.setting_b)))
        verdict = "a" if truth[pair.setting_a] > truth[pair.setting_b] else "b"
        votes = pd.concat(
            [votes, _votes([(pair.run_a, pair.run_b, verdict, "ana")], pairing.session)], ignore_index=True
        )
    assert len(set(seen[:6])) == 6, "the first six votes cover the six pairs of settings"
    assert pairing.progress(votes) == len(votes) <= 30
    scores = preferences.arena_scores(df, "temperature", ratings=votes, rounds=50)
    assert scores.temperature.tolist() == [0.0, 0.5, 1.0, 1.5]


def test_pairing_stops_when_the_ranking_is_settled() -> None:
    df = _frame([0.0, 1.0], items=40, seeds=1)
    pairing = preferences.Pairing(df, "temperature", budget=40, precision=3.5, seed=0)
    votes = _votes([])
    while (pair := pairing.next(votes)) is not None:
        verdict = "a" if pair.setting_a == 0.0 else "b"
        votes = pd.concat(
            [votes, _votes([(pair.run_a, pair.run_b, verdict, "ana")], pairing.session)], ignore_index=True
        )
    assert pairing.settled(votes) and len(votes) < 40, "stopped before the budget: the intervals were narrow"


def test_pairing_refuses_tables_it_cannot_pair() -> None:
    with pytest.raises(lmbench.ParameterError, match="not a column"):
        preferences.Pairing(_frame([0.0, 1.0], 1, 1), "top_p")
    with pytest.raises(lmbench.ParameterError, match="fewer than two settings"):
        preferences.Pairing(_frame([0.0], 2, 1), "temperature")
    unpaired = _frame([0.0, 1.0], 1, 1)
    unpaired.loc[1, "seed"] = 7
    with pytest.raises(lmbench.ParameterError, match="same item and seed"):
        preferences.Pairing(unpaired, "temperature")


def test_judge_agreement_counts_votes_that_follow_the_score() -> None:
    df = _frame([0.0, 1.0], items=4, seeds=1)
    df["judge"] = np.where(df.temperature == 0.0, 0.9, 0.2)
    ids = df.groupby("prompt").id.apply(list)
    votes = _votes(
        [(low, high, "a", "ana") for low, high in ids.iloc[:3]] + [(ids.iloc[3][0], ids.iloc[3][1], "b", "ana")]
    )
    result = preferences.judge_agreement(df, "judge", by="temperature", ratings=votes)
    assert result["votes"] == 4 and result["agreement"] == 0.75
    assert result["kendall_tau"] == pytest.approx(1.0)
    with pytest.raises(lmbench.ParameterError, match="no column 'rougeL'"):
        preferences.judge_agreement(df, "rougeL", ratings=votes)
