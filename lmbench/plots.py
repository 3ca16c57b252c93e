"""Plotly figures of sweep results: metric vs parameter with 95% CIs, heatmaps, per-item scores, quality vs speed.

Functions return ``plotly.graph_objects.Figure`` and have no side effects.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import qualitative

from .choices import confusion
from .errors import ParameterError
from .metrics import bounds_of, summarize
from .variants_lab import LOWER_IS_BETTER, frontier

LABELS = {
    "temperature": "temperature",
    "top_p": "top-p",
    "top_k": "top-k",
    "min_p": "min-p",
    "max_tokens": "max tokens (tokens)",
    "repeat_penalty": "repeat penalty",
    "completion_tokens": "completion length (tokens)",
    "prompt_tokens": "prompt length (tokens)",
    "chars": "length (characters)",
    "words": "length (words)",
    "distinct_1": "distinct-1 (unique unigrams / unigrams)",
    "distinct_2": "distinct-2 (unique bigrams / bigrams)",
    "distinct_3": "distinct-3 (unique trigrams / trigrams)",
    "repetition_rate": "repetition rate (share of repeated trigrams)",
    "mean_logprob": "mean token log-probability (nats)",
    "perplexity": "perplexity",
    "mean_entropy": "mean next-token entropy (nats)",
    "self_similarity": "self-similarity across seeds (0..1)",
    "tokens_per_s": "decode speed (tokens/s)",
    "ttft_s": "time to first token (s)",
    "total_s": "generation time (s)",
    "rating_up": "thumbs up (share of raters)",
    "rating_score": "human score (1-5)",
    "rating_wins": "pairwise wins (share, ties half)",
}


def label(column: str) -> str:
    """An axis title with units for a column name."""
    return LABELS.get(column, column.replace("_", " "))


def _about(df: pd.DataFrame) -> str:
    """What the figure's runs were made of (model, prompt, seeds), under its title: a saved file says it too."""
    parts = []
    for column, name in (("model_name", "model"), ("prompt", "prompt")):
        if column in df and len(values := [str(v) for v in pd.unique(df[column].dropna())]):
            shown = values[0] if len(values[0]) <= 60 else values[0][:59] + "…"
            parts.append(f"{name} {shown!r}" + (f" (+{len(values) - 1} more)" if len(values) > 1 else ""))
    if "seed" in df and len(seeds := sorted(pd.unique(df["seed"].dropna()))):
        listed = ", ".join(str(int(s)) for s in seeds[:6]) + (", …" if len(seeds) > 6 else "")
        parts.append(f"{len(seeds)} seed{'s' if len(seeds) != 1 else ''} ({listed})")
    return " · ".join(parts)


def _titled(fig: go.Figure, title: str, df: pd.DataFrame) -> go.Figure:
    about = _about(df)
    fig.update_layout(title={"text": f"{title}<br><sup>{about}</sup>" if about else title})
    return fig


def _bounded(fig: go.Figure, metric: str, axis: str) -> None:
    """A bounded metric's axis shows its whole range (distinct-2 on 0 to 1), with a little room at the ends."""
    bounds = bounds_of(metric)
    if bounds is not None:
        low, high = bounds
        pad = (high - low) * 0.04
        getattr(fig, f"update_{axis}axes")(range=[low - pad, high + pad])


def _require(df: pd.DataFrame, *columns: str | None) -> None:
    missing = [c for c in columns if c is not None and c not in df.columns]
    if missing:
        raise ParameterError(
            f"column {missing[0]!r} is not in the table; available: {', '.join(map(str, df.columns))}",
            name=missing[0],
        )


def plot_sweep(
    df: pd.DataFrame, x: str = "temperature", y: str = "distinct_2", color: str | None = None, facet: str | None = None
) -> go.Figure:
    """Mean of ``y`` against ``x`` with bootstrap 95% intervals (within the metric's range), one line per ``color``."""
    _require(df, x, y, color, facet)
    keys = [k for k in (facet, color, x) if k is not None]
    stats = summarize(df, keys, [y])[y].reset_index()
    facets = [None] if facet is None else list(pd.unique(stats[facet]))
    colors = [None] if color is None else list(pd.unique(stats[color]))
    fig = go.Figure() if facet is None else _facets(len(facets), [f"{facet} = {v}" for v in facets])
    palette = qualitative.Plotly
    for col_i, fv in enumerate(facets, start=1):
        for ci, cv in enumerate(colors):
            part = stats
            if facet is not None:
                part = part[part[facet] == fv]
            if color is not None:
                part = part[part[color] == cv]
            part = part.sort_values(x)
            trace = go.Scatter(
                x=part[x],
                y=part["mean"],
                error_y={
                    "type": "data",
                    "symmetric": False,
                    "array": (part["high"] - part["mean"]).fillna(0),
                    "arrayminus": (part["mean"] - part["low"]).fillna(0),
                    "visible": True,
                },
                mode="lines+markers",
                name=f"{color} = {cv}" if color is not None else label(y),
                legendgroup=str(cv),
                showlegend=col_i == 1 and color is not None,
                line={"color": palette[ci % len(palette)]},
                customdata=part[["low", "high", "n"]].to_numpy(),
                hovertemplate=f"{x}=%{{x}}<br>{y}=%{{y:.4g}} (95% interval %{{customdata[0]:.3g}} to "
                "%{customdata[1]:.3g})<br>n=%{customdata[2]}<extra></extra>",
            )
            if facet is None:
                fig.add_trace(trace)
            else:
                fig.add_trace(trace, row=1, col=col_i)
    fig.update_xaxes(title_text=label(x))
    fig.update_yaxes(title_text=label(y))
    fig.update_layout(template="plotly_white")
    _bounded(fig, y, "y")
    return _titled(fig, f"{label(y)} vs {label(x)} (mean, bootstrap 95% interval)", df)


def _facets(n: int, titles: list[str]) -> go.Figure:
    from plotly.subplots import make_subplots

    return make_subplots(rows=1, cols=n, subplot_titles=titles, shared_yaxes=True)


def plot_heatmap(df: pd.DataFrame, x: str = "temperature", y: str = "top_p", z: str = "distinct_2") -> go.Figure:
    """Mean of ``z`` over the seeds for every (``x``, ``y``) cell of a two-parameter grid."""
    _require(df, x, y, z)
    table = df.pivot_table(index=y, columns=x, values=z, aggfunc="mean").sort_index()
    fig = _heatmap(table, z, f"{label(z)} by {label(x)} and {label(y)}", label(x), label(y), digits=3)
    return _titled(fig, f"{label(z)} by {label(x)} and {label(y)}", df)


def _heatmap(table: pd.DataFrame, z: str, title: str, x_title: str, y_title: str, *, digits: int) -> go.Figure:
    """A heatmap of a pivot table, each cell labelled with its value and every row with its name; a bounded
    metric's colours span its whole range."""
    bounds = bounds_of(z)
    zrange = {"zmin": bounds[0], "zmax": bounds[1]} if bounds is not None else {}
    fig = go.Figure(
        go.Heatmap(
            x=[str(v) for v in table.columns],
            y=[str(v) for v in table.index],
            z=table.to_numpy(),
            text=table.round(digits).to_numpy(),
            texttemplate="%{text}",
            colorscale="Viridis",
            colorbar={"title": {"text": label(z)}},
            **zrange,
        )
    )
    rows = [str(v) for v in table.index]
    fig.update_layout(
        title=title,
        xaxis_title=x_title,
        yaxis={"title": y_title, "tickmode": "array", "tickvals": rows, "ticktext": rows, "automargin": True},
        height=max(320, 140 + 28 * len(rows)),  # every row keeps room for its label
        template="plotly_white",
    )
    return fig


def _setting(df: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """A readable label per row for the setting it was made with (``temperature=0.2, top_p=0.9``)."""
    if len(by) == 1:
        return df[by[0]].astype(str)
    return df[list(by)].astype(str).apply(lambda row: ", ".join(f"{k}={v}" for k, v in row.items()), axis=1)


def plot_items(df: pd.DataFrame, score: str = "rougeL", by: str | Sequence[str] = "temperature") -> go.Figure:
    """Mean ``score`` per data-set item (rows) and setting (columns): which items fail where."""
    keys = [by] if isinstance(by, str) else list(by)
    _require(df, score, "item", *keys)
    table = df.assign(_setting=_setting(df, keys)).pivot_table(
        index="item", columns="_setting", values=score, aggfunc="mean", sort=False
    )
    fig = _heatmap(table, score, f"{label(score)} per item and setting", "setting", "item", digits=2)
    return _titled(fig, f"{label(score)} per item and setting", df)


def plot_quality_speed(df: pd.DataFrame, score: str = "rougeL", by: str | Sequence[str] = "temperature") -> go.Figure:
    """One point per setting: mean ``score`` against mean decode speed, for choosing settings."""
    keys = [by] if isinstance(by, str) else list(by)
    _require(df, score, "tokens_per_s", *keys)
    points = df.assign(_setting=_setting(df, keys)).groupby("_setting", sort=False)[[score, "tokens_per_s"]].mean()
    fig = go.Figure(
        go.Scatter(
            x=points["tokens_per_s"],
            y=points[score],
            mode="markers+text",
            text=[str(s) for s in points.index],
            textposition=[_POSITIONS[i % len(_POSITIONS)] for i in range(len(points))],
            cliponaxis=False,
            hovertemplate=f"%{{text}}<br>{label(score)}=%{{y:.3f}}<br>%{{x:.1f}} tokens/s<extra></extra>",
        )
    )
    fig.update_layout(xaxis_title=label("tokens_per_s"), yaxis_title=label(score), template="plotly_white")
    speeds = points["tokens_per_s"].dropna()
    if len(speeds):  # room beside the outer points for their labels
        spread = float(speeds.max() - speeds.min()) or float(speeds.max()) or 1.0
        fig.update_xaxes(range=[float(speeds.min()) - 0.2 * spread, float(speeds.max()) + 0.2 * spread])
    _bounded(fig, score, "y")
    return _titled(fig, f"{label(score)} against speed, per setting", df)


# Label positions taken in turn, so that labels of points close together do not cover one another.
_POSITIONS = ("top center", "bottom center", "middle right", "middle left", "top right", "bottom left")


def plot_frontier(
    df: pd.DataFrame,
    x: str = "tokens_per_s",
    y: str = "top1_agreement",
    size: str | None = "file_mb",
    name: str = "variant",
) -> go.Figure:
    """``lmbench.variants``' table as quality against speed (marker area: ``size``), the frontier's variants named.

    A variant is on the frontier when no other is better on both axes (``lmbench.variants_lab.frontier``);
    the title lists them, best ``y`` first, and a line joins them.
    """
    _require(df, x, y, name, *([size] if size else []))
    on = frontier(df, x, y)
    sizes = df[size].astype(float) if size else pd.Series(1.0, index=df.index)
    scale = 40 / max(float(np.sqrt(sizes.max())), 1e-9)
    best = df[on].sort_values(y, ascending=y in LOWER_IS_BETTER)
    fig = go.Figure()
    for flag, group in ((True, df[on]), (False, df[~on])):
        fig.add_trace(
            go.Scatter(
                x=group[x],
                y=group[y],
                mode="markers+text" if flag else "markers",
                text=group[name].astype(str),
                textposition="top center",
                marker={"size": np.sqrt(sizes[group.index]) * scale + 6, "opacity": 0.9 if flag else 0.4},
                name="on the frontier" if flag else "beaten",
                hovertemplate=f"%{{text}}<br>{label(y)}=%{{y:.4g}}<br>{label(x)}=%{{x:.4g}}<extra></extra>",
            )
        )
    line = best.sort_values(x)
    fig.add_trace(go.Scatter(x=line[x], y=line[y], mode="lines", line={"dash": "dot"}, showlegend=False))
    fig.update_layout(
        title=f"Frontier: {', '.join(best[name].astype(str))}",
        xaxis_title=label(x),
        yaxis_title=label(y),
        template="plotly_white",
    )
    return fig


def plot_confusion(df: pd.DataFrame, *, truth: str = "answer", predicted: str = "prediction") -> go.Figure:
    """The confusion matrix of ``lmbench.choose``'s answers: true labels down, predicted across."""
    table = confusion(df, truth=truth, predicted=predicted)
    fig = _heatmap(table, "count", "Confusion matrix", "predicted", "true", digits=0)
    fig.update_yaxes(autorange="reversed")  # the first label at the top, as confusion matrices are read
    return fig
