"""Human ratings of runs: one row per vote in their own table, checked before writing, aggregated per run.

A pairwise vote links two runs (``run_a``, ``run_b``), says which was shown on the left (``shown``:
``"ab"`` put ``run_a`` on the left, ``"ba"`` on the right) and its ``verdict`` about them: ``"a"``
or ``"b"`` better, ``"tie"``, ``"bad"`` (both bad: a tie, but a poor one) or ``"skip"`` (seen, not
judged). A single rating links one run, with a thumb (``verdict`` ``"up"`` or ``"down"``) and/or a
``score`` from 1 to 5. Rows are never updated or deleted. In the per-run columns a rater's latest
single rating of a run counts (changing a thumb corrects it), while every pairwise vote counts (the
same pair shown again is a second opinion).
"""

from __future__ import annotations

import getpass
import os
import sqlite3
import uuid
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ParameterError, StoreError
from ..params import MAX_LABEL_CHARS, check_text

PAIRWISE_VERDICTS = ("a", "b", "tie", "bad", "skip")
SINGLE_VERDICTS = ("up", "down")
SHOWN = ("ab", "ba")
MAX_NOTE_CHARS = 2000
COLUMNS = (
    "id",
    "created_at",
    "kind",
    "run_a",
    "run_b",
    "shown",
    "verdict",
    "score",
    "rater",
    "note",
    "session",
)
# What ``runs()`` gains per rated run (only when some run has ratings, as metrics appear when scored):
# the scores (the leaderboard ranks by them), then the number of ratings.
SCORES = ("rating_up", "rating_score", "rating_wins")
AGGREGATES = (*SCORES, "ratings")


def default_rater() -> str:
    """``$LMBENCH_RATER``, else the login name: who is voting, for agreement between raters."""
    try:
        return os.environ.get("LMBENCH_RATER") or getpass.getuser()
    except (KeyError, OSError):
        return "anonymous"


def checked_row(
    run_a: Any,
    run_b: Any = None,
    *,
    verdict: Any = None,
    score: Any = None,
    shown: Any = None,
    rater: Any = None,
    note: Any = None,
    session: Any = None,
) -> dict[str, Any]:
    """The ratings row for one vote, or ``ParameterError`` naming what is wrong (nothing is written)."""
    check_text("run_a", run_a, max_chars=64)
    pairwise = run_b is not None
    if pairwise:
        check_text("run_b", run_b, max_chars=64)
        if run_b == run_a:
            raise ParameterError("a pairwise vote needs two different runs", name="run_b", value=run_b)
        if verdict not in PAIRWISE_VERDICTS:
            raise ParameterError(
                f"verdict must be one of {', '.join(PAIRWISE_VERDICTS)} for a pair, not {verdict!r}",
                name="verdict",
                value=verdict,
            )
        if score is not None:
            raise ParameterError("a pairwise vote has no score; rate single runs for that", name="score", value=score)
        if shown is None:
            shown = "ab"
        if shown not in SHOWN:
            raise ParameterError(f"shown must be 'ab' or 'ba', not {shown!r}", name="shown", value=shown)
    else:
        if verdict is not None and verdict not in SINGLE_VERDICTS:
            raise ParameterError(
                f"verdict must be 'up', 'down' or None for one run, not {verdict!r}", name="verdict", value=verdict
            )
        if score is not None and (isinstance(score, bool) or not isinstance(score, int | np.integer)):
            raise ParameterError(f"score must be a whole number 1-5, not {score!r}", name="score", value=score)
        if score is not None and not 1 <= score <= 5:
            raise ParameterError(f"score must be between 1 and 5, not {score}", name="score", value=score)
        if verdict is None and score is None:
            raise ParameterError("a rating needs a verdict ('up' or 'down') or a score", name="verdict")
        if shown is not None:
            raise ParameterError("shown is the order of a pair; one run has none", name="shown", value=shown)
    rater = check_text("rater", default_rater() if rater is None else rater, max_chars=MAX_LABEL_CHARS)
    if not rater.strip():
        raise ParameterError("rater must not be empty", name="rater", value=rater)
    if note is not None:
        check_text("note", note, max_chars=MAX_NOTE_CHARS)
    if session is not None:
        check_text("session", session, max_chars=MAX_LABEL_CHARS)
    return {
        "id": uuid.uuid4().hex,
        "created_at": datetime.now(timezone.utc).isoformat(),
        "kind": "pairwise" if pairwise else "single",
        "run_a": run_a,
        "run_b": run_b,
        "shown": shown,
        "verdict": verdict,
        "score": None if score is None else int(score),
        "rater": rater,
        "note": note or None,
        "session": session,
    }


def insert(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    """Write one vote in one short transaction, after checking that its runs are in this store."""
    wanted = [r for r in (row["run_a"], row["run_b"]) if r is not None]
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = {
            r for (r,) in conn.execute(f"SELECT id FROM runs WHERE id IN ({', '.join('?' * len(wanted))})", wanted)
        }
        missing = [r for r in wanted if r not in found]
        if missing:
            raise StoreError(f"no run with id {missing[0]!r} in this store: ratings are of recorded runs")
        conn.execute(
            f"INSERT INTO ratings ({', '.join(COLUMNS)}) VALUES ({', '.join('?' * len(COLUMNS))})",
            [row[c] for c in COLUMNS],
        )
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def read(
    conn: sqlite3.Connection, kind: str | None = None, session: str | None = None, rater: str | None = None
) -> pd.DataFrame:
    """Votes oldest first, optionally of one kind, arena session or rater."""
    if kind not in (None, "pairwise", "single"):
        raise ParameterError(f"kind must be 'pairwise', 'single' or None, not {kind!r}", name="kind", value=kind)
    where, args = [], []
    for column, value in (("kind", kind), ("session", session), ("rater", rater)):
        if value is not None:
            where.append(f"{column} = ?")
            args.append(value)
    sql = f"SELECT {', '.join(COLUMNS)} FROM ratings{' WHERE ' + ' AND '.join(where) if where else ''}"
    rows = conn.execute(sql + " ORDER BY created_at, rowid", args).fetchall()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["created_at"] = pd.to_datetime(frame["created_at"], format="ISO8601")
    frame["score"] = frame["score"].astype("Int64")
    return frame


def aggregates(conn: sqlite3.Connection) -> pd.DataFrame:
    """Per rated run (index ``id``): share of thumbs up, mean 1-5 score, share of pairs won, number of ratings.

    ``rating_wins`` counts a tie as half a win and "both bad" as a loss for both (skips do not count).
    """
    frame = read(conn)
    if frame.empty:
        return pd.DataFrame(columns=list(AGGREGATES), index=pd.Index([], name="id"), dtype=float)
    single = frame[frame.kind == "single"].drop_duplicates(["rater", "run_a"], keep="last")
    thumbs = single.dropna(subset=["verdict"])
    pairs = frame[(frame.kind == "pairwise") & (frame.verdict != "skip")]
    win_a = pairs.verdict.map({"a": 1.0, "b": 0.0, "tie": 0.5, "bad": 0.0})
    win_b = pairs.verdict.map({"a": 0.0, "b": 1.0, "tie": 0.5, "bad": 0.0})
    wins = pd.concat([pd.Series(win_a.to_numpy(), index=pairs.run_a), pd.Series(win_b.to_numpy(), index=pairs.run_b)])
    counted = pd.concat([single.run_a, pairs.run_a, pairs.run_b])
    table = pd.DataFrame(
        {
            "rating_up": (thumbs.verdict == "up").groupby(thumbs.run_a).mean(),
            "rating_score": single.score.astype(float).groupby(single.run_a).mean(),
            "rating_wins": wins.groupby(level=0).mean(),
            "ratings": counted.value_counts().astype(float),
        }
    )
    table.index.name = "id"
    return table[list(AGGREGATES)]


def with_aggregates(runs: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """``runs`` with the rating columns joined by run id (NaN for unrated runs), when any run is rated."""
    if table.empty or "id" not in runs:
        return runs
    joined = runs.join(table, on="id")
    joined["ratings"] = joined["ratings"].fillna(0.0)
    return joined
