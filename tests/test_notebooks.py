"""The notebooks run headless with papermill, exactly as the README says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import nbformat
import papermill
from conftest import REPO, TEST_MODEL

import lmbench


def _errors(path: Path) -> list[str]:
    notebook = nbformat.read(path, as_version=4)
    return [
        o.get("ename", "")
        for c in notebook.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]


def test_readme_sweep_command(tmp_path: Path) -> None:
    out = tmp_path / "out.ipynb"
    env = {**os.environ, "LMBENCH_MODEL": ""}
    env["LMBENCH_MODEL_PATH"] = str(TEST_MODEL.parent)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "papermill",
            str(REPO / "notebooks" / "temperature_sweep.ipynb"),
            str(out),
            "-p",
            "temperatures",
            "[0.1, 0.7, 1.3]",
            "-p",
            "seeds",
            "2",
            "-p",
            "output_dir",
            str(tmp_path / "results"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert _errors(out) == []
    shown = [
        o["data"]["text/plain"]
        for c in nbformat.read(out, as_version=4).cells
        for o in c.get("outputs", [])
        if "data" in o and "sweep:" in o["data"].get("text/plain", "")
    ]
    assert len(shown) == 1 and shown[0].startswith("sweep: 6/6 runs (100%)"), "the saved bar is its last state"
    results = sorted(p.name for p in (tmp_path / "results").iterdir())
    assert "sweep.csv" in results and "temperature_vs_distinct_2.html" in results
    assert "plotly.min.js" in results, "the plots open offline"
    html = (tmp_path / "results" / "temperature_vs_distinct_2.html").read_text()
    assert "cdn.plot.ly" not in html and 'src="plotly.min.js"' in html
    import pandas as pd

    table = pd.read_csv(tmp_path / "results" / "sweep.csv")
    assert len(table) == 6 and sorted(table.temperature.unique()) == [0.1, 0.7, 1.3]
    # The default model: the packaged instruct model, asked through its chat template, answering in English.
    assert set(table.model_name) == {"SmolLM2-135M-Instruct.Q4_1.gguf"} and set(table.chat_format) == {"gguf"}
    calm = table[table.temperature == 0.1].text
    assert all(any(word in text.lower() for word in ("sea", "ocean", "water")) for text in calm), calm.tolist()
    assert all(len(text.split()) >= 3 for text in table.text), [t for t in table.text if len(t.split()) < 3]


def _stdout(path: Path) -> str:
    notebook = nbformat.read(path, as_version=4)
    return "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []) if o.get("name") == "stdout")


def test_summarize_notebook_is_an_evaluation(tmp_path: Path) -> None:
    out = tmp_path / "summarize.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "summarize.ipynb"),
        str(out),
        parameters={
            "seeds": 1,
            "temperatures": [0.5],
            "top_p_values": [0.9, 0.5],
            "max_tokens": 24,
            "data": str(REPO / "notebooks" / "data" / "articles.jsonl"),
        },
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    notebook = nbformat.read(out, as_version=4)
    html = [o["data"].get("text/html", "") for c in notebook.cells for o in c.get("outputs", []) if "data" in o]
    assert any("lmbench-run" in h for h in html)
    assert "8 articles" in _stdout(out) and "Best: template " in _stdout(out)
    runs = lmbench.runs("summarize", heavy=True)
    sweep = runs[runs.source == "sweep"]
    assert len(sweep) == 8 * 2 * 2 and sweep.item.notna().all(), "8 articles x 2 templates x 2 top-p"
    assert len(runs[runs.source == "judge"]) == len(sweep), "every summary graded once"


def test_json_extraction_notebook(tmp_path: Path) -> None:
    out = tmp_path / "json_extraction.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "json_extraction.ipynb"),
        str(out),
        parameters={"seeds": 1, "data": str(REPO / "notebooks" / "data" / "people.jsonl")},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    assert "every constrained answer matches the schema: True" in _stdout(out)


def test_arena_notebook_runs_headless_before_any_vote(tmp_path: Path) -> None:
    out = tmp_path / "arena.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "arena.ipynb"),
        str(out),
        parameters={"seeds": 1, "rater": "papermill"},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    shown = [o.get("data", {}) for c in nbformat.read(out, as_version=4).cells for o in c.get("outputs", [])]
    assert any("application/vnd.jupyter.widget-view+json" in data for data in shown), "the arena is displayed"
    assert any("vote on a few pairs above" in data.get("text/plain", "") for data in shown)
    assert lmbench.ratings().empty and len(lmbench.runs("arena")) == 3 * 2


def test_classify_reviews_notebook(tmp_path: Path) -> None:
    out = tmp_path / "classify_reviews.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "classify_reviews.ipynb"),
        str(out),
        parameters={"limit": 4, "data": str(REPO / "notebooks" / "data" / "reviews.jsonl")},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    printed = _stdout(out)
    assert "8 reviews (4 en, 4 es)" in printed and "Best template: " in printed
    notebook = nbformat.read(out, as_version=4)
    plotly = "application/vnd.plotly.v1+json"
    figures = [o for c in notebook.cells for o in c.get("outputs", []) if plotly in o.get("data", {})]
    assert len(figures) == 2, "a confusion matrix by likelihood and one by constrained generation"
    runs = lmbench.runs("classify-reviews")
    assert (runs.kind == "choice").sum() == 8 * 3 and (runs.kind == "generate").sum() == 8


def test_which_quant_notebook(tmp_path: Path) -> None:
    out = tmp_path / "which_quant.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "which_quant.ipynb"),
        str(out),
        parameters={
            "test_model": str(TEST_MODEL),
            "default_model": str(lmbench.models.packaged()[0].path),  # the tests' $LMBENCH_MODEL is the test model
            "types": ["Q8_0", "Q4_0"],
            "limit": 6,
            "max_tokens": 8,
            "out": str(tmp_path / "quants"),
            "data": str(REPO / "notebooks" / "data" / "stories_mc.jsonl"),
        },
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    printed = _stdout(out)
    assert "6 stories" in printed
    assert printed.count("test: ") == 1 and printed.count("default: ") == 1, "a recommendation for each model"
    notebook = nbformat.read(out, as_version=4)
    plotly = "application/vnd.plotly.v1+json"
    figures = [o for c in notebook.cells for o in c.get("outputs", []) if plotly in o.get("data", {})]
    assert len(figures) == 2, "a frontier plot per model"
    assert sorted(p.name for p in (tmp_path / "quants").iterdir()) == [
        "SmolLM2-135M-Instruct.Q4_0.gguf",
        "SmolLM2-135M-Instruct.Q8_0.gguf",
        "stories260K.Q4_0.gguf",
        "stories260K.Q8_0.gguf",
    ]
    measured = lmbench.runs("which-quant")
    assert len(measured) == 2 * 3 * 2, "a warm-up and a measured generation per file, 3 files per model"


def test_tools_notebook_reports_tool_call_accuracy_by_temperature(tmp_path: Path) -> None:
    out = tmp_path / "tools.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "tools.ipynb"),
        str(out),
        parameters={
            "model": str(lmbench.models.packaged()[0].path),  # the default model (the tests' $LMBENCH_MODEL differs)
            "temperatures": [0.2, 1.2],
            "seeds": 1,
        },
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    printed = _stdout(out)
    assert printed.count("temperature 0.2: right function ") == 1 and "temperature 1.2: right function " in printed
    runs = lmbench.runs(experiment="tool-calls")
    assert len(runs) == 2 * 4 and set(runs.model_name) == {"SmolLM2-135M-Instruct.Q4_1.gguf"}
    assert runs.tool_calls.map(bool).all(), "every run called a tool (the call is required)"


def test_code_tasks_notebook(tmp_path: Path) -> None:
    out = tmp_path / "code_tasks.ipynb"
    papermill.execute_notebook(
        str(REPO / "notebooks" / "code_tasks.ipynb"),
        str(out),
        parameters={"limit": 2, "seeds": 2, "max_tokens": 32},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    assert _errors(out) == []
    printed = _stdout(out)
    assert "2 HumanEval problems x 2 seeds: HumanEval/0, HumanEval/1" in printed
    assert "pass@1: " in printed and "pass@2: " in printed and "over 2 problems" in printed
    runs = lmbench.runs("code-tasks")
    assert len(runs) == 2 * 2 and runs.tests.notna().all(), "every answer tested and its score stored"
