"""The runs table as Arrow, with a columnar snapshot beside the database for fast re-reads.

Reading 100,000 runs row by row through sqlite3 costs about a second on a small machine; most
of that is building Python objects. Runs are only ever appended (a re-recorded run gets a new
rowid), so the table read last time, kept as an Arrow IPC file ``<db>-table.arrow``, plus the
rows added since is the whole table. Anything else that changes old rows (an UPDATE or DELETE,
counted by triggers in ``_changes``) or a schema change invalidates the snapshot.
"""

from __future__ import annotations

import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.feather as feather

# Below this many rows read from SQLite a snapshot is not worth writing.
SNAPSHOT_MIN_ROWS = 1000

ROWID = "_rowid"
# A temporary snapshot file this old was left by a process that died while writing it.
STALE_TMP_S = 600
_ARROW_TYPES = {"INTEGER": pa.int64(), "REAL": pa.float64()}
_SINCE = "rowid > ?"


def snapshot_path(db_path: Path) -> Path:
    """Where the snapshot of ``db_path`` lives (like SQLite's own ``-wal`` and ``-shm`` files)."""
    return db_path.with_name(db_path.name + "-table.arrow")


def read(conn: sqlite3.Connection, columns: dict[str, str], snapshot: Path | None) -> pa.Table:
    """``columns`` (name -> declared type) of every run plus one column per metric, in rowid order.

    With ``snapshot`` the table is served from the snapshot file plus newer rows, and the
    snapshot is brought up to date when many rows had to be read from SQLite.
    """
    conn.execute("BEGIN")  # one consistent view across the queries below
    try:
        identity = conn.execute("SELECT store_id FROM _identity").fetchone()[0]  # not another database's snapshot
        key = f"{identity}|{conn.execute('SELECT rewrites FROM _changes').fetchone()[0]}|{','.join(columns)}"
        count = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
        base = _load(snapshot, key) if snapshot is not None else None
        since = pc.max(base[ROWID]).as_py() if base is not None and base.num_rows else -1
        fresh = _rows(conn, columns, _SINCE, (since,))
    finally:
        conn.execute("COMMIT")
    table = fresh if base is None else _append(base, fresh)
    if table.num_rows != count:
        return read(conn, columns, None)
    if snapshot is not None and fresh.num_rows >= SNAPSHOT_MIN_ROWS:
        _save(table, snapshot, key)
    return table


def select(
    conn: sqlite3.Connection, columns: dict[str, str], where: str, params: Sequence[Any], last: int | None
) -> pa.Table:
    """The runs matching ``where`` (an SQL condition on the runs table), only the ``last`` newest when given,
    with their metrics: read from SQLite alone, so a small selection costs what it returns."""
    conn.execute("BEGIN")
    try:
        return _rows(conn, columns, where, params, last)
    finally:
        conn.execute("COMMIT")


def _rows(
    conn: sqlite3.Connection,
    columns: dict[str, str],
    where: str = _SINCE,
    params: Sequence[Any] = (-1,),
    last: int | None = None,
) -> pa.Table:
    """Runs matching ``where`` (the ``last`` newest, when given) and their metrics, as typed Arrow columns."""
    query = f"SELECT rowid, {', '.join(columns)} FROM runs WHERE {where}"
    if last is None:
        rows = conn.execute(f"{query} ORDER BY rowid", params).fetchall()
    else:
        rows = conn.execute(f"{query} ORDER BY created_at DESC, rowid DESC LIMIT ?", (*params, last)).fetchall()[::-1]
    values = list(zip(*rows, strict=True)) if rows else [()] * (len(columns) + 1)
    arrays = {ROWID: pa.array(values[0], pa.int64())}
    for (name, kind), column in zip(columns.items(), values[1:], strict=True):
        arrays[name] = pa.array(column, _ARROW_TYPES.get(kind, pa.string()))
    ids = arrays["id"].to_pylist() if "id" in arrays else []
    position = {run_id: i for i, run_id in enumerate(ids)}
    if where == _SINCE and last is None:  # the table's newer part: one pass over the metrics joined
        found = conn.execute(
            "SELECT m.run_id, m.name, m.value FROM metrics m JOIN runs r ON r.id = m.run_id WHERE r.rowid > ?", params
        )
    else:  # the runs chosen, by their primary key
        found = conn.execute(
            "SELECT run_id, name, value FROM metrics WHERE run_id IN (SELECT value FROM json_each(?))",
            (json.dumps(ids),),
        )
    metrics: dict[str, list[float | None]] = {}
    for run_id, name, value in found:
        values_of = metrics.get(name)
        if values_of is None:
            values_of = metrics[name] = [None] * len(rows)
        values_of[position[run_id]] = value
    for name in sorted(metrics):
        if name not in arrays:
            arrays[name] = pa.array(metrics[name], pa.float64())
    return pa.table(arrays)


def _append(base: pa.Table, fresh: pa.Table) -> pa.Table:
    """``base`` then ``fresh``; a run in both (re-recorded) keeps only its newer row."""
    if not fresh.num_rows:
        return base
    base = base.filter(pc.invert(pc.is_in(base["id"], value_set=fresh["id"])))
    return pa.concat_tables([base, fresh], promote_options="permissive")


def _load(path: Path, key: str) -> pa.Table | None:
    """The snapshot if it exists, is readable and belongs to the database's current state."""
    try:
        table = feather.read_table(path, memory_map=False)
    except (OSError, pa.ArrowException):
        return None
    metadata = table.schema.metadata or {}
    return table if metadata.get(b"lmbench_key") == key.encode() else None


def _save(table: pa.Table, path: Path, key: str) -> None:
    """Replace the snapshot atomically; a failure only costs speed, never data."""
    table = table.replace_schema_metadata({"lmbench_key": key})
    _remove_stale(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as handle:
            feather.write_feather(table, handle, compression="lz4")
        os.replace(tmp, path)
    except (OSError, pa.ArrowException):
        Path(tmp).unlink(missing_ok=True)


def _remove_stale(path: Path) -> None:
    """Delete half-written snapshot files that a killed process left (older than any write in progress)."""
    cutoff = time.time() - STALE_TMP_S
    for leftover in path.parent.glob(f"{path.name}*.tmp"):
        try:
            if leftover.stat().st_mtime < cutoff:
                leftover.unlink()
        except OSError:
            continue
