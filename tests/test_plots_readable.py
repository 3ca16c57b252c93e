"""Plots a person can read: every item labelled, bounded metrics on their range, titles that say what was run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import lmbench

ANIMALS = ["cat", "dog", "owl", "fox", "bee", "cow", "pig", "hen"]


@pytest.fixture
def items_df() -> pd.DataFrame:
    data = [{"id": f"item-{animal}", "animal": animal} for animal in ANIMALS]
    return lmbench.sweep(
        "The {animal}", data=data, grid={"temperature": [0.0, 1.0]}, seeds=1, max_tokens=6, progress=False
    )


def test_plot_items_labels_every_item_on_the_metrics_range(items_df: pd.DataFrame) -> None:
    fig = lmbench.plot_items(items_df, score="distinct_2")
    heat = fig.data[0]
    assert len(heat.y) == 8 and list(fig.layout.yaxis.ticktext) == list(heat.y), "8 items, 8 labels"
    assert fig.layout.yaxis.tickmode == "array" and fig.layout.height >= 140 + 28 * 8
    assert (heat.zmin, heat.zmax) == (0.0, 1.0), "distinct-2 coloured over 0..1"


def test_quality_speed_labels_take_turns_and_bounded_axes_show_their_range(
    items_df: pd.DataFrame, tmp_path: Path
) -> None:
    fig = lmbench.plot_quality_speed(items_df, score="distinct_2")
    points = fig.data[0]
    assert len(points.text) == 2 and points.textposition[0] != points.textposition[1]
    assert points.cliponaxis is False
    low, high = fig.layout.yaxis.range
    assert low < 0 < 1 < high < 1.1, "distinct-2 on 0 to 1, not 0 to 2"
    sweep_fig = lmbench.plot_sweep(items_df, x="temperature", y="distinct_2")
    assert sweep_fig.layout.yaxis.range[1] < 1.1
    speed = lmbench.plot_sweep(items_df, x="temperature", y="tokens_per_s")
    assert speed.layout.yaxis.range is None, "an unbounded metric keeps plotly's own range"
    title = fig.layout.title.text
    assert "stories260K" in title and "'The {animal}'" not in title and "prompt 'The cat'" in title
    assert "1 seed (" in title
    saved = tmp_path / "quality.html"
    fig.write_html(saved)
    assert "stories260K" in saved.read_text()
