"""Plots and side-by-side comparison built from a real sweep."""

from __future__ import annotations

from pathlib import Path

import plotly.graph_objects as go
import pytest

import lmbench


@pytest.fixture
def sweep_df():
    return lmbench.sweep(
        "Once upon a time",
        grid={"temperature": [0.2, 1.0, 1.5], "top_p": [0.5, 1.0]},
        seeds=3,
        max_tokens=24,
        progress=False,
    )


def test_plot_sweep_mean_with_error_bars(sweep_df, tmp_path: Path) -> None:
    fig = lmbench.plot_sweep(sweep_df, x="temperature", y="distinct_2")
    assert isinstance(fig, go.Figure) and len(fig.data) == 1
    trace = fig.data[0]
    assert list(trace.x) == [0.2, 1.0, 1.5]
    assert trace.error_y.array is not None and len(trace.error_y.array) == 3
    expected = sweep_df.groupby("temperature").distinct_2.mean()
    assert list(trace.y) == pytest.approx(list(expected))
    assert "distinct-2" in fig.layout.yaxis.title.text and fig.layout.xaxis.title.text == "temperature"
    out = tmp_path / "plot.html"
    fig.write_html(out)
    assert out.stat().st_size > 1000


def test_plot_sweep_color_facet_and_speed(sweep_df) -> None:
    fig = lmbench.plot_sweep(sweep_df, x="temperature", y="completion_tokens", color="top_p")
    assert {t.name for t in fig.data} == {"top_p = 0.5", "top_p = 1.0"}
    faceted = lmbench.plot_sweep(sweep_df, x="temperature", y="tokens_per_s", facet="top_p")
    assert len(faceted.data) == 2 and "tokens/s" in faceted.layout.yaxis.title.text
    with pytest.raises(lmbench.ParameterError, match="no_such_metric"):
        lmbench.plot_sweep(sweep_df, y="no_such_metric")


def test_heatmap_of_two_parameter_grid(sweep_df) -> None:
    fig = lmbench.plot_heatmap(sweep_df, x="temperature", y="top_p", z="distinct_2")
    heat = fig.data[0]
    assert len(heat.x) == 3 and len(heat.y) == 2 and len(heat.z) == 2


def test_compare_aligns_texts_by_seed(sweep_df) -> None:
    part = sweep_df[sweep_df.top_p == 1.0]
    comparison = lmbench.compare(part, by="temperature")
    page = comparison._repr_html_()
    assert ">temperature</th>" in page, "the compared setting named once, over its values"
    for value in (0.2, 1.0, 1.5):
        assert f"title='temperature = {value}'>{value}</th>" in page
    assert page.count("<tr>") == 2 + 3, "two header rows and one row per seed"
    import html

    for text in part.text:
        assert html.escape(text) in page
    by_ids = lmbench.compare(list(part.id[:2]), by="temperature")
    assert len(by_ids.frame) == 2
    with pytest.raises(lmbench.ParameterError, match="nope"):
        lmbench.compare(part, by="nope")
