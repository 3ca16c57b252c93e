"""The run store: every run in SQLite (WAL, named migrations), read back as pandas.

Several processes may write to one store at once: each write is one short ``BEGIN
IMMEDIATE`` transaction and waits (busy timeout) rather than failing.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from ._config import home
from .errors import StoreError
from .run import Run

BUSY_TIMEOUT_S = 60.0

MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_create_runs",
        """
        CREATE TABLE runs (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            experiment TEXT,
            tags TEXT,
            source TEXT,
            model_path TEXT,
            model_name TEXT,
            model_size INTEGER,
            model_sha256 TEXT,
            prompt TEXT NOT NULL,
            text TEXT NOT NULL,
            max_tokens INTEGER,
            temperature REAL,
            top_p REAL,
            top_k INTEGER,
            min_p REAL,
            repeat_penalty REAL,
            presence_penalty REAL,
            frequency_penalty REAL,
            seed INTEGER,
            stop TEXT,
            logprobs INTEGER,
            finish_reason TEXT,
            error TEXT,
            prompt_tokens INTEGER,
            completion_tokens INTEGER,
            prompt_cached_tokens INTEGER,
            load_s REAL,
            ttft_s REAL,
            total_s REAL,
            tokens_per_s REAL,
            n_ctx INTEGER,
            n_threads INTEGER,
            batch_size INTEGER,
            lmbench_version TEXT,
            llama_cpp_version TEXT,
            messages TEXT,
            token_logprobs TEXT
        );
        CREATE INDEX runs_experiment ON runs (experiment);
        CREATE INDEX runs_created_at ON runs (created_at);
        """,
    ),
    (
        "0002_sweeps_and_metrics",
        """
        ALTER TABLE runs ADD COLUMN sweep_id TEXT;
        ALTER TABLE runs ADD COLUMN sweep_coords TEXT;
        CREATE INDEX runs_sweep_id ON runs (sweep_id);
        CREATE TABLE metrics (
            run_id TEXT NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
            name TEXT NOT NULL,
            value REAL,
            PRIMARY KEY (run_id, name)
        ) WITHOUT ROWID;
        """,
    ),
]

# Columns left out of tables by default: large, and only needed for one run at a time.
HEAVY_COLUMNS = ("token_logprobs", "messages")


class Store:
    """One SQLite database file of runs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._migrated = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<lmbench.Store {self.path}>"

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A connection with the store's settings, migrated to the newest schema."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise StoreError(f"cannot open the run store {self.path}: {exc}") from None
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            if not self._migrated:
                with self._lock:
                    migrate(conn)
                    self._migrated = True
            yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"run store {self.path}: {exc}") from exc
        finally:
            conn.close()

    def record(self, runs: Run | Iterable[Run]) -> None:
        """Write runs (and their metrics) in one transaction."""
        batch = [runs] if isinstance(runs, Run) else [*runs]
        if not batch:
            return
        with self.connect() as conn:
            columns = [row[1] for row in conn.execute("PRAGMA table_info(runs)")]
            sql = f"INSERT OR REPLACE INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            conn.execute("BEGIN IMMEDIATE")
            try:
                for run in batch:
                    record = run.to_record()
                    conn.execute(sql, [record.get(c) for c in columns])
                    conn.executemany(
                        "INSERT OR REPLACE INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                        [(run.id, k, _finite_or_none(v)) for k, v in run.metrics.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def get(self, run_id: str) -> Run:
        """One run by id (a unique prefix of the id is enough)."""
        with self.connect() as conn:
            conn.row_factory = sqlite3.Row
            rows = conn.execute("SELECT * FROM runs WHERE id LIKE ? LIMIT 2", (f"{run_id}%",)).fetchall()
            if len(rows) != 1:
                raise StoreError(f"{'no' if not rows else 'more than one'} run matches id {run_id!r} in {self.path}")
            row = dict(rows[0])
            metrics = dict(conn.execute("SELECT name, value FROM metrics WHERE run_id = ?", (row["id"],)).fetchall())
        return Run.from_record(row, metrics)

    def runs(
        self,
        experiment: str | None = None,
        *,
        sweep_id: str | None = None,
        last: int | None = None,
        heavy: bool = False,
    ) -> pd.DataFrame:
        """One row per run, newest last: a column per parameter, timing and metric."""
        with self.connect() as conn:
            declared = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(runs)")}
        selected = [c for c in declared if heavy or c not in HEAVY_COLUMNS]
        where, args = [], []
        if experiment is not None:
            where.append("experiment = ?")
            args.append(experiment)
        if sweep_id is not None:
            where.append("sweep_id = ?")
            args.append(sweep_id)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        order = "ORDER BY created_at, rowid"
        if last is not None:
            order = f"ORDER BY created_at DESC, rowid DESC LIMIT {int(last)}"
        sql = f"SELECT {', '.join(selected)} FROM runs {clause} {order}"
        frame = self._query(sql, args)
        metrics = self._query(
            f"SELECT m.run_id, m.name, m.value FROM metrics m JOIN ({sql}) r ON r.id = m.run_id", args
        )
        for column, kind in declared.items():
            if kind == "TEXT" and column in frame and frame[column].isna().all():
                frame[column] = pd.Series([None] * len(frame), dtype=object)
        if last is not None:
            frame = frame.iloc[::-1].reset_index(drop=True)
        frame["created_at"] = pd.to_datetime(frame["created_at"], format="ISO8601")
        for col in ("tags", "stop"):
            parsed = {v: json.loads(v) if v else [] for v in frame[col].dropna().unique()}
            frame[col] = [parsed.get(v, []) if isinstance(v, str) else [] for v in frame[col]]
        if not metrics.empty:
            wide = metrics.pivot(index="run_id", columns="name", values="value")
            frame = frame.join(wide, on="id")
        return frame

    def _query(self, sql: str, args: list[object], declared: dict[str, str] | None = None) -> pd.DataFrame:
        """Run a read query into a DataFrame whose column types follow the declared schema."""
        with self.connect() as conn:
            cursor = conn.execute(sql, args)
            names = [d[0] for d in cursor.description]
            rows = cursor.fetchall()
        columns = list(zip(*rows, strict=True)) if rows else [() for _ in names]
        data: dict[str, object] = {}
        for name, values in zip(names, columns, strict=True):
            kind = (declared or {}).get(name, "")
            if kind in ("REAL", "INTEGER"):
                array = np.array(values, dtype=float)
                data[name] = array.astype(np.int64) if kind == "INTEGER" and not np.isnan(array).any() else array
            else:
                array = np.empty(len(values), dtype=object)
                array[:] = values
                data[name] = pd.Series(array, dtype=object, copy=False)
        return pd.DataFrame(data, columns=names, copy=False)

    def export(self, path: str | os.PathLike[str], experiment: str | None = None) -> Path:
        """Write the runs table to CSV, JSON lines (.jsonl) or Parquet, chosen by the suffix."""
        target = Path(path)
        frame = self.runs(experiment, heavy=True)
        suffix = target.suffix.lower()
        if suffix == ".csv":
            frame.to_csv(target, index=False)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            frame.to_json(target, orient="records", lines=suffix != ".json", date_format="iso")
        elif suffix == ".parquet":
            frame.to_parquet(target, index=False)
        else:
            raise StoreError(f"cannot export to {target.name!r}: use a .csv, .jsonl, .json or .parquet file")
        return target


def _finite_or_none(value: float) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database has not seen yet, in order; return their names."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
        applied = []
        for name, sql in MIGRATIONS:
            if name in done:
                continue
            for statement in filter(str.strip, sql.split(";")):
                conn.execute(statement)
            conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))
            applied.append(name)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return applied


_chosen: Store | None = None
_by_path: dict[Path, Store] = {}
_stores_lock = threading.Lock()


def default_store_path() -> Path:
    """``$LMBENCH_HOME/runs.db``."""
    return home() / "runs.db"


def use_store(path: str | os.PathLike[str] | Store | None) -> Store:
    """Record runs into ``path`` from now on (``None``: back to the default store)."""
    global _chosen
    _chosen = None if path is None else get_store(path)
    return get_store()


def get_store(store: str | os.PathLike[str] | Store | None = None) -> Store:
    """The store given, else the one chosen with ``use_store``, else the default store."""
    if isinstance(store, Store):
        return store
    if store is None and _chosen is not None:
        return _chosen
    path = Path(store if store is not None else default_store_path()).expanduser().resolve()
    with _stores_lock:
        return _by_path.setdefault(path, Store(path))


def runs(
    experiment: str | None = None, *, store: str | os.PathLike[str] | Store | None = None, **kwargs
) -> pd.DataFrame:
    """Recorded runs as a DataFrame (see ``Store.runs``)."""
    return get_store(store).runs(experiment, **kwargs)


def export(
    path: str | os.PathLike[str], experiment: str | None = None, *, store: str | os.PathLike[str] | Store | None = None
) -> Path:
    """Export recorded runs to CSV, JSON lines or Parquet by file suffix."""
    return get_store(store).export(path, experiment)
