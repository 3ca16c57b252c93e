"""``pip install lmbench`` without extras: the engine, sweeps and the API work; the rest names its extra."""

from __future__ import annotations

import subprocess
import sys

import tomllib
from conftest import REPO, TEST_MODEL

# What the extras bring; none of it may be needed by the core.
BLOCKED = ("ipywidgets", "IPython", "ipykernel", "papermill", "jupyterlab", "plotly", "mistune", "anywidget")
BLOCKED += ("rouge_score", "sacrebleu", "distributed")

SCRIPT = f"""
import importlib.abc, sys

class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {BLOCKED!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None

sys.meta_path.insert(0, Absent())
import lmbench

run = lmbench.generate("Once upon a time", model={str(TEST_MODEL)!r}, max_tokens=8, seed=1, ignore_eos=True)
df = lmbench.sweep("Once", model={str(TEST_MODEL)!r}, grid={{"temperature": [0.0, 1.0]}}, seeds=1, max_tokens=4)
print("core", run.completion_tokens, len(df))
for call in (lambda: lmbench.panel(), lambda: lmbench.plot_sweep(df, x="temperature", y="chars")):
    try:
        call()
    except lmbench.MissingExtraError as exc:
        print("missing", exc)
data = [{{"id": "a", "topic": "cats", "reference": "a cat"}}]
try:
    lmbench.sweep("{{topic}}", data=data, grid={{}}, model={str(TEST_MODEL)!r}, max_tokens=4, scorers=["rougeL"])
except lmbench.MissingExtraError as exc:
    print("missing", exc)
"""


def test_the_core_runs_without_extras_and_each_missing_extra_is_named() -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "core 8 2"
    missing = [line for line in lines if line.startswith("missing")]
    assert len(missing) == 3
    assert "lmbench.panel needs the 'ipywidgets' package" in missing[0] and "lmbench[notebook]" in missing[0]
    assert "lmbench.plot_sweep needs the 'plotly' package" in missing[1] and "lmbench[notebook]" in missing[1]
    assert "ROUGE" in missing[2] and "lmbench[eval]" in missing[2]


def test_the_core_dependencies_leave_the_extras_out() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    core = " ".join(project["dependencies"]).lower()
    for name in ("ipywidgets", "jupyterlab", "papermill", "plotly", "rouge-score", "sacrebleu", "dask"):
        assert name not in core
    assert {"notebook", "eval", "dask"} <= set(project["optional-dependencies"])
