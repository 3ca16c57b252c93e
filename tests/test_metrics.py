"""Metrics on hand-made texts with known answers, and the registry's behaviour."""

from __future__ import annotations

import math

import pytest

import lmbench
from lmbench import metrics
from lmbench.metrics import distinct_n, repetition_rate, self_similarity


@pytest.mark.no_test_model
def test_distinct_n_known_values() -> None:
    assert distinct_n("the cat the cat", 1) == 0.5
    assert distinct_n("the cat the cat", 2) == pytest.approx(2 / 3)
    assert distinct_n("a b c d", 3) == 1.0
    assert math.isnan(distinct_n("one", 2))


@pytest.mark.no_test_model
def test_repetition_rate_known_values() -> None:
    assert repetition_rate("a b c d e f") == 0.0
    assert repetition_rate("a b c a b c") == pytest.approx(2 / 4)
    assert repetition_rate("x x x x x") == 1.0


@pytest.mark.no_test_model
def test_self_similarity_bounds() -> None:
    assert self_similarity(["same text", "same text", "same text"]) == 1.0
    assert self_similarity(["aaaa", "zzzz"]) == 0.0
    assert math.isnan(self_similarity(["only one"]))


def test_run_metrics_from_a_real_run() -> None:
    run = lmbench.generate("Once upon a time", max_tokens=40, logprobs=0, seed=3)
    values = run.metrics
    assert values["chars"] == len(run.text)
    assert 0 < values["distinct_1"] <= 1
    assert values["mean_logprob"] < 0
    assert values["perplexity"] == pytest.approx(math.exp(-values["mean_logprob"]))
    assert values["mean_entropy"] > 0
    stored = lmbench.runs().iloc[-1]
    assert stored["distinct_2"] == pytest.approx(values["distinct_2"])


def test_custom_metric_and_failing_metric_keep_the_run() -> None:
    metrics.register("has_lily", lambda run: float("Lily" in run.text))
    metrics.register("broken", lambda run: 1 / 0)
    try:
        with pytest.warns(UserWarning, match="broken"):
            run = lmbench.generate("Once upon a time", temperature=0, max_tokens=40)
        assert run.metrics["has_lily"] in (0.0, 1.0)
        assert math.isnan(run.metrics["broken"])
        table = lmbench.runs()
        assert len(table) == 1 and table.has_lily[0] == run.metrics["has_lily"]
    finally:
        metrics.unregister("has_lily")
        metrics.unregister("broken")


@pytest.mark.no_test_model
def test_group_summary_has_mean_and_confidence_interval() -> None:
    import pandas as pd

    df = pd.DataFrame({"t": [0.1, 0.1, 0.1, 0.9, 0.9, 0.9], "distinct_2": [0.5, 0.6, 0.7, 0.9, 0.9, 0.9]})
    out = metrics.summarize(df, "t", ["distinct_2"])
    assert out.loc[0.1, ("distinct_2", "mean")] == pytest.approx(0.6)
    assert 0.5 <= out.loc[0.1, ("distinct_2", "low")] < 0.6 < out.loc[0.1, ("distinct_2", "high")] <= 0.7
    assert out.loc[0.9, ("distinct_2", "low")] == out.loc[0.9, ("distinct_2", "high")] == 0.9
    near_one = pd.DataFrame({"t": [1] * 3, "distinct_2": [1.0, 1.0, 0.9]})
    assert metrics.summarize(near_one, "t", ["distinct_2"]).loc[1, ("distinct_2", "high")] <= 1.0, "within range"


@pytest.mark.no_test_model
def test_group_metrics_count_once_per_cell() -> None:
    import pandas as pd

    df = pd.DataFrame(
        {
            "model": "m",
            "prompt_name": "p",
            "temperature": [0.1] * 4 + [0.9] * 4,
            "top_p": [0.5, 0.5, 0.9, 0.9] * 2,
            "seed": [0, 1] * 4,
            "self_similarity": [0.8, 0.8, 0.6, 0.6, 0.3, 0.3, 0.1, 0.1],
        }
    )
    df.attrs["grid"] = ["temperature", "top_p"]
    out = metrics.summarize(df, "temperature", ["self_similarity"])
    assert out.loc[0.1, ("self_similarity", "n")] == 2, "two cells, not four seed rows"
    assert out.loc[0.1, ("self_similarity", "mean")] == pytest.approx(0.7)
