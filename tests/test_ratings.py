"""Human ratings in the store: votes checked and written at once, read back, aggregated onto the runs."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from test_cli import cli

import lmbench
from lmbench import preferences
from lmbench.store._store import Store


@pytest.fixture
def three_runs(tmp_path: Path) -> tuple[Store, list[str]]:
    store = Store(tmp_path / "runs.db")
    ids = [lmbench.generate("Once upon", seed=s, max_tokens=6, store=store).id for s in range(3)]
    return store, ids


def test_votes_are_stored_read_back_and_exported(three_runs: tuple[Store, list[str]], tmp_path: Path) -> None:
    store, (a, b, c) = three_runs
    first = store.add_rating(a, b, verdict="a", shown="ba", rater="ana", note="less rambling")
    store.add_rating(b, c, verdict="tie", rater="ana", session="s1")
    store.add_rating(a, verdict="up", score=4, rater="ben")
    table = lmbench.ratings(store=store)
    assert table.id.iloc[0] == first and len(table) == 3
    assert list(table.kind) == ["pairwise", "pairwise", "single"]
    assert table.iloc[0][["run_a", "run_b", "shown", "verdict", "rater", "note"]].tolist() == [
        a,
        b,
        "ba",
        "a",
        "ana",
        "less rambling",
    ]
    assert pd.isna(table.iloc[2].run_b) and table.iloc[2].score == 4
    assert pd.api.types.is_datetime64_any_dtype(table.created_at)
    assert len(store.ratings("single")) == 1 and len(store.ratings(session="s1")) == 1
    assert list(store.ratings(rater="ben").run_a) == [a]

    exported = pd.read_csv(store.export(tmp_path / "votes.csv", table="ratings"))
    assert list(exported.verdict) == ["a", "tie", "up"] and list(exported.rater) == ["ana", "ana", "ben"]
    with pytest.raises(lmbench.ParameterError, match="table must be"):
        store.export(tmp_path / "x.csv", table="votes")


def test_the_command_line_exports_the_ratings(tmp_path: Path) -> None:
    run = lmbench.generate("Once", max_tokens=3)
    lmbench.get_store().add_rating(run.id, verdict="up", rater="cli")
    result = cli("export", str(tmp_path / "votes.jsonl"), "--table", "ratings")
    assert result.returncode == 0 and "exported ratings to" in result.stdout
    assert pd.read_json(tmp_path / "votes.jsonl", lines=True).rater.tolist() == ["cli"]


def test_ratings_become_columns_of_the_runs_table(three_runs: tuple[Store, list[str]]) -> None:
    store, (a, b, c) = three_runs
    assert "rating_up" not in store.runs(), "no rating columns before anyone rates"
    store.add_rating(a, verdict="down", score=1, rater="ana")
    store.add_rating(a, verdict="up", score=5, rater="ana")  # ana changed her mind: her latest counts
    store.add_rating(a, verdict="down", score=3, rater="ben")
    store.add_rating(b, score=2)
    store.add_rating(a, b, verdict="a")
    store.add_rating(a, c, verdict="tie")
    store.add_rating(b, c, verdict="bad")
    store.add_rating(b, c, verdict="skip")
    table = store.runs().set_index("id")
    assert table.loc[a, "rating_up"] == 0.5 and table.loc[a, "rating_score"] == 4.0
    assert table.loc[a, "rating_wins"] == 0.75, "a win and a tie"
    assert table.loc[b, "rating_score"] == 2.0 and pd.isna(table.loc[b, "rating_up"])
    assert table.loc[b, "rating_wins"] == 0.0, "a loss and a 'both bad'; the skip does not count"
    assert table.loc[c, "rating_wins"] == 0.25 and pd.isna(table.loc[c, "rating_score"])
    assert table.loc[a, "ratings"] == 4, "two raters and two pairs"
    assert table.loc[c, "ratings"] == 2, "skips are not counted"
    board = lmbench.leaderboard(store.runs(), by="seed", metrics=["rating_score"])
    assert board.seed.tolist()[0] == 0 and board.rating_score.tolist()[0] == 4.0, "ana's latest 5 and ben's 3"
    assert {"rating_up", "rating_score", "rating_wins"} <= set(lmbench.leaderboard(store.runs(), by="seed"))


@pytest.mark.parametrize(
    ("pair", "vote", "message"),
    [
        (True, {"verdict": "better"}, "verdict must be one of"),
        (True, {"verdict": "a", "score": 3}, "no score"),
        (True, {"verdict": "a", "shown": "left"}, "shown must be"),
        (False, {}, "needs a verdict"),
        (False, {"verdict": "a"}, "'up', 'down'"),
        (False, {"score": 6}, "between 1 and 5"),
        (False, {"score": 4.5}, "whole number"),
        (False, {"score": True}, "whole number"),
        (False, {"verdict": "up", "rater": " "}, "rater must not be empty"),
        (False, {"verdict": "up", "note": "x\udc80"}, "not valid Unicode"),
        (False, {"verdict": "up", "note": "x" * 3000}, "limit is 2000"),
    ],
)
def test_bad_votes_are_refused_before_writing(
    three_runs: tuple[Store, list[str]], pair: bool, vote: dict[str, object], message: str
) -> None:
    store, (a, b, _) = three_runs
    with pytest.raises(lmbench.ParameterError, match=message):
        store.add_rating(a, b if pair else None, **vote)  # type: ignore[arg-type]
    assert store.ratings().empty


def test_a_vote_for_an_unknown_run_is_refused(three_runs: tuple[Store, list[str]]) -> None:
    store, (a, _, _) = three_runs
    with pytest.raises(lmbench.StoreError, match="no run with id 'nope'"):
        store.add_rating(a, "nope", verdict="a")
    with pytest.raises(lmbench.ParameterError, match="two different runs"):
        store.add_rating(a, a, verdict="a")
    assert store.ratings().empty


def test_the_ratings_table_has_its_checks_in_sqlite_too(three_runs: tuple[Store, list[str]]) -> None:
    store, (a, _, _) = three_runs
    conn = sqlite3.connect(store.path)
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO ratings (id, created_at, kind, run_a, score, rater) VALUES ('x', 'now', 'single', ?, 9, 'r')",
            (a,),
        )
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute(
            "INSERT INTO ratings (id, created_at, kind, run_a, rater) VALUES ('y', 'now', 'pairwise', ?, 'r')", (a,)
        )
    conn.close()


VOTER = """
import sys
from lmbench.store._store import Store
store = Store(sys.argv[1])
for k in range(int(sys.argv[4])):
    store.add_rating(sys.argv[2], sys.argv[3], verdict="a" if k % 2 else "tie", rater=sys.argv[5])
"""


def test_concurrent_voters_lose_no_vote(three_runs: tuple[Store, list[str]]) -> None:
    store, (a, b, _) = three_runs
    voters = [
        subprocess.Popen([sys.executable, "-c", VOTER, str(store.path), a, b, "40", f"rater{n}"]) for n in range(3)
    ]
    assert [v.wait(timeout=120) for v in voters] == [0, 0, 0]
    table = store.ratings()
    assert len(table) == 120 and table.id.is_unique
    assert table.groupby("rater").size().to_dict() == {"rater0": 40, "rater1": 40, "rater2": 40}


def test_arena_scores_of_a_real_sweep_from_stored_votes(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    df = lmbench.sweep("Once upon a time", grid={"temperature": [0.0, 1.5]}, seeds=3, max_tokens=8, store=store)
    df = store.runs()
    pairing = preferences.Pairing(df, "temperature", seed=0)
    votes = store.ratings()
    while (pair := pairing.next(votes)) is not None:
        store.add_rating(pair.run_a, pair.run_b, verdict="a" if pair.setting_a == 0.0 else "b", session=pairing.session)
        votes = store.ratings()
    assert pairing.progress(votes) == 3, "three seeds: three pairs of runs to show, each once"
    scores = lmbench.arena_scores(df, by="temperature", store=store)
    assert scores.temperature.tolist() == [0.0, 1.5] and scores.win_rate.tolist() == [1.0, 0.0]
    figure = preferences.plot_arena(scores)
    assert list(figure.data[0].y) == ["1.5", "0.0"] and "3 votes" in figure.layout.title.text
