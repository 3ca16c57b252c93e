"""Data sets x prompt templates: the items of an evaluation, each filling ``{placeholders}`` in a template.

A data set is a pandas DataFrame, a list of dicts, or a CSV, JSON lines or Parquet file. Each row
is an item: its id comes from an ``id`` column (else the row number), its columns fill the
template, and the columns a template does not use (a ``reference`` answer, ``assert`` checks, the
``tool_call`` expected of a sweep that offers tools) travel with the run for scoring.
"""

from __future__ import annotations

import datetime
import decimal
import json
import math
import os
import re
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
    tool_call: dict[str, Any] | None = None  # the call expected: {"name": ..., "arguments": {...}} (arguments optional)

    def record(self) -> dict[str, Any]:
        """What is stored with each run of this item."""
        record = {"id": self.id, "vars": self.vars, "reference": self.reference, "assert": self.assertions}
        return record if self.tool_call is None else {**record, "tool_call": self.tool_call}


def write_table(frame: Any, path: str | os.PathLike[str]) -> Path:
    """Write a DataFrame by its file's suffix: CSV, JSON lines (.jsonl, .ndjson), a JSON array (.json) or Parquet.

    The same suffixes data sets are read from, so an exported table is a data set again.
    """
    target = check_table_path(path)
    suffix = target.suffix.lower()
    if suffix == ".csv":
        frame.to_csv(target, index=False)
    elif suffix in (".jsonl", ".ndjson", ".json"):
        frame.to_json(target, orient="records", lines=suffix != ".json", date_format="iso")
    else:
        frame.to_parquet(target, index=False)
    return target


TABLE_SUFFIXES = (".csv", ".jsonl", ".ndjson", ".json", ".parquet")


def check_table_path(path: str | os.PathLike[str]) -> Path:
    """``path`` if ``write_table`` can write it (by its suffix), else ``ParameterError``: checked before the work."""
    target = Path(path)
    if target.suffix.lower() not in TABLE_SUFFIXES:
        listed = f"{', '.join(TABLE_SUFFIXES[:-1])} or {TABLE_SUFFIXES[-1]}"
        raise ParameterError(f"cannot write {target.name!r}: use {listed}", name="path")
    return target


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
                return _json_lines(path)
            elif suffix == ".json":
                frame = pd.read_json(path, dtype=False)
            elif suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                raise ParameterError(f"data file {path}: use .csv, .jsonl, .ndjson, .json or .parquet", name="data")
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


def _json_lines(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON lines file: one JSON object per line (blank lines skipped)."""
    rows = []
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ParameterError(f"data file {path} line {number} is not JSON: {exc}", name="data") from None
            if not isinstance(row, dict):
                raise ParameterError(
                    f"data file {path} line {number} must be a JSON object of column values, not a "
                    f"{type(row).__name__}",
                    name="data",
                )
            rows.append(_plain(row))
    return rows


def _plain(row: Mapping[Any, Any]) -> dict[str, Any]:
    """The row as JSON values, checked now so a run can always be recorded with it.

    NumPy scalars become Python numbers, NaN and missing values None, timestamps ISO 8601 text,
    decimals numbers, arrays lists; a value with no obvious JSON form (bytes, a duration, an
    object) is refused naming its column.
    """
    return {str(key): _json_value(value, str(key)) for key, value in row.items()}


def _json_value(value: Any, column: str) -> Any:
    import numpy as np
    import pandas as pd

    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, str | bool | int):
        return value
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            raise ParameterError(f"data column {column!r} holds {value}, which JSON cannot carry", name="data")
        return value
    if isinstance(value, np.generic) and not isinstance(value, np.datetime64 | np.timedelta64 | np.bytes_):
        return _json_value(value.item(), column)
    if isinstance(value, decimal.Decimal):
        return _json_value(int(value) if value == value.to_integral_value() else float(value), column)
    if isinstance(value, np.datetime64):
        return _json_value(pd.Timestamp(value), column)
    if isinstance(value, datetime.datetime | datetime.date | datetime.time):  # pandas' Timestamp too
        return value.isoformat()
    if isinstance(value, list | tuple | np.ndarray):
        return [_json_value(v, column) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _json_value(v, column) for k, v in value.items()}
    what = "binary data (bytes)" if isinstance(value, bytes | bytearray | np.bytes_) else type(value).__name__
    raise ParameterError(
        f"data column {column!r} holds {what}, which cannot be recorded with a run; convert or drop the column",
        name="data",
    )


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


def _tool_call(value: Any, where: str) -> dict[str, Any] | None:
    """A ``tool_call`` cell: ``{"name": ..., "arguments": {...}}`` as a dict or JSON text (empty: none)."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            value = None
    if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
        raise ParameterError(
            f'{where}: tool_call must be {{"name": ..., "arguments": {{...}}}} (a dict or JSON text)', name="data"
        )
    if "arguments" in value and not isinstance(value["arguments"], Mapping):
        raise ParameterError(f"{where}: tool_call arguments must be an object", name="data")
    return dict(value)


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
        where = f"data row {i} (id {item_id!r})"
        checks = _assertions(row.get("assert"), where)
        call = _tool_call(row.get("tool_call"), where)
        variables = {k: v for k, v in row.items() if k not in ("assert", "tool_call")}
        items.append(Item(item_id, variables, None if ref is None else str(ref), checks, call))
    return items


# The widest padding or the most digits a template's format spec may ask for: a prompt must fit a context anyway.
MAX_FORMAT_WIDTH = 10_000
# Python's format-spec mini-language: [[fill]align][sign][z][#][0][width][grouping][.precision][type].
_FORMAT_SPEC = re.compile(
    r"(?:.?[<>=^])?[-+ ]?z?#?0?(?P<width>\d+)?[_,]?(?:\.(?P<precision>\d+))?[bcdeEfFgGnosxX%]?", re.DOTALL
)


def placeholders(template: str, name: str = "prompt") -> list[str]:
    """The ``{names}`` a template uses; ``ParameterError`` unless it holds plain placeholders only.

    A placeholder is a column name with an optional ``!r``/``!s``/``!a`` conversion and a plain
    format spec (``{x:>10}``, ``{score:.2f}``) of at most ``MAX_FORMAT_WIDTH`` width and precision:
    no attribute or index access and no placeholder inside a format spec (``{x:{y.real}}`` would
    let a template reach into the values' objects).
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ParameterError(f"template {name!r} is not a valid template: {exc}", name="prompts") from None
    names = []
    for _, field_name, spec, conversion in parsed:
        if field_name is None:
            continue
        where = f"template {name!r}: placeholder {{{field_name}}}"
        if not field_name.isidentifier():
            raise ParameterError(f"{where} must be a plain column name", name="prompts")
        if conversion not in (None, "r", "s", "a"):
            raise ParameterError(f"{where}: conversion !{conversion} is not one of !r, !s, !a", name="prompts")
        spec = spec or ""
        if "{" in spec or "}" in spec:
            raise ParameterError(
                f"{where}: format spec {spec!r} holds a placeholder; only plain format specs are allowed",
                name="prompts",
            )
        match = _FORMAT_SPEC.fullmatch(spec)
        if match is None:
            raise ParameterError(f"{where}: {spec!r} is not a format spec", name="prompts")
        for part in ("width", "precision"):
            if int(match.group(part) or 0) > MAX_FORMAT_WIDTH:
                raise ParameterError(
                    f"{where}: format {part} {int(match.group(part)):,} is above the limit of {MAX_FORMAT_WIDTH:,}",
                    name="prompts",
                )
        names.append(field_name)
    return names


def fill(template_name: str, template: str, item: Item, row_number: int) -> str:
    """``template`` with the item's variables in place of its placeholders."""
    row = f"data row {row_number} (id {item.id!r})"
    for name in placeholders(template, template_name):
        if name not in item.vars:
            columns = ", ".join(sorted(item.vars))
            raise ParameterError(
                f"template {template_name!r} uses {{{name}}} but {row} has no {name!r} column; columns: {columns}",
                name="prompts",
            )
    try:
        return template.format(**{k: "" if v is None else v for k, v in item.vars.items()})
    except (ValueError, TypeError) as exc:
        raise ParameterError(f"template {template_name!r} cannot be filled with {row}: {exc}", name="prompts") from None
