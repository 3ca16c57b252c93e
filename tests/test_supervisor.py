"""The API keeps each model in a supervised worker process: a crash fails that model's requests only.

The crashing model is a real one: a crafted file whose weights llama.cpp cannot compute (it dies
of SIGSEGV at the first decode). lmbench's child-process check would refuse it, so the tests
forge that check's cached verdict, as if the crash came on a later input instead.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from pathlib import Path

import crafted
import jupyterserver
import llama_cpp
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings
from lmbench.serve._requests import parse
from lmbench.serve._routes import find_route
from lmbench.serve._supervisor import Supervisor


@pytest.fixture
def crashing_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A model file that kills llama.cpp's process at the first decode, listed in the model folders."""
    folder = tmp_path / "models"
    folder.mkdir()
    path = crafted.write(TEST_MODEL, folder / "segfaults.gguf", crafted.CASES["integer weights"][0])
    cache = tmp_path / "cache"
    digest = lmbench.models.sha256(path)
    verdicts = {f"{digest}|{llama_cpp.__version__}|{kind}": "ok" for kind in ("repack", "plain")}
    (cache / "lmbench").mkdir(parents=True)
    (cache / "lmbench" / "verified-models.json").write_text(json.dumps(verdicts))
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(folder))
    return path


def _long_stream(url: str, results: dict[str, object]) -> None:
    """A streamed story on the good model that is still going while the other model crashes."""
    body = {
        "prompt": "Once upon a time",
        "max_tokens": 12000,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    with requests.post(f"{url}/v1/completions", json=body, stream=True, timeout=300) as response:
        results["status"] = response.status_code
        lines = [line for line in response.iter_lines() if line]
    results["done"] = lines[-1] == b"data: [DONE]"
    results["usage"] = json.loads(lines[-2][6:])["usage"]


def test_a_model_that_crashes_llama_cpp_fails_its_request_and_nothing_else(crashing_model: Path) -> None:
    with Server(
        Settings(model=str(TEST_MODEL), n_ctx=16384, max_tokens_cap=12000, strict_models=True), port=0
    ) as server:
        first = requests.post(f"{server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert first.status_code == 200, first.text
        other: dict[str, object] = {}
        streaming = threading.Thread(target=_long_stream, args=(server.url, other))
        streaming.start()
        body = {"model": crashing_model.stem, "prompt": "Once upon a time", "max_tokens": 4}
        crash = requests.post(f"{server.url}/v1/completions", json=body, timeout=120)
        still_streaming = streaming.is_alive()
        assert crash.status_code == 500, crash.text
        error = crash.json()["error"]
        assert error["code"] == "model_worker_crashed" and "segfaults.gguf" in error["message"]
        assert "killed by SIG" in error["message"] and "llama.cpp's last lines" in error["message"]
        assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}
        streaming.join()
        assert other["status"] == 200 and other["done"], other
        assert still_streaming, "the other client's stream was in flight during the crash"
        assert other["usage"]["completion_tokens"] == 12000, other  # type: ignore[index]
        again = requests.post(f"{server.url}/v1/completions", json=body, timeout=120)
        assert again.json()["error"]["code"] == "model_worker_crashed", "a new worker tried again, and died alone"
        after = requests.post(f"{server.url}/v1/completions", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert after.status_code == 200, after.text
    runs = lmbench.runs()
    assert set(runs.model_name) == {TEST_MODEL.name}, "the crashed requests recorded nothing half-done"


def test_a_killed_worker_fails_its_stream_and_the_next_request_gets_a_new_one() -> None:
    with Server(Settings(model=str(TEST_MODEL), n_ctx=16384), port=0) as server:
        assert requests.post(f"{server.url}/api/generate", json={"prompt": "Hi", "max_tokens": 2}, timeout=60).ok
        (pid,) = server.backend.workers().values()  # type: ignore[union-attr]
        body = {"prompt": "Once upon a time", "max_tokens": 12000, "ignore_eos": True, "stream": True}
        with requests.post(f"{server.url}/api/generate", json=body, stream=True, timeout=120) as response:
            lines = response.iter_lines()
            next(line for line in lines if line)
            os.kill(pid, signal.SIGKILL)
            rest = [json.loads(line[6:]) for line in lines if line and line != b"data: [DONE]"]
        assert rest[-1]["error"]["code"] == "model_worker_crashed" and "SIGKILL" in rest[-1]["error"]["message"]
        answer = requests.post(f"{server.url}/api/generate", json={"prompt": "Hi", "max_tokens": 2}, timeout=60)
        assert answer.status_code == 200, answer.text
        assert pid not in server.backend.workers().values()  # type: ignore[union-attr]


def test_a_stream_whose_listener_fails_raises_in_its_request_and_the_worker_answers_on() -> None:
    """Streamed events reach the listener from the supervisor's reader thread; a listener that raises fails
    its own request (the error comes back to the caller) and never the reader that serves every request."""
    supervisor = Supervisor(Settings(model=str(TEST_MODEL), n_ctx=256))
    route = find_route("api/generate")["POST"]
    body = {"prompt": "Once upon a time", "max_tokens": 8, "ignore_eos": True, "stream": True}

    def broken(event: dict[str, object]) -> None:
        raise RuntimeError("the client's connection is gone")

    try:
        with pytest.raises(RuntimeError, match="connection is gone"):
            supervisor.call(route, parse(route.request, body), broken)
        events: list[dict[str, object]] = []
        answer = supervisor.call(route, parse(route.request, body), events.append)
        assert events and answer is not None, "the same worker streams the next request"
    finally:
        supervisor.close()


def test_the_jupyter_extension_outlives_a_crashing_model(
    crashing_model: Path, tmp_path: Path, lmbench_home: Path
) -> None:
    root = tmp_path / "root"
    root.mkdir()
    with jupyterserver.running(tmp_path, lmbench_home, root) as jupyter:
        base, auth = f"{jupyter.url}/lmbench", {"Authorization": f"token {jupyter.token}"}
        body = {"model": crashing_model.stem, "prompt": "Once upon a time", "max_tokens": 4}
        crash = requests.post(f"{base}/v1/completions", json=body, headers=auth, timeout=120)
        assert crash.status_code == 500 and crash.json()["error"]["code"] == "model_worker_crashed", crash.text
        good = requests.post(f"{base}/api/generate", json={"prompt": "Hi", "max_tokens": 2}, headers=auth, timeout=120)
        assert good.status_code == 200, good.text
        assert requests.get(f"{jupyter.url}/api/status", headers=auth, timeout=10).ok, "Jupyter itself lives"


def test_serve_stopped_with_ctrl_c_under_load_leaves_no_worker_log(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-c", "import sys, lmbench.cli; sys.exit(lmbench.cli.main())"]
    server = subprocess.Popen(
        [*command, "serve", "--port", str(port), "--model", str(TEST_MODEL)],
        env={**os.environ, "TMPDIR": str(tmp_path)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),  # as a shell starts a background job
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                requests.get(f"{url}/v1/models", timeout=5)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        body = {"prompt": "Once upon a time", "max_tokens": 12000, "ignore_eos": True, "stream": True}
        with requests.post(f"{url}/api/generate", json=body, stream=True, timeout=120) as response:
            next(line for line in response.iter_lines() if line)
            assert list(tmp_path.glob("lmbench-worker-*.log")), "the worker keeps its log while it runs"
            server.send_signal(signal.SIGINT)
            assert server.wait(60) == 0
    finally:
        if server.poll() is None:
            server.kill()
    assert list(tmp_path.glob("lmbench-worker-*.log")) == []
