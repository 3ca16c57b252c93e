"""The run store: round trips, migrations, export, concurrent writers, large reads."""

from __future__ import annotations

import dataclasses
import sqlite3
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

import lmbench
from lmbench.store import Store
from lmbench.store import _snapshot as _table
from lmbench.store._migrations import MIGRATIONS, migrate


def test_runs_table_has_a_column_per_parameter_and_timing(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    for seed in range(3):
        lmbench.generate("Once", seed=seed, max_tokens=8, store=store, experiment="e1", tags=["a"])
    lmbench.generate("Once", max_tokens=8, store=store, experiment="e2")
    table = store.runs()
    assert len(table) == 4
    for column in ("temperature", "top_p", "max_tokens", "seed", "ttft_s", "tokens_per_s", "finish_reason", "text"):
        assert column in table.columns
    assert list(store.runs("e1").seed) == [0, 1, 2]
    assert store.runs("e1").tags[0] == ["a"]
    assert list(store.runs(last=2).experiment) == ["e1", "e2"], "newest last"
    assert pd.api.types.is_datetime64_any_dtype(table.created_at)


def test_use_store_and_default_location(lmbench_home: Path, tmp_path: Path) -> None:
    lmbench.generate("Once", max_tokens=3)
    assert (lmbench_home / "runs.db").exists()
    other = tmp_path / "other.db"
    lmbench.use_store(other)
    try:
        lmbench.generate("Once", max_tokens=3)
        assert len(lmbench.runs()) == 1 and len(lmbench.runs(store=lmbench_home / "runs.db")) == 1
    finally:
        lmbench.use_store(None)


def test_get_round_trips_a_run(tmp_path: Path) -> None:
    store = Store(tmp_path / "runs.db")
    run = lmbench.generate("Once", logprobs=2, max_tokens=6, stop=["zzz"], store=store, tags=["x", "y"])
    back = store.get(run.id[:10])
    assert dataclasses.asdict(back) == dataclasses.asdict(run)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".json", ".parquet"])
def test_export_by_suffix(tmp_path: Path, suffix: str) -> None:
    for seed in range(2):
        lmbench.generate("Once", seed=seed, max_tokens=4)
    target = lmbench.export(tmp_path / f"runs{suffix}")
    reader = {
        ".csv": pd.read_csv,
        ".jsonl": lambda p: pd.read_json(p, lines=True),
        ".parquet": pd.read_parquet,
        ".json": pd.read_json,
    }
    back = reader[suffix](target)
    assert len(back) == 2 and list(back.seed) == [0, 1]


def test_export_rejects_unknown_suffix(tmp_path: Path) -> None:
    with pytest.raises(lmbench.ParameterError, match=r"cannot write 'runs.xlsx': use \.csv, \.jsonl, \.ndjson"):
        lmbench.export(tmp_path / "runs.xlsx")


def test_migrations_from_empty_and_from_older_database(tmp_path: Path) -> None:
    fresh = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    assert migrate(fresh) == [name for name, _ in MIGRATIONS]
    assert migrate(fresh) == []

    old_path = tmp_path / "old.db"
    old = sqlite3.connect(old_path, isolation_level=None)
    old.execute("CREATE TABLE _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    name, sql = MIGRATIONS[0]
    for statement in filter(str.strip, sql.split(";")):
        old.execute(statement)
    old.execute("INSERT INTO _migrations VALUES (?, 'then')", (name,))
    old.execute(
        "INSERT INTO runs (id, created_at, prompt, text, temperature, stop, tags, seed, max_tokens) "
        "VALUES ('old1', '2025-01-01T00:00:00+00:00', 'p', 't', 0.5, '[]', '[]', 3, 10)"
    )
    old.close()
    store = Store(old_path)
    table = store.runs()
    assert list(table.id) == ["old1"] and "sweep_id" in table.columns
    with store.connect() as conn:  # columns added later were backfilled with their defaults, in SQL
        assert conn.execute("SELECT ignore_eos, stop FROM runs WHERE id = 'old1'").fetchone() == (0, "[]")
    assert store.get("old1").params.ignore_eos is False
    lmbench.generate("Once", max_tokens=3, store=store)
    assert len(store.runs()) == 2


def test_the_runs_table_has_one_type_per_column() -> None:
    lmbench.generate("Once", max_tokens=3, tags=["a"], ignore_eos=True)
    lmbench.sweep("Once", grid={"temperature": [0.5]}, seeds=1, max_tokens=3, progress=False)
    table = lmbench.runs()
    assert str(table.ignore_eos.dtype) == "boolean" and table.ignore_eos.tolist() == [True, False]
    assert table.tags.tolist() == [["a"], []] and table.stop.tolist() == [[], []]
    assert table.sweep_coords.iloc[0] is None and table.sweep_coords.iloc[1]["temperature"] == 0.5
    assert str(table.created_at.dtype).startswith("datetime64")
    heavy = lmbench.runs(heavy=True)
    assert isinstance(heavy.token_logprobs.iloc[1], list) and heavy.messages.iloc[0] is None
    run = lmbench.get_store().get(table.id.iloc[0])
    record = run.to_dict()
    assert record["ignore_eos"] is True and record["tags"] == ["a"] and record["stop"] == []
    assert lmbench.run.Run.from_record(run.to_record(), run.metrics) == run


WRITER = """
import sys, lmbench
store = lmbench.Store(sys.argv[1])
for i in range(int(sys.argv[3])):
    lmbench.generate("Once upon a time", seed=i, max_tokens=12, store=store, experiment=sys.argv[2])
"""


def test_concurrent_writer_processes_lose_no_row(tmp_path: Path) -> None:
    db = tmp_path / "shared.db"
    writers, each = 4, 15
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, str(db), f"w{i}", str(each)], stderr=subprocess.PIPE)
        for i in range(writers)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err.decode()
    table = Store(db).runs()
    assert len(table) == writers * each
    assert table.id.is_unique
    assert table.groupby("experiment").size().to_dict() == {f"w{i}": each for i in range(writers)}


def _bulk_insert(store: Store, template: dict[str, object], metrics: dict[str, float], n: int) -> None:
    """``n`` copies of a recorded run (and its metrics) with fresh ids, in one transaction (fast, no engine)."""
    with store.connect() as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
        rows = [[uuid.uuid4().hex if c == "id" else template.get(c) for c in columns] for _ in range(n)]
        conn.execute("BEGIN")
        conn.executemany(f"INSERT INTO runs VALUES ({', '.join('?' * len(columns))})", rows)
        values = [(row[columns.index("id")], name, value) for row in rows for name, value in metrics.items()]
        conn.executemany("INSERT INTO metrics VALUES (?, ?, ?)", values)
        conn.execute("COMMIT")


def test_reading_100k_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    store = Store(tmp_path / "big.db")
    run = lmbench.generate("Once upon a time", max_tokens=20, store=store)
    _bulk_insert(store, run.to_record(), run.metrics, 99_999)
    timings = []
    for reader in (store, Store(store.path)):  # the first read writes the snapshot; a new Store reuses it
        started = time.perf_counter()
        table = reader.runs()
        timings.append(time.perf_counter() - started)
        assert len(table) == 100_000 and table.distinct_2.notna().all(), "every run has its metrics"
    pd.testing.assert_frame_equal(table, store.runs())
    read_from_sqlite: list[int] = []
    real_rows = _table._rows

    def counted(*args: object) -> object:
        table = real_rows(*args)  # type: ignore[arg-type]
        read_from_sqlite.append(table.num_rows)
        return table

    monkeypatch.setattr(_table, "_rows", counted)
    assert len(Store(store.path).runs()) == 100_000
    lmbench.generate("Once upon a time", max_tokens=4, store=store)
    assert len(store.runs()) == 100_001
    assert read_from_sqlite == [0, 1], "re-reads come from the snapshot: only rows added since are read from SQLite"
    with capsys.disabled():
        first, again = timings
        print(f"\n[timing] lmbench.runs() of 100,000 rows: {first:.3f}s first read, {again:.3f}s from the snapshot")


def test_snapshot_follows_appends_rewrites_and_damage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_table, "SNAPSHOT_MIN_ROWS", 2)
    store = Store(tmp_path / "runs.db")
    snapshot = _table.snapshot_path(store.path)
    first = [lmbench.generate("Once", seed=s, max_tokens=4, store=store) for s in range(3)]
    assert len(store.runs()) == 3 and snapshot.exists()

    later = lmbench.generate("Once", seed=9, max_tokens=4, store=store, experiment="later")
    table = store.runs()
    assert list(table.id) == [r.id for r in [*first, later]], "rows added since the snapshot are read"
    assert list(store.runs("later").id) == [later.id]

    store.record(dataclasses.replace(first[0], text="edited"))
    table = store.runs()
    assert len(table) == 4 and table.set_index("id").text[first[0].id] == "edited", "re-recorded, not duplicated"

    with store.connect() as conn:
        conn.execute("DELETE FROM runs WHERE id = ?", (first[1].id,))
    assert first[1].id not in set(store.runs().id), "a delete invalidates the snapshot"

    snapshot.write_bytes(b"not arrow")
    assert len(store.runs()) == 3, "a damaged snapshot is rebuilt from the database"
