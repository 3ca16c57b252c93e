"""Sweeps on the real test model: coordinates, determinism, resume after interruption, validation."""

from __future__ import annotations

import _thread
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import after

import lmbench
from lmbench.sweep import planned_runs


def test_sweep_runs_the_full_cross_product_with_coordinates() -> None:
    df = lmbench.sweep(
        {"a": "Once upon a time", "b": "Lily went"},
        grid={"temperature": [0.2, 1.0], "top_p": [0.5, 0.95]},
        seeds=2,
        max_tokens=12,
        experiment="grid",
        progress=False,
    )
    assert len(df) == 2 * 2 * 2 * 2
    cells = set(zip(df.prompt_name, df.temperature, df.top_p, df.seed, strict=True))
    assert cells == {(p, t, q, s) for p in "ab" for t in (0.2, 1.0) for q in (0.5, 0.95) for s in (0, 1)}
    assert df.sweep_id.nunique() == 1 and set(df.source) == {"sweep"}
    assert {"distinct_2", "mean_logprob", "self_similarity", "model"} <= set(df.columns)
    assert df.attrs["grid"] == ["temperature", "top_p"]
    assert len(lmbench.runs("grid")) == 16


def test_same_sweep_twice_gives_identical_texts_and_resume_skips_done_runs() -> None:
    kwargs = {"grid": {"temperature": [0.5, 1.2]}, "seeds": 3, "max_tokens": 30, "progress": False}
    first = lmbench.sweep("Once upon a time", name="one", **kwargs)
    second = lmbench.sweep("Once upon a time", name="two", **kwargs)
    assert list(first.text) == list(second.text)
    before = lmbench.runs()
    again = lmbench.sweep("Once upon a time", name="one", **kwargs)
    assert len(lmbench.runs()) == len(before) == 12, "nothing ran twice"
    assert list(again.id) == list(first.id)


def test_invalid_grids_fail_before_any_generation() -> None:
    cases = [
        ({"tempreature": [0.5]}, "tempreature"),
        ({"temperature": []}, "non-empty"),
        ({"temperature": [0.5, -1]}, r"grid\['temperature'\]\[1\]"),
        ({"top_p": [0.5, 1.5]}, "top_p"),
        ({"seed": [1, 2]}, "seeds="),
        ({"temperature": 0.5}, "list"),
    ]
    for grid, message in cases:
        with pytest.raises(lmbench.ParameterError, match=message):
            lmbench.sweep("Once", grid=grid, progress=False)
    with pytest.raises(lmbench.ParameterError, match="both in the grid and fixed"):
        lmbench.sweep("Once", grid={"temperature": [0.1]}, temperature=0.5, progress=False)
    with pytest.raises(lmbench.ParameterError):
        lmbench.sweep("Once", grid={"temperature": [0.1]}, seeds=0, progress=False)
    assert lmbench.runs().empty


def test_models_list_runs_the_grid_on_every_model(model_path: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy-of-stories.gguf"
    shutil.copy(model_path, copy)
    lmbench.unload()  # a loaded engine keeps its settings (say, a small context) for every later call
    df = lmbench.sweep(
        "Once upon a time", grid={"temperature": [0.0]}, seeds=2, model=[str(model_path), str(copy)], progress=False
    )
    assert df.groupby("model").size().to_dict() == {str(model_path): 2, str(copy): 2}
    assert set(df.model_name) == {"stories260K.gguf", "copy-of-stories.gguf"}
    assert df.text.nunique() == 1, "the same weights give the same greedy text"
    assert len(lmbench.loaded()) == 1, "one model resident at a time"


@pytest.mark.parametrize("batch", [True, False])
def test_keyboard_interrupt_keeps_finished_runs_and_rerun_completes(batch: bool) -> None:
    kwargs = {"grid": {"temperature": [0.3, 0.8, 1.3]}, "seeds": 20, "max_tokens": 200}
    total = len(planned_runs("Once upon a time", **kwargs))
    kwargs.update(progress=False, batch=batch, batch_size=4)
    # Ctrl-C once five runs are scored, with Python's own handler as in a terminal or kernel
    # (``interrupt_main`` runs it in the main thread; a background job starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            lmbench.sweep("Once upon a time", name="ki", on_run=after(5, _thread.interrupt_main), **kwargs)
    finally:
        signal.signal(signal.SIGINT, previous)
    partial = lmbench.runs()
    assert 0 < len(partial) < total
    finished = partial[partial.finish_reason != "cancelled"]
    assert len(finished) >= 4
    df = lmbench.sweep("Once upon a time", name="ki", **kwargs)
    assert len(df) == total and df.id.is_unique
    assert len(lmbench.runs()) == total, "the cancelled run was replaced, not duplicated"
    kept = df.set_index("id").loc[finished.id]
    assert list(kept.text) == list(finished.text), "finished runs were kept, not redone"


KILLED = """
import lmbench
lmbench.sweep("Once upon a time", name="killed", grid={"temperature": [0.5, 1.0]}, seeds=50, max_tokens=150)
"""


def test_killed_process_keeps_finished_runs_and_rerun_fills_the_gaps(lmbench_home: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-c", KILLED], stderr=subprocess.DEVNULL)
    db = lmbench_home / "runs.db"
    deadline = time.time() + 120
    count = 0
    while time.time() < deadline and count < 10:
        time.sleep(0.05)
        if db.exists():
            try:
                with sqlite3.connect(db, timeout=5) as conn:
                    count = conn.execute("SELECT count(*) FROM runs").fetchone()[0]
            except sqlite3.OperationalError:
                count = 0
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 10 <= count < 100, "the sweep was killed part-way"
    kept = lmbench.runs()
    assert 10 <= len(kept) < 100
    df = lmbench.sweep(
        "Once upon a time", name="killed", grid={"temperature": [0.5, 1.0]}, seeds=50, max_tokens=150, progress=False
    )
    assert len(df) == 100 and len(lmbench.runs()) == 100
    keys = [json.dumps(c, sort_keys=True) for c in df.sweep_coords]
    assert len(set(keys)) == 100


def test_higher_temperature_raises_distinct_2() -> None:
    df = lmbench.sweep(
        "Once upon a time",
        grid={"temperature": [0.1, 1.5]},
        seeds=3,
        max_tokens=200,
        repeat_penalty=1.0,
        top_k=0,
        top_p=1.0,
        min_p=0.0,
        progress=False,
    )
    means = df.groupby("temperature").distinct_2.mean()
    assert means[1.5] > means[0.1]
    similarity = df.groupby("temperature").self_similarity.first()
    assert similarity[1.5] < similarity[0.1]


def test_another_prompt_is_another_sweep_and_rows_come_in_grid_order() -> None:
    grid = {"temperature": [0.1, 0.9, 1.5]}
    first = lmbench.sweep("Once upon a time", grid=grid, seeds=[5, 1], max_tokens=6, progress=False)
    second = lmbench.sweep("The dog ran", grid=grid, seeds=[5, 1], max_tokens=6, progress=False)
    assert first.attrs["sweep_id"] != second.attrs["sweep_id"], "same prompt names, other texts: not a resume"
    assert set(second.prompt) == {"The dog ran"} and len(lmbench.runs()) == 12
    assert list(zip(second.temperature, second.seed, strict=True)) == [
        (0.1, 5),
        (0.1, 1),
        (0.9, 5),
        (0.9, 1),
        (1.5, 5),
        (1.5, 1),
    ], "the plan's order, not the order runs finished in"


def test_a_sweep_without_metrics_records_none() -> None:
    df = lmbench.sweep(
        "Once upon a time", grid={"temperature": [0.5]}, seeds=2, max_tokens=6, metrics=None, progress=False
    )
    assert len(df) == 2
    assert not {"distinct_2", "self_similarity", "mean_logprob", "chars"} & set(df.columns)
    assert all(lmbench.get_store().get(run_id).metrics == {} for run_id in df.id)


def test_a_sweep_is_one_spec_planned_then_run_by_a_named_executor(model_path: Path) -> None:
    from lmbench.sweep import EXECUTORS, SweepSpec, plan, register_executor, run_sweep

    spec = SweepSpec.build(
        prompts="Once upon a time", grid={"temperature": [0.0, 1.0]}, seeds=2, model=str(model_path), name="spec"
    )
    first = plan(spec)
    assert len(first.runs) == len(first.todo) == 4 and first.sweep_id == plan(spec).sweep_id
    seen: list[int] = []

    def counting(the_plan, save, should_stop, announce):  # a third-party executor, registered like the built-ins
        seen.append(len(the_plan.todo))
        EXECUTORS["local"](the_plan, save, should_stop, announce)

    register_executor("counting", counting)
    try:
        df = run_sweep(spec.model_copy(update={"executor": "counting"}), progress=False)
        assert seen == [4] and len(df) == 4 and set(df.finish_reason) <= {"stop", "length"}
        assert plan(spec).todo == [], "the plan knows what is done: a second run resumes with nothing to make"
        again = lmbench.sweep(
            "Once upon a time",
            grid={"temperature": [0.0, 1.0]},
            seeds=2,
            model=str(model_path),
            name="spec",
            progress=False,
        )
        assert list(again.id) == list(df.id)
    finally:
        EXECUTORS.pop("counting")


@pytest.mark.no_test_model
def test_sweep_options_are_checked_by_the_spec() -> None:
    from lmbench.sweep import SweepSpec

    with pytest.raises(lmbench.ParameterError, match="unknown sweep option 'colour'"):
        SweepSpec.build(prompts="x", colour="red")
    with pytest.raises(lmbench.ParameterError, match="sweep option batch: input should be a valid boolean"):
        lmbench.sweep("x", grid={"temperature": [0.5]}, batch="yes")
    with pytest.raises(lmbench.ParameterError, match="unknown executor 'moon'; registered: local, dask"):
        lmbench.sweep("x", grid={"temperature": [0.5]}, executor="moon")
    assert lmbench.runs().empty, "nothing ran"
