"""Saved chat conversations: each save is a new row of the ``conversations`` table, reopened by name.

A conversation has an id that its chat turns carry (``Run.conversation_id``) and a name a person
gives it. Saving never updates a row: two panels saving the same name at once both keep their
save, and opening a name gives its newest save (older ones stay readable by their ``save`` number).
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pandas as pd

from .. import tools as tools_mod
from ..errors import ParameterError, StoreError
from ..params import MAX_LABEL_CHARS, check_text

# The roles a saved message may have (OpenAI's, tool results included).
ROLES = ("system", "user", "assistant", "tool")
# What ``Store.conversations()`` lists per save.
COLUMNS = ("save", "name", "id", "saved_at", "turns")


@dataclass(frozen=True)
class Conversation:
    """One saved conversation: its messages (OpenAI-style, tool calls included), the run that made each
    message (``None`` for what a person wrote) and the tools it offered."""

    id: str
    name: str
    save: int
    saved_at: datetime
    messages: list[dict[str, Any]]
    run_ids: list[str | None]
    tools: list[dict[str, Any]] | None = None


def checked_row(
    name: Any,
    messages: Any,
    conversation_id: Any = None,
    run_ids: Any = None,
    tools: Any = None,
) -> dict[str, Any]:
    """The row that saves a conversation, or ``ParameterError`` naming what is wrong (nothing is written)."""
    check_text("name", name, max_chars=MAX_LABEL_CHARS)
    if not name.strip():
        raise ParameterError("a conversation needs a name to be saved under", name="name", value=name)
    _check_messages(messages)
    if conversation_id is not None:
        check_text("conversation_id", conversation_id, max_chars=64)
    if tools is not None:
        tools_mod.check_tools(tools)
    ids = [None] * len(messages) if run_ids is None else list(run_ids)
    if len(ids) != len(messages) or not all(i is None or isinstance(i, str) for i in ids):
        raise ParameterError(
            f"run_ids must give one run id (or None) per message: {len(messages)} messages, {len(ids)} ids",
            name="run_ids",
        )
    return {
        "id": conversation_id or uuid.uuid4().hex,
        "name": name.strip(),
        "saved_at": datetime.now(timezone.utc).isoformat(),
        "messages": json.dumps(list(messages), ensure_ascii=False),
        "run_ids": json.dumps(ids),
        "tools": None if tools is None else json.dumps(list(tools), ensure_ascii=False),
    }


def _check_messages(messages: Any) -> None:
    if isinstance(messages, str) or not isinstance(messages, list) or not messages:
        raise ParameterError('messages must be a non-empty list of {"role": ..., "content": ...}', name="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            raise ParameterError(f"messages[{i}] needs a role, one of {', '.join(ROLES)}", name="messages")
        content = message.get("content")
        if content is not None:
            check_text(f"messages[{i}] content", content)
    try:
        json.dumps(messages, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"messages must be JSON values: {exc}", name="messages") from None


def insert(conn: sqlite3.Connection, row: dict[str, Any]) -> int:
    """Write one save (one short transaction); return its ``save`` number."""
    cursor = conn.execute(
        "INSERT INTO conversations (id, name, saved_at, messages, run_ids, tools) VALUES (?, ?, ?, ?, ?, ?)",
        (row["id"], row["name"], row["saved_at"], row["messages"], row["run_ids"], row["tools"]),
    )
    return int(cursor.lastrowid or 0)


def read_one(conn: sqlite3.Connection, name: str, save: int | None, where: str) -> Conversation:
    """The newest save of the conversation named ``name`` (or save number ``save`` of it)."""
    sql = "SELECT save, id, name, saved_at, messages, run_ids, tools FROM conversations WHERE name = ?"
    args: tuple[Any, ...] = (name,)
    if save is not None:
        sql, args = sql + " AND save = ?", (name, save)
    found = conn.execute(sql + " ORDER BY save DESC LIMIT 1", args).fetchone()
    if found is None:
        raise StoreError(f"no conversation named {name!r}{'' if save is None else f' (save {save})'} in {where}")
    number, key, named, saved_at, messages, run_ids, tools = found
    return Conversation(
        id=key,
        name=named,
        save=number,
        saved_at=datetime.fromisoformat(saved_at),
        messages=json.loads(messages),
        run_ids=json.loads(run_ids),
        tools=json.loads(tools) if tools else None,
    )


def read_all(conn: sqlite3.Connection) -> pd.DataFrame:
    """Every save, oldest first: its number, name, conversation id, time and number of messages."""
    rows = conn.execute(
        "SELECT save, name, id, saved_at, json_array_length(messages) FROM conversations ORDER BY save"
    ).fetchall()
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    frame["saved_at"] = pd.to_datetime(frame["saved_at"], utc=True, format="ISO8601")
    return frame
