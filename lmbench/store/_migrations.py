"""The store's named migrations: SQL, or a function for what SQL alone cannot say, applied once each in order."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator

from ..params import PARAM_SPECS
from ..run import COLUMNS


def _backfill_defaults(conn: sqlite3.Connection) -> None:
    """Parameter columns added after the first release hold NULL in older rows: give them their default.
    Columns that later migrations add (with their defaults) are not there yet."""
    present = {row[1] for row in conn.execute("PRAGMA table_info(runs)")}
    for name, spec in PARAM_SPECS.items():
        if spec.default is not None and name in present:
            column = next(c for c in COLUMNS if c.name == name)
            conn.execute(f"UPDATE runs SET {name} = ? WHERE {name} IS NULL", (column.encode(spec.default),))


def _prompt_as_asked(conn: sqlite3.Connection) -> None:
    """``prompt_sent`` keeps what the model continued; a templated run's ``prompt`` becomes what was asked
    (its last user message) and its ``stop`` loses the template's own strings (``"\nUser:"`` of the plain
    transcript, the model's end-of-turn text that a GGUF template writes into the prompt)."""
    conn.execute("ALTER TABLE runs ADD COLUMN prompt_sent TEXT")
    conn.execute("UPDATE runs SET prompt_sent = prompt")
    rows = conn.execute(
        "SELECT id, messages, chat_format, stop, prompt_sent FROM runs WHERE chat_format IS NOT NULL"
        " AND messages IS NOT NULL"
    ).fetchall()
    for run_id, messages, chat_format, stop, sent in rows:
        turns = json.loads(messages)
        users = [m for m in turns if m.get("role") == "user"] or turns
        asked = str(users[-1].get("content", "")) if users else sent
        stops = json.loads(stop) if stop else []
        template_stops = (
            {"\nUser:"} if chat_format == "plain" else {s for s in stops[-1:] if s.startswith("<") and s in sent}
        )
        kept = [s for s in stops if s not in template_stops]
        conn.execute("UPDATE runs SET prompt = ?, stop = ? WHERE id = ?", (asked, json.dumps(kept), run_id))


MIGRATIONS: list[tuple[str, str | Callable[[sqlite3.Connection], None]]] = [
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
    (
        "0003_change_counter",
        """
        CREATE TABLE _changes (id INTEGER PRIMARY KEY CHECK (id = 1), rewrites INTEGER NOT NULL);
        INSERT INTO _changes VALUES (1, 0);
        CREATE TRIGGER runs_updated AFTER UPDATE ON runs BEGIN UPDATE _changes SET rewrites = rewrites + 1; END;
        CREATE TRIGGER runs_deleted AFTER DELETE ON runs BEGIN UPDATE _changes SET rewrites = rewrites + 1; END;
        CREATE TRIGGER metrics_updated AFTER UPDATE ON metrics BEGIN UPDATE _changes SET rewrites = rewrites + 1; END;
        CREATE TRIGGER metrics_deleted AFTER DELETE ON metrics BEGIN UPDATE _changes SET rewrites = rewrites + 1; END;
        """,
    ),
    ("0004_chat_format", "ALTER TABLE runs ADD COLUMN chat_format TEXT;"),
    ("0005_ignore_eos", "ALTER TABLE runs ADD COLUMN ignore_eos INTEGER;"),
    ("0006_stop_word", "ALTER TABLE runs ADD COLUMN stop_word TEXT;"),
    (
        "0007_identity",
        """
        CREATE TABLE _identity (id INTEGER PRIMARY KEY CHECK (id = 1), store_id TEXT NOT NULL);
        INSERT INTO _identity VALUES (1, lower(hex(randomblob(16))));
        """,
    ),
    ("0008_constraints", "ALTER TABLE runs ADD COLUMN json_schema TEXT; ALTER TABLE runs ADD COLUMN grammar TEXT;"),
    ("0009_items", "ALTER TABLE runs ADD COLUMN item TEXT;"),
    ("0010_backfill_defaults", _backfill_defaults),
    ("0011_run_kind", "ALTER TABLE runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'generate';"),
    (
        "0012_environment_and_forks",
        """
        ALTER TABLE runs ADD COLUMN slots INTEGER;
        ALTER TABLE runs ADD COLUMN n_batch INTEGER;
        ALTER TABLE runs ADD COLUMN kv_cache_type TEXT;
        ALTER TABLE runs ADD COLUMN environment TEXT;
        ALTER TABLE runs ADD COLUMN parent_id TEXT;
        ALTER TABLE runs ADD COLUMN fork_position INTEGER;
        CREATE INDEX runs_parent_id ON runs (parent_id);
        CREATE TABLE environments (id TEXT PRIMARY KEY, facts TEXT NOT NULL) WITHOUT ROWID;
        """,
    ),
    ("0013_tool_calls", "ALTER TABLE runs ADD COLUMN tools TEXT; ALTER TABLE runs ADD COLUMN tool_calls TEXT;"),
    (
        "0014_selection_indexes",  # the newest runs of an experiment or a sweep without sorting all of them
        """
        DROP INDEX IF EXISTS runs_experiment;
        DROP INDEX IF EXISTS runs_sweep_id;
        CREATE INDEX runs_experiment_created_at ON runs (experiment, created_at);
        CREATE INDEX runs_sweep_id_created_at ON runs (sweep_id, created_at);
        """,
    ),
    (
        "0015_ratings",
        """
        CREATE TABLE ratings (
            id TEXT PRIMARY KEY,
            created_at TEXT NOT NULL,
            kind TEXT NOT NULL CHECK (kind IN ('pairwise', 'single')),
            run_a TEXT NOT NULL,
            run_b TEXT,
            shown TEXT,
            verdict TEXT,
            score INTEGER CHECK (score BETWEEN 1 AND 5),
            rater TEXT NOT NULL,
            note TEXT,
            session TEXT,
            CHECK ((kind = 'pairwise') = (run_b IS NOT NULL))
        );
        CREATE INDEX ratings_run_a ON ratings (run_a);
        CREATE INDEX ratings_run_b ON ratings (run_b);
        CREATE INDEX ratings_session ON ratings (session);
        """,
    ),
    ("0016_prompt_as_asked", _prompt_as_asked),
    ("0017_lora", "ALTER TABLE runs ADD COLUMN lora TEXT; ALTER TABLE runs ADD COLUMN lora_scale REAL;"),
    ("0018_logit_bias", "ALTER TABLE runs ADD COLUMN logit_bias TEXT;"),
    (
        "0019_speculative",
        """
        ALTER TABLE runs ADD COLUMN draft TEXT;
        ALTER TABLE runs ADD COLUMN draft_max INTEGER NOT NULL DEFAULT 16;
        ALTER TABLE runs ADD COLUMN draft_min INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN drafted_tokens INTEGER NOT NULL DEFAULT 0;
        ALTER TABLE runs ADD COLUMN accepted_tokens INTEGER NOT NULL DEFAULT 0;
        """,
    ),
    (
        "0020_conversations",  # chat turns know their conversation; a save is a new row, so no writer loses one
        """
        ALTER TABLE runs ADD COLUMN conversation_id TEXT;
        CREATE INDEX runs_conversation_id ON runs (conversation_id);
        CREATE TABLE conversations (
            save INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL,
            name TEXT NOT NULL,
            saved_at TEXT NOT NULL,
            messages TEXT NOT NULL,
            run_ids TEXT NOT NULL,
            tools TEXT
        );
        CREATE INDEX conversations_name ON conversations (name, save);
        CREATE INDEX conversations_id ON conversations (id, save);
        """,
    ),
]


def _statements(script: str) -> Iterator[str]:
    """The complete SQL statements of ``script`` (a trigger body holds ``;`` of its own)."""
    pending = ""
    for piece in script.split(";"):
        pending += piece + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \n;"):
                yield pending
            pending = ""


def missing_migrations(conn: sqlite3.Connection) -> list[str]:
    """The names of the migrations this database has not seen yet (it is not changed)."""
    known = conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = '_migrations'")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")} if known.fetchone()[0] else set()
    return [name for name, _ in MIGRATIONS if name not in done]


def migrate(conn: sqlite3.Connection) -> list[str]:
    """Apply the migrations this database has not seen yet, in order; return their names."""
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT NOT NULL)")
    conn.execute("BEGIN IMMEDIATE")
    try:
        done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
        applied = []
        for name, step in MIGRATIONS:
            if name in done:
                continue
            if callable(step):
                step(conn)
            else:
                for statement in _statements(step):
                    conn.execute(statement)
            conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))
            applied.append(name)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return applied
