"""Side-by-side comparison of generated texts, one column per setting."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from .errors import ParameterError
from .run import BORDER, MUTED
from .store._store import Store, get_store

KEY_METRICS = ("completion_tokens", "distinct_2", "mean_logprob", "tokens_per_s", "finish_reason")
# Every cell breaks a word too long for its column (a path, a long token) inside the column, so no header
# or text can run over its neighbour's.
WRAP = "overflow-wrap:break-word;white-space:normal"


@dataclass
class Comparison:
    """Texts aligned by prompt and seed (rows) and by the compared setting (columns)."""

    frame: pd.DataFrame
    by: str
    metrics: tuple[str, ...]

    def _cell(self, row: pd.Series | None) -> str:
        if row is None:
            return "<td style='color:var(--jp-content-font-color3,#999)'>—</td>"
        stats = []
        for name in self.metrics:
            value = row.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                continue
            stats.append(f"{name} {value:.3g}" if isinstance(value, float) else f"{name} {value}")
        return (
            f"<td style='vertical-align:top;text-align:left;padding:6px;{WRAP};{BORDER}'>"
            f"<div style='white-space:pre-wrap;word-wrap:break-word'>{html.escape(str(row['text']))}</div>"
            f"<div style='{MUTED};font-size:80%;margin-top:4px'>{html.escape(' · '.join(stats))}</div></td>"
        )

    def to_html(self) -> str:
        """The comparison as an HTML table (wrapping text, metrics under each output)."""
        frame = self.frame
        columns = sorted(pd.unique(frame[self.by]), key=lambda v: (str(type(v)), v))
        rows_key = [c for c in ("model", "prompt_name", "prompt", "seed") if c in frame and c != self.by]
        width = f"{90 / max(len(columns), 1):.0f}%"
        cell = f"{BORDER};padding:6px;text-align:left;{WRAP}"
        # The compared setting's name once, over the columns; each column headed by its value alone.
        head = "".join(
            f"<th style='width:{width};{cell}' title='{html.escape(f'{self.by} = {c}')}'>{html.escape(_short(c))}</th>"
            for c in columns
        )
        body = []
        for key, group in frame.groupby(rows_key, sort=False, dropna=False):
            labels = dict(zip(rows_key, key if isinstance(key, tuple) else (key,), strict=True))
            prompt = str(labels.get("prompt", ""))
            title = f"seed {labels.get('seed', '')}" + (f"<br><i>{html.escape(prompt[:80])}</i>" if prompt else "")
            cells = {row[self.by]: row for _, row in group.iterrows()}
            body.append(
                f"<tr><th style='vertical-align:top;text-align:left;{BORDER};padding:6px;font-weight:normal;{WRAP}'>"
                f"{title}</th>" + "".join(self._cell(cells.get(c)) for c in columns) + "</tr>"
            )
        return (
            "<table class='lmbench-compare' style='border-collapse:collapse;table-layout:fixed;width:100%'>"
            f"<thead><tr><th style='width:10%'></th><th colspan='{len(columns)}' style='{cell}'>{html.escape(self.by)}"
            f"</th></tr><tr><th></th>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
        )

    def _repr_html_(self) -> str:
        return self.to_html()

    def __repr__(self) -> str:
        return f"<Comparison of {len(self.frame)} runs by {self.by}: {list(pd.unique(self.frame[self.by]))}>"


def _short(value: object) -> str:
    """A column's value as its header shows it: a model file by its name (the full path in the tooltip)."""
    text = str(value)
    return text.rsplit("/", 1)[-1] if text.endswith(".gguf") else text


def compare(
    df_or_run_ids: pd.DataFrame | Sequence[str],
    by: str = "temperature",
    *,
    metrics: Sequence[str] = KEY_METRICS,
    store: str | Store | None = None,
) -> Comparison:
    """Show generated texts side by side, one column per value of ``by`` (a DataFrame of runs or run ids)."""
    if isinstance(df_or_run_ids, pd.DataFrame):
        frame = df_or_run_ids
    else:
        target = get_store(store)
        runs = [target.get(run_id) for run_id in df_or_run_ids]
        frame = pd.DataFrame([{**r.values(), **r.metrics} for r in runs])
    if by not in frame.columns:
        raise ParameterError(
            f"cannot compare by {by!r}: not a column; available: {', '.join(map(str, frame.columns))}", name="by"
        )
    return Comparison(frame=frame, by=by, metrics=tuple(m for m in metrics if m != by))
