"""The run store: every run in SQLite (WAL, named migrations), read back as pandas.

Several processes may write to one store at once: each write is one short ``BEGIN
IMMEDIATE`` transaction and waits (busy timeout) rather than failing.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.compute as pc

from .._config import home, unwritable
from ..datasets import write_table
from ..errors import ParameterError, StoreError
from ..run import COLUMNS, Run
from . import _conversations, _ratings
from . import _snapshot as _table
from ._migrations import migrate, missing_migrations

BUSY_TIMEOUT_S = 60.0


# Columns left out of tables by default: large, and only needed for one run at a time.
HEAVY_COLUMNS = tuple(c.name for c in COLUMNS if c.heavy)


class Store:
    """One SQLite database file of runs."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path).expanduser()
        self._migrated = False
        self._lock = threading.Lock()
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"<lmbench.Store {self.path}>"

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection, with the store's settings, migrated to the newest schema.

        Connections are kept per thread (and per process, so a fork opens its own) instead of
        opened per call: a sweep records hundreds of runs a second.
        """
        conn = self._connection()
        try:
            yield conn
        except sqlite3.Error as exc:
            raise StoreError(f"run store {self.path}: {_reason(exc, self.path)}") from exc

    def _connection(self) -> sqlite3.Connection:
        local = self._local
        if getattr(local, "conn", None) is not None and local.pid == os.getpid():
            return local.conn
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self.path.is_file() and not os.access(self.path.parent, os.W_OK):
                conn = self._read_only()
            else:
                conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_S, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute("PRAGMA foreign_keys=ON")
                if not self._migrated:
                    with self._lock:
                        _check_integrity(conn, self.path)
                        migrate(conn)
                        self._migrated = True
        except OSError as exc:
            raise StoreError(f"cannot open the run store {self.path}: {unwritable(exc)}") from None
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the run store {self.path}: {_reason(exc, self.path)}") from None
        local.conn, local.pid = conn, os.getpid()
        return conn

    def _read_only(self) -> sqlite3.Connection:
        """A connection that only reads, for a store in a folder this process cannot write.

        SQLite's WAL mode needs to create ``-shm`` beside the database even to read, which a
        read-only folder refuses; without a ``-wal`` file every committed run is in the database
        file itself, so it is opened as immutable, else read-only through the existing files.
        """
        wal = self.path.with_name(self.path.name + "-wal")
        mode = "mode=ro" if wal.exists() else "immutable=1"
        conn = sqlite3.connect(f"{self.path.absolute().as_uri()}?{mode}", uri=True, isolation_level=None)
        if not self._migrated:
            with self._lock:
                _check_integrity(conn, self.path)
                pending = missing_migrations(conn)
                if pending:
                    raise StoreError(
                        f"the run store {self.path} needs upgrading ({', '.join(pending)}), but its folder "
                        f"{self.path.parent} is read-only; open it once where it can be written"
                    )
                self._migrated = True
        return conn

    def close(self) -> None:
        """Close this thread's connection (the next use opens a new one)."""
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _declared(self, conn: sqlite3.Connection) -> dict[str, str]:
        """The runs table's columns and their SQL types, read again only when the schema changes (another
        process may migrate the file): one pragma of a number per call instead of one row per column."""
        version = conn.execute("PRAGMA schema_version").fetchone()[0]
        known = getattr(self._local, "declared", None)
        if known is None or known[0] is not conn or known[1] != version:
            known = (conn, version, {row[1]: row[2] for row in conn.execute("PRAGMA table_info(runs)")})
            self._local.declared = known
        declared: dict[str, str] = known[2]
        return declared

    def record(self, runs: Run | Iterable[Run]) -> None:
        """Write runs (and their metrics) in one transaction."""
        batch = [runs] if isinstance(runs, Run) else [*runs]
        if not batch:
            return
        with self.connect() as conn:
            declared = self._declared(conn)
            rows = [_checked_row(run.to_record(), declared) for run in batch]
            columns = list(declared)
            sql = f"INSERT OR REPLACE INTO runs ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
            environments = {r.environment: r.environment_facts for r in batch if r.environment and r.environment_facts}
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT OR IGNORE INTO environments (id, facts) VALUES (?, ?)",
                    [(key, json.dumps(facts, sort_keys=True)) for key, facts in environments.items()],
                )
                for run, row in zip(batch, rows, strict=True):
                    conn.execute(sql, [row.get(c) for c in columns])
                    conn.executemany(
                        "INSERT OR REPLACE INTO metrics (run_id, name, value) VALUES (?, ?, ?)",
                        [(run.id, k, _finite_or_none(v)) for k, v in run.metrics.items()],
                    )
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # SQLite has already rolled back after some errors (a full disk)
                    conn.execute("ROLLBACK")
                raise

    def add_metrics(self, values: dict[str, dict[str, float]]) -> None:
        """Add or replace metric values of recorded runs (``{run_id: {name: value}}``), in one transaction."""
        rows = [(run_id, name, _finite_or_none(v)) for run_id, named in values.items() for name, v in named.items()]
        if not rows:
            return
        with self.connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany("INSERT OR REPLACE INTO metrics (run_id, name, value) VALUES (?, ?, ?)", rows)
                conn.execute("UPDATE _changes SET rewrites = rewrites + 1")  # old runs changed: not a snapshot's
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
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
            facts = conn.execute("SELECT facts FROM environments WHERE id = ?", (row["environment"],)).fetchone()
        run = Run.from_record(row, metrics)
        run.environment_facts = json.loads(facts[0]) if facts else None
        return run

    def runs(
        self,
        experiment: str | None = None,
        *,
        sweep_id: str | None = None,
        ids: Iterable[str] | None = None,
        last: int | None = None,
        heavy: bool = False,
        kind: str | None = None,
    ) -> pd.DataFrame:
        """One row per run, newest last: a column per parameter, timing and metric.

        ``experiment``, ``sweep_id``, ``kind`` (``"generate"``, ``"loglikelihood"``, ...:
        ``lmbench.run.KINDS``) and ``ids`` keep only those runs and ``last`` only the newest n; a small
        selection is read from SQLite alone (its indexes), so it costs what it returns, while the whole
        table comes from the columnar snapshot. ``heavy=True`` adds the per-token log-probabilities and
        chat messages (JSON text).
        """
        if last is not None and (isinstance(last, bool) or not isinstance(last, int) or last < 0):
            raise ParameterError(f"last must be a whole number of runs >= 0, not {last!r}", name="last", value=last)
        conditions = {"experiment = ?": experiment, "sweep_id = ?": sweep_id, "kind = ?": kind}
        if ids is not None:
            conditions["id IN (SELECT value FROM json_each(?))"] = json.dumps(list(ids))
        chosen = {sql: value for sql, value in conditions.items() if value is not None}
        where, params = " AND ".join(chosen) or "1", tuple(chosen.values())
        with self.connect() as conn:
            declared = self._declared(conn)
            columns = {c: sql_type for c, sql_type in declared.items() if heavy or c not in HEAVY_COLUMNS}
            if last is not None or ids is not None or (chosen and _few(conn, where, params)):
                table = _table.select(conn, columns, where, params, last)
            else:
                table = _table.read(conn, columns, None if heavy else _table.snapshot_path(self.path))
                for column, value in (("experiment", experiment), ("sweep_id", sweep_id), ("kind", kind)):
                    if value is not None:
                        table = table.filter(pc.equal(table[column], value))
        frame = table.to_pandas()
        frame = frame.sort_values("created_at", kind="stable").drop(columns=_table.ROWID)
        with self.connect() as conn:
            rated = _ratings.aggregates(conn)
        return _ratings.with_aggregates(_typed(frame.reset_index(drop=True)), rated)

    def environments(self) -> pd.DataFrame:
        """One row per environment the store's runs were made in: its id (the runs' ``environment``
        column) and its facts (llama.cpp's system info, versions, platform, CPU) as columns."""
        with self.connect() as conn:
            rows = conn.execute("SELECT id, facts FROM environments ORDER BY id").fetchall()
        return pd.DataFrame(
            [{"environment": key, **json.loads(facts)} for key, facts in rows],
            columns=None if rows else ["environment"],
        )

    def add_rating(
        self,
        run_a: str,
        run_b: str | None = None,
        *,
        verdict: str | None = None,
        score: int | None = None,
        shown: str | None = None,
        rater: str | None = None,
        note: str | None = None,
        session: str | None = None,
    ) -> str:
        """Record one human vote at once (one short transaction); return its id.

        One run: ``verdict`` ``"up"``/``"down"`` and/or ``score`` 1-5. Two runs: ``verdict`` ``"a"``,
        ``"b"``, ``"tie"``, ``"bad"`` (both bad) or ``"skip"``, and ``shown`` (``"ab"``: ``run_a`` was on
        the left). ``rater`` defaults to ``$LMBENCH_RATER`` or the login name.
        """
        row = _ratings.checked_row(
            run_a, run_b, verdict=verdict, score=score, shown=shown, rater=rater, note=note, session=session
        )
        with self.connect() as conn:
            _ratings.insert(conn, row)
        return str(row["id"])

    def ratings(self, kind: str | None = None, *, session: str | None = None, rater: str | None = None) -> pd.DataFrame:
        """Every human vote, oldest first (``kind``: ``"pairwise"`` or ``"single"``; or one session or rater)."""
        with self.connect() as conn:
            return _ratings.read(conn, kind, session, rater)

    def save_conversation(
        self,
        name: str,
        messages: list[dict[str, Any]],
        *,
        conversation_id: str | None = None,
        run_ids: list[str | None] | None = None,
        tools: list[dict[str, Any]] | None = None,
    ) -> _conversations.Conversation:
        """Save a chat conversation under ``name`` (a new save each time: nothing saved is overwritten).

        ``conversation_id`` is the id its turns were recorded with (``chat(..., conversation_id=...)``;
        a new one when omitted), ``run_ids`` the run that made each message (``None`` for a person's).
        """
        row = _conversations.checked_row(name, messages, conversation_id, run_ids, tools)
        with self.connect() as conn:
            save = _conversations.insert(conn, row)
        return self.conversation(row["name"], save=save)

    def conversation(self, name: str, *, save: int | None = None) -> _conversations.Conversation:
        """The newest save of the conversation named ``name`` (or its save number ``save``)."""
        with self.connect() as conn:
            return _conversations.read_one(conn, name, save, str(self.path))

    def conversations(self) -> pd.DataFrame:
        """Every saved conversation, one row per save, oldest first (``save``, ``name``, ``id``, ``saved_at``,
        ``turns``: its number of messages)."""
        with self.connect() as conn:
            return _conversations.read_all(conn)

    def export(self, path: str | os.PathLike[str], experiment: str | None = None, *, table: str = "runs") -> Path:
        """Write the runs table (or ``table="ratings"``: the votes) to CSV, JSON lines (.jsonl) or Parquet."""
        target = Path(path)
        if table not in ("runs", "ratings"):
            raise ParameterError(f"table must be 'runs' or 'ratings', not {table!r}", name="table", value=table)
        if table == "ratings" and experiment is not None:
            raise ParameterError("ratings are exported whole: filter ratings() for one experiment", name="experiment")
        frame = self.runs(experiment, heavy=True) if table == "runs" else self.ratings()
        return write_table(frame, target)


# A filtered selection of at most this many runs is read from SQLite rather than from the snapshot.
FEW_RUNS = 10 * _table.SNAPSHOT_MIN_ROWS


def _few(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> bool:
    """Whether at most ``FEW_RUNS`` runs match (counted through the index, without reading them)."""
    query = f"SELECT count(*) FROM (SELECT 1 FROM runs WHERE {where} LIMIT {FEW_RUNS + 1})"
    return bool(conn.execute(query, params).fetchone()[0] <= FEW_RUNS)


_PYTHON_TYPES: dict[str, tuple[type, ...]] = {"TEXT": (str,), "INTEGER": (int,), "REAL": (float, int)}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """The table's columns as their ``Column`` says: lists and dicts, booleans, times."""
    for column in COLUMNS:
        if column.name not in frame:
            continue
        if column.kind == "bool":
            frame[column.name] = frame[column.name].astype("boolean")
        elif column.kind == "time":
            frame[column.name] = pd.to_datetime(frame[column.name], format="ISO8601")
        elif column.kind == "json":  # each distinct text parsed once (tags and stop repeat a lot)
            codes, uniques = pd.factorize(frame[column.name])
            parsed = np.empty(len(uniques) + 1, dtype=object)
            for i, value in enumerate(uniques):
                parsed[i] = json.loads(value)
            parsed[-1] = column.decode(None)  # code -1: missing
            frame[column.name] = parsed[codes]
    return frame


def _checked_row(row: dict[str, Any], declared: dict[str, str]) -> dict[str, Any]:
    """A run's row if every value fits its column (type, valid Unicode), else ``StoreError`` naming the column.

    Checked before writing, so no value can make the store unreadable later (SQLite itself stores
    any type in any column and accepts lone surrogates nowhere consistently).
    """
    missing = sorted(set(row) - set(declared))
    if missing:
        raise StoreError(f"the run store has no column {missing[0]!r}: a migration is missing for it")
    for column, value in row.items():
        if value is None:
            continue
        kinds = _PYTHON_TYPES.get(declared[column], (str,))
        if not isinstance(value, kinds) or (isinstance(value, bool) and kinds == (str,)):
            raise StoreError(f"cannot store {column}={value!r}: the column holds {declared[column]} values")
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise StoreError(f"cannot store {column}: it is not valid Unicode text") from None
    return row


_intact: set[tuple[str, int, int, int]] = set()  # database file versions this process found sound


def _check_integrity(conn: sqlite3.Connection, path: Path) -> None:
    """Refuse a damaged database at once rather than answer from its snapshot while writes fail.

    Checked once per process and file version (a quick check reads every page: 0.2 s for 100,000 runs).
    """
    try:
        stat = path.stat()
        key: tuple[str, int, int, int] | None = (str(path.resolve()), stat.st_ino, stat.st_size, stat.st_mtime_ns)
    except OSError:
        key = None
    if key in _intact:
        return
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(3)")]
    if problems == ["ok"]:
        if key is not None:
            _intact.add(key)
        return
    raise StoreError(
        f"the run store {path} is damaged ({'; '.join(problems)}); "
        "copy what can be read with the sqlite3 shell's .recover, or move the file away to start a new store"
    )


def _reason(exc: BaseException, path: Path) -> str:
    """SQLite's words, made plain where they mislead (a full disk, a read-only folder)."""
    text = str(exc)
    if "disk is full" in text or (("disk I/O error" in text or "unable to open" in text) and _disk_full(path)):
        return "the disk is full"
    if "readonly database" in text or "read-only" in text or not os.access(path.parent, os.W_OK):
        return f"its folder {path.parent} is read-only: runs can be read but not recorded"
    return text


def _disk_full(path: Path) -> bool:
    """Whether the disk holding ``path`` has (almost) no room left: SQLite often says "disk I/O error" then."""
    try:
        return shutil.disk_usage(path.parent).free < _FULL_BELOW_BYTES
    except OSError:
        return False


# Less free space than this (a few database pages) is a full disk.
_FULL_BELOW_BYTES = 64 * 1024


def _finite_or_none(value: float) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value == value and abs(value) != float("inf") else None


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
    experiment: str | None = None, *, store: str | os.PathLike[str] | Store | None = None, **kwargs: Any
) -> pd.DataFrame:
    """Recorded runs as a DataFrame (see ``Store.runs``)."""
    return get_store(store).runs(experiment, **kwargs)


def environments(store: str | os.PathLike[str] | Store | None = None) -> pd.DataFrame:
    """The environments of the store's runs (see ``Store.environments``)."""
    return get_store(store).environments()


def export(
    path: str | os.PathLike[str],
    experiment: str | None = None,
    *,
    table: str = "runs",
    store: str | os.PathLike[str] | Store | None = None,
) -> Path:
    """Export recorded runs (or ``table="ratings"``: the human votes) to CSV, JSON lines or Parquet by file suffix."""
    return get_store(store).export(path, experiment, table=table)


def add_rating(
    run_a: str, run_b: str | None = None, *, store: str | os.PathLike[str] | Store | None = None, **vote: Any
) -> str:
    """Record one human vote of one run or a pair (see ``Store.rate``); return its id."""
    return get_store(store).add_rating(run_a, run_b, **vote)


def ratings(
    kind: str | None = None, *, store: str | os.PathLike[str] | Store | None = None, **filters: Any
) -> pd.DataFrame:
    """Every human vote as a DataFrame, oldest first (see ``Store.ratings``)."""
    return get_store(store).ratings(kind, **filters)
