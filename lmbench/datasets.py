"""Data sets x prompt templates: the items of an evaluation, each filling ``{placeholders}`` in a template.

A data set is a pandas DataFrame, a list of dicts, or a CSV, JSON lines or Parquet file. Each row
is an item: its id comes from an ``id`` column (else the row number), its columns fill the
template, and the columns a template does not use (a ``reference`` answer, ``assert`` checks)
travel with the run for scoring.
"""

from __future__ import annotations

import json
import math
import os
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ParameterError

DataArg = Any  # a pandas DataFrame, a sequence of dicts, or a path to .csv / .jsonl / .json / .parquet


@dataclass(frozen=True)
class Item:
    """One row of a data set: its id, its variables, its reference answer and its assertions."""

    id: str
    vars: dict[str, Any]
    reference: str | None = None
    assertions: list[dict[str, Any]] = field(default_factory=list)

    def record(self) -> dict[str, Any]:
        """What is stored with each run of this item."""
        return {"id": self.id, "vars": self.vars, "reference": self.reference, "assert": self.assertions}


def _rows(data: DataArg) -> list[dict[str, Any]]:
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return [_plain(row) for row in data.to_dict(orient="records")]
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        suffix = path.suffix.lower()
        try:
            if suffix == ".csv":
                frame = pd.read_csv(path, keep_default_na=False)
            elif suffix in (".jsonl", ".ndjson"):
                frame = pd.read_json(path, lines=True, dtype=False)
            elif suffix == ".json":
                frame = pd.read_json(path, dtype=False)
            elif suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                raise ParameterError(f"data file {path}: use .csv, .jsonl, .json or .parquet", name="data")
        except (OSError, ValueError, ImportError) as exc:
            raise ParameterError(f"cannot read data file {path}: {exc}", name="data") from None
        return _rows(frame)
    if isinstance(data, Sequence) and not isinstance(data, str | bytes):
        rows = list(data)
        for i, row in enumerate(rows):
            if not isinstance(row, Mapping):
                raise ParameterError(f"data row {i} must be a dict of column values, not {row!r}", name="data")
        return [_plain(dict(row)) for row in rows]
    raise ParameterError(
        f"data must be a DataFrame, a list of dicts or a file path, not {type(data).__name__}", name="data"
    )


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """Python values only (NumPy scalars and NaN from pandas become plain values and None)."""
    plain = {}
    for key, value in row.items():
        if hasattr(value, "item") and not isinstance(value, str | bytes | list | dict):
            value = value.item()
        if isinstance(value, float) and math.isnan(value):
            value = None
        plain[str(key)] = value
    return plain


def _assertions(value: Any, where: str) -> list[dict[str, Any]]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ParameterError(f"{where}: the assert column must hold JSON (a list of checks)", name="data") from None
    if isinstance(value, Mapping):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(a, Mapping) for a in value):
        raise ParameterError(f"{where}: assertions must be a list of {{'type': ..., 'value': ...}} dicts", name="data")
    return [dict(a) for a in value]


def load(data: DataArg, *, reference: str = "reference") -> list[Item]:
    """The items of a data set (``ParameterError`` for an empty or unreadable one)."""
    rows = _rows(data)
    if not rows:
        raise ParameterError("the data set is empty: a sweep over data needs at least one row", name="data")
    items, seen = [], set()
    for i, row in enumerate(rows):
        item_id = str(row["id"]) if row.get("id") is not None else str(i)
        if item_id in seen:
            raise ParameterError(f"data row {i}: id {item_id!r} appears twice; ids must be unique", name="data")
        seen.add(item_id)
        ref = row.get(reference)
        checks = _assertions(row.get("assert"), f"data row {i} (id {item_id!r})")
        variables = {k: v for k, v in row.items() if k != "assert"}
        items.append(Item(item_id, variables, None if ref is None else str(ref), checks))
    return items


def placeholders(template: str) -> list[str]:
    """The ``{names}`` a template uses (``ParameterError`` if it is not a valid format string)."""
    try:
        return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as exc:
        raise ParameterError(f"template {template[:60]!r} is not a valid template: {exc}", name="prompts") from None


def fill(template_name: str, template: str, item: Item, row_number: int) -> str:
    """``template`` with the item's variables in place of its placeholders."""
    for name in placeholders(template):
        if not name.isidentifier():
            raise ParameterError(
                f"template {template_name!r}: placeholder {{{name}}} must be a plain column name", name="prompts"
            )
        if name not in item.vars:
            columns = ", ".join(sorted(item.vars))
            raise ParameterError(
                f"template {template_name!r} uses {{{name}}} but data row {row_number} (id {item.id!r}) has no "
                f"{name!r} column; columns: {columns}",
                name="prompts",
            )
    return template.format(**{k: "" if v is None else v for k, v in item.vars.items()})
