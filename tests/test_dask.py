"""Sweeps on a real Dask cluster (a LocalCluster of two worker processes), recorded in the same store."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator

import pytest
from conftest import TEST_MODEL
from distributed import Client, LocalCluster
from test_lora import write_adapter

import lmbench

PROMPTS = {"a": "Once upon a time", "b": "The little cat"}


@pytest.fixture(scope="module")
def client() -> Iterator[Client]:
    with (
        LocalCluster(processes=True, n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster,
        Client(cluster) as connected,
    ):
        yield connected


def _texts(df) -> dict[tuple[str, float, int], str]:  # type: ignore[no-untyped-def]
    return {(r.prompt_name, r.temperature, r.seed): r.text for r in df.itertuples()}


def _sweep(**options: object):  # type: ignore[no-untyped-def]
    kwargs = {
        "grid": {"temperature": [0.5, 1.0, 1.5]},
        "seeds": 4,
        "max_tokens": 24,
        "progress": False,
        "model": TEST_MODEL,
        **options,
    }
    return lmbench.sweep(PROMPTS, **kwargs)  # type: ignore[arg-type]


def test_a_cluster_sweep_runs_every_coordinate_once_and_matches_a_local_one(client: Client) -> None:
    first = _sweep(name="cluster", cluster=client)
    assert len(first) == 24 and first.id.is_unique and set(first.finish_reason) <= {"stop", "length"}
    assert len(set(_texts(first))) == 24, "every coordinate once"
    again = _sweep(name="local-2", cluster="local:2")
    local = _sweep(name="here")
    assert _texts(first) == _texts(again) == _texts(local)
    assert set(lmbench.runs().source) == {"sweep"} and len(lmbench.runs()) == 72


def test_a_worker_killed_mid_sweep_leaves_no_run_missing_or_twice(client: Client) -> None:
    pids = list(client.run(os.getpid).values())
    killed: list[int] = []

    def kill_once(run: lmbench.Run) -> None:
        if not killed:
            killed.append(pids[0])
            os.kill(pids[0], signal.SIGKILL)

    df = _sweep(name="killed", seeds=8, max_tokens=300, ignore_eos=True, cluster=client, on_run=kill_once)
    assert killed and len(df) == 48 and df.id.is_unique
    assert (df.completion_tokens == 300).all()
    stored = lmbench.runs(sweep_id=df.attrs["sweep_id"])
    assert len(stored) == 48 and stored.id.is_unique, "every run recorded exactly once"
    deadline = time.monotonic() + 60
    while len(client.scheduler_info()["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)  # the nanny restarts the killed worker for the next test


def test_a_lora_scale_sweep_on_the_cluster_gives_the_local_texts(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    adapter = write_adapter(tmp_path / "tiny-lora.gguf")
    options = {"grid": {"lora_scale": [0.0, 0.5, 1.0], "temperature": [0.8]}, "lora": adapter, "seeds": 2}
    there = _sweep(name="lora-cluster", cluster=client, **options)
    here = _sweep(name="lora-here", **options)
    assert len(there) == 12 and there.id.is_unique

    def texts(df):  # type: ignore[no-untyped-def]
        return {(r.prompt_name, r.lora_scale, r.seed): r.text for r in df.itertuples()}

    assert texts(there) == texts(here)
    by_scale = there.groupby("lora_scale").text.apply(tuple)
    assert by_scale[0.0] != by_scale[1.0], "the adapter's scale reached the workers"
    base = _sweep(name="no-lora", grid={"temperature": [0.8]}, seeds=2, cluster=client)
    assert {(r.prompt_name, r.seed): r.text for r in base.itertuples()} == {
        (r.prompt_name, r.seed): r.text for r in there[there.lora_scale == 0.0].itertuples()
    }, "scale 0 on a worker is the base model"
    recorded = lmbench.runs(sweep_id=there.attrs["sweep_id"])
    assert sorted(recorded.lora.map(lambda lora: lora[str(adapter)])) == [0.0] * 4 + [0.5] * 4 + [1.0] * 4


def test_an_interrupted_cluster_sweep_resumes_to_exactly_its_plan(client: Client) -> None:
    cancel = threading.Event()
    heard: list[str] = []

    def stop_after_three(run: lmbench.Run) -> None:
        heard.append(run.id)
        if len(heard) == 3:
            cancel.set()

    # Eight blocks of six long runs on two workers: the cancel lands while most blocks still wait.
    plan = {"seeds": 8, "max_tokens": 200, "ignore_eos": True}
    partial = _sweep(name="resume", cluster=client, cancel=cancel, on_run=stop_after_three, **plan)
    assert 3 <= len(partial) < 48
    full = _sweep(name="resume", cluster=client, **plan)
    assert len(full) == 48 and full.id.is_unique and set(partial.id) <= set(full.id)
    assert len(lmbench.runs(sweep_id=full.attrs["sweep_id"])) == 48


def test_an_unreachable_scheduler_is_a_clear_error_within_seconds() -> None:
    started = time.perf_counter()
    with pytest.raises(lmbench.ClusterError, match=r"cannot reach the Dask scheduler at tcp://127\.0\.0\.1:9"):
        _sweep(name="nowhere", cluster="tcp://127.0.0.1:9")
    assert time.perf_counter() - started < 30
    with pytest.raises(lmbench.ClusterError, match="local:N"):
        _sweep(name="bad", cluster="local:zero")


def test_the_cli_sweeps_on_a_cluster_by_its_address(client: Client, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import subprocess
    import sys

    command = [
        sys.executable,
        "-m",
        "lmbench.cli",
        "sweep",
        "--prompt",
        "Once upon a time",
        "--grid",
        "temperature=0.5,1.0",
        "--seeds",
        "2",
        "--max-tokens",
        "8",
        "-m",
        str(TEST_MODEL),
        "--name",
        "cli",
        "--cluster",
        client.scheduler.address,
        "-o",
        str(tmp_path / "out.csv"),
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Dask dashboard: http" in result.stdout + result.stderr
    assert len(lmbench.runs()) == 4
    elsewhere = [*command[:-6], "--name", "elsewhere", "--cluster", "tcp://127.0.0.1:9"]
    unreachable = subprocess.run(elsewhere, capture_output=True, text=True, timeout=120)
    assert unreachable.returncode != 0 and "cannot reach the Dask scheduler" in unreachable.stderr


def test_a_callers_cluster_decodes_with_each_workers_own_threads() -> None:
    with (
        LocalCluster(processes=True, n_workers=1, threads_per_worker=3, dashboard_address=":0") as cluster,
        Client(cluster) as connected,
    ):
        frame = _sweep(cluster=connected, grid={"temperature": [0.5]}, seeds=2, max_tokens=4)
    assert len(frame) == 4 and set(frame.n_threads) == {3}, "the worker's 3 threads, not this machine's cores"
