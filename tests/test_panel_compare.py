"""The Compare tab driven in Python against the real test model: columns that fill as they generate, the
prompt shown once as asked, metrics by their names in words, and models and presets compared as well as
values of one parameter."""

from __future__ import annotations

from pathlib import Path

import pytest

import lmbench


@pytest.fixture
def panel(panel: lmbench.Panel) -> lmbench.Panel:
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 30
    panel.form.toggles["ignore_eos"].value = True
    return panel


def _compare(panel: lmbench.Panel) -> list[str]:
    """Click Compare; every value the output took on the way."""
    seen: list[str] = []
    panel.compare.output.observe(lambda change: seen.append(change["new"]), names="value")
    panel.compare.button.click()
    panel.wait(120)
    assert not panel.busy
    assert panel.error.value == "", panel.error.value
    return seen


def test_the_columns_fill_as_they_generate_under_the_prompt_as_asked(panel: lmbench.Panel) -> None:
    panel.compare.values.value = "0.2, 0.7, 1.2"
    seen = _compare(panel)
    runs = lmbench.runs()
    assert list(runs.temperature) == [0.2, 0.7, 1.2] and runs.seed.nunique() == 1
    final = panel.compare.output.value
    assert final.count("lmbench-compare-column") == 3
    streaming = [v for v in seen if "generating…" in v]
    assert streaming, "the columns were shown while they generated"
    partial = streaming[0].split("lmbench-compare-text")[1:]
    assert any(len(p.split(">", 1)[1].split("</div>")[0]) > 0 for p in partial), "text arrived before the end"
    assert "generating…" not in final
    assert final.count("Once upon a time") == 1 and "lmbench-compare-prompt" in final, "the prompt once, as asked"
    for run in runs.itertuples():
        assert f"temperature = {run.temperature}" in final
        assert f"{run.completion_tokens} tokens" in final
    assert "distinct word pairs" in final and "mean log-probability" in final, "metrics by their names in words"
    assert "distinct_2" not in final and "mean_logprob" not in final


def test_presets_are_compared(panel: lmbench.Panel) -> None:
    lmbench.save_preset("cold", temperature=0.1, top_k=5)
    lmbench.save_preset("hot", temperature=1.5)
    panel.compare.mode.value = "presets"
    assert panel.compare.param.layout.display == "none", "no parameter to pick when comparing presets"
    panel.compare.values.value = "cold, hot"
    _compare(panel)
    runs = lmbench.runs()
    assert list(runs.temperature) == [0.1, 1.5] and list(runs.top_k) == [5, 40] and runs.seed.nunique() == 1
    final = panel.compare.output.value
    assert ">cold<" in final and ">hot<" in final


def test_models_are_compared(panel: lmbench.Panel, model_path: Path, synthetic_model: Path) -> None:
    panel.compare.mode.value = "models"
    assert str(model_path) in panel.compare.values.value, "the panel's model is the first to compare"
    panel.compare.values.value = f"{model_path}, {synthetic_model}"
    _compare(panel)
    runs = lmbench.runs()
    assert list(runs.model_name) == [model_path.name, synthetic_model.name] and runs.seed.nunique() == 1
    final = panel.compare.output.value
    assert final.count("lmbench-compare-column") == 2 and "generating…" not in final


def test_bad_settings_are_refused_before_anything_runs(panel: lmbench.Panel) -> None:
    panel.compare.mode.value = "presets"
    panel.compare.values.value = "precise, nonexistent"
    panel.compare.button.click()
    panel.wait(30)
    assert "unknown preset &#x27;nonexistent&#x27;; available presets: precise" in panel.error.value
    panel.compare.values.value = "precise"
    panel.compare.button.click()
    panel.wait(30)
    assert "compare needs 2 to 4 presets, got 1" in panel.error.value
    assert len(lmbench.runs()) == 0
