"""The Docker route: the API at Jupyter's root paths (here, on the real server), then the image end to end.

The first tests run JupyterLab on this machine with ``c.LmbenchServer.root_routes`` (what the image
configures): the guide's ``/api/generate`` on Jupyter's port, guarded like ``lmbench serve``, and a
clean stop on SIGTERM. ``test_image`` (marked ``image``; ``make image-test``, which CI runs) builds
the image (cached), runs it as docs/docker.md says, runs that page's ``requests`` example against
it, opens the panel in headless Chromium, stops it with SIGTERM and starts it again on the same volume.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import jupyterserver
import pytest
import requests
from conftest import REPO
from test_browser import CHROMIUM, CHROMIUM_ARGS, SCREENSHOTS

import lmbench


@contextmanager
def _lab(tmp_path: Path, home: Path, **lmbench_config: Any) -> Iterator[jupyterserver.JupyterServer]:
    """JupyterLab with the API also at the root paths, configured as the image configures it."""
    config_dir = tmp_path / "jupyter-config"
    config_dir.mkdir(exist_ok=True)
    config = {"LmbenchServer": {"root_routes": True, **lmbench_config}}
    (config_dir / "jupyter_server_config.json").write_text(json.dumps(config))
    root = tmp_path / "root"
    root.mkdir(exist_ok=True)
    with jupyterserver.running(tmp_path, home, root) as server:
        yield server


GUIDE_REQUEST = {"prompt": "Once upon a time", "max_tokens": 20, "temperature": 0.7, "top_p": 0.9}


def test_root_routes_answer_the_guide_on_jupyters_port(tmp_path: Path, lmbench_home: Path) -> None:
    with _lab(tmp_path, lmbench_home) as lab:
        answer = requests.post(f"{lab.url}/api/generate", json=GUIDE_REQUEST, timeout=120)
        assert answer.status_code == 200, answer.text
        assert answer.json()["text"] and answer.json()["run_id"]
        assert requests.get(f"{lab.url}/health", timeout=30).json() == {"status": "ok"}
        models = requests.get(f"{lab.url}/v1/models", timeout=30).json()
        assert models["object"] == "list" and models["data"]

        # /api/status stays Jupyter's (behind its token); lmbench's is under /lmbench/.
        assert requests.get(f"{lab.url}/api/status", timeout=30).status_code == 403
        jupyter_status = requests.get(f"{lab.url}/api/status?token={lab.token}", timeout=30).json()
        assert "started" in jupyter_status and "lmbench_version" not in jupyter_status
        lmbench_status = requests.get(f"{lab.url}/lmbench/api/status?token={lab.token}", timeout=30).json()
        assert lmbench_status["lmbench_version"] == lmbench.__version__
        # The prefixed routes still need Jupyter's token.
        assert requests.post(f"{lab.url}/lmbench/api/generate", json=GUIDE_REQUEST, timeout=30).status_code == 403

        # Guarded as lmbench serve is: no other web page, no rebound host name, JSON bodies only.
        evil = requests.post(
            f"{lab.url}/api/generate", json=GUIDE_REQUEST, headers={"Origin": "http://evil.example"}, timeout=30
        )
        assert evil.status_code == 403 and "evil.example" in evil.json()["error"]["message"]
        rebound = requests.get(f"{lab.url}/api/runs", headers={"Host": "evil.example"}, timeout=30)
        assert rebound.status_code == 403
        form = requests.post(f"{lab.url}/api/generate", data={"prompt": "x"}, timeout=30)
        assert form.status_code == 415
    runs = lmbench.runs()
    assert list(runs.source) == ["api"] and runs.prompt.iloc[0] == "Once upon a time"


def test_root_routes_with_an_api_key(tmp_path: Path, lmbench_home: Path) -> None:
    with _lab(tmp_path, lmbench_home, api_key="s3cret") as lab:
        refused = requests.post(f"{lab.url}/api/generate", json=GUIDE_REQUEST, timeout=30)
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"
        assert requests.get(f"{lab.url}/v1/models", timeout=30).status_code == 401
        assert requests.get(f"{lab.url}/health", timeout=30).status_code == 200  # health needs no key
        headers = {"Authorization": "Bearer s3cret"}
        answer = requests.post(f"{lab.url}/api/generate", json=GUIDE_REQUEST, headers=headers, timeout=120)
        assert answer.status_code == 200 and answer.json()["text"]
    assert len(lmbench.runs()) == 1


def _stream_until_first_event(url: str, body: dict[str, Any], headers: dict[str, str] | None = None) -> threading.Event:
    """Start a streamed generation in a thread; the event is set once its first text has arrived."""
    started = threading.Event()

    def listen() -> None:
        try:
            with requests.post(url, json={**body, "stream": True}, headers=headers, stream=True, timeout=600) as answer:
                for line in answer.iter_lines():
                    if line.startswith(b"data: "):
                        started.set()
        except requests.RequestException:
            pass  # the server went away mid-stream: that is the point

    threading.Thread(target=listen, daemon=True).start()
    return started


LONG_REQUEST = {"prompt": "Once upon a time", "max_tokens": 2000, "ignore_eos": True}


def test_sigterm_records_the_runs_in_flight(tmp_path: Path, lmbench_home: Path) -> None:
    with _lab(tmp_path, lmbench_home) as lab:
        started = _stream_until_first_event(f"{lab.url}/api/generate", LONG_REQUEST)
        assert started.wait(120), "the stream started"
    # Leaving the block sent SIGTERM to Jupyter and waited for it to exit.
    assert "lmbench API also at / " in lab.log.read_text() and "WITHOUT a key" in lab.log.read_text()
    runs = lmbench.runs()
    assert list(runs.finish_reason) == ["cancelled"]
    assert 0 < runs.completion_tokens.iloc[0] < 2000 and runs.max_tokens.iloc[0] == 2000


# The image, end to end (make image-test). Everything below talks to a container engine.
IMAGE = os.environ.get("LMBENCH_IMAGE", "lmbench")


def _engine() -> list[str]:
    found = subprocess.run([REPO / "docker" / "engine.sh"], check=True, capture_output=True, text=True)
    return shlex.split(found.stdout)


def _run_args(engine: list[str]) -> list[str]:
    """Flags podman needs on these machines to run a container (docker needs none)."""
    return ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"] if "podman" in engine[0] else []


def _container(engine: list[str], name: str, port: int, volume: str) -> None:
    """The README's ``docker run`` line, detached and named (so its exit status can be read), on a free port."""
    readme = (REPO / "README.md").read_text()
    words = shlex.split(next(line for line in readme.splitlines() if line.startswith("docker run")))
    assert words == ["docker", "run", "--rm", "-p", "127.0.0.1:8080:8080", "-v", "lmbench-data:/data", "lmbench"]
    run = [*engine, "run", "--detach", "--name", name, *_run_args(engine), "-p", f"127.0.0.1:{port}:8080"]
    # JupyterLab exposes its app object to the page, for the browser check.
    subprocess.run([*run, "-v", f"{volume}:/data", IMAGE, "--LabApp.expose_app_in_browser=True"], check=True)


def _logs(engine: list[str], name: str) -> str:
    done = subprocess.run([*engine, "logs", name], capture_output=True, text=True, check=False)
    return done.stdout + done.stderr


def _wait_healthy(engine: list[str], name: str, url: str) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if requests.get(f"{url}/health", timeout=5).status_code == 200:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    pytest.fail(f"the container never answered /health:\n{_logs(engine, name)[-3000:]}")


def _docs_example(url: str) -> str:
    """docs/docker.md's ``requests`` example, run against ``url`` instead of localhost:8080; what it prints."""
    page = (REPO / "docs" / "docker.md").read_text()
    block = next(b for b in re.findall(r"```python[^\n]*\n(.*?)```", page, re.S) if "requests.post" in b)
    out = StringIO()
    with redirect_stdout(out):
        exec(block.replace("http://localhost:8080", url), {})
    return out.getvalue()


def _panel_screenshot(url: str, token: str, path: Path) -> None:
    """The quickstart notebook in headless Chromium, all cells run, until the panel shows; a screenshot of it."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1800})
            page.goto(f"{url}/lab/tree/quickstart.ipynb?token={token}")
            page.wait_for_function("window.jupyterapp && window.jupyterapp.shell.currentWidget", timeout=180_000)
            page.wait_for_function(
                "window.jupyterapp.shell.currentWidget.sessionContext.session?.kernel?.status === 'idle'",
                timeout=180_000,
            )
            page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
            panel = page.locator(".lmbench-panel")
            expect(panel).to_be_visible(timeout=300_000)
            expect(page.locator(".jp-OutputArea-output .lmbench-run").first).to_be_visible(timeout=60_000)
            panel.scroll_into_view_if_needed()
            page.screenshot(path=str(path))
        finally:
            browser.close()


@pytest.mark.image
@pytest.mark.no_test_model
def test_image(tmp_path: Path) -> None:
    if not os.environ.get("LMBENCH_IMAGE_TEST"):
        pytest.skip("builds and runs the container image: make image-test (CI runs it)")
    engine = _engine()
    subprocess.run(["make", "-C", str(REPO), "image", f"IMAGE={IMAGE}"], check=True)  # the layer cache makes it quick
    name, volume = f"lmbench-test-{uuid.uuid4().hex[:8]}", f"lmbench-test-data-{uuid.uuid4().hex[:8]}"
    port = jupyterserver._free_port()
    url = f"http://127.0.0.1:{port}"
    try:
        _container(engine, name, port, volume)
        _wait_healthy(engine, name, url)
        uid = subprocess.run([*engine, "exec", name, "id", "-u"], capture_output=True, text=True, check=True)
        assert uid.stdout.strip() != "0", "the image runs as a user, not root"

        printed = _docs_example(url)
        assert printed.strip(), "the guide's example printed the generated text"
        token_match = re.search(r"\?token=([0-9a-f]{16,})", _logs(engine, name))
        assert token_match, "Jupyter's token is in the log"
        assert "WITHOUT a key" in _logs(engine, name)
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "docker-panel.png"
        _panel_screenshot(url, token_match.group(1), shot)
        assert shot.stat().st_size > 10_000

        started = _stream_until_first_event(f"{url}/api/generate", LONG_REQUEST)
        assert started.wait(120), "the long generation is streaming"
        subprocess.run([*engine, "stop", "--time", "60", name], check=True, capture_output=True)
        state = subprocess.run(
            [*engine, "inspect", "--format", "{{.State.ExitCode}}", name], capture_output=True, text=True, check=True
        )
        assert state.stdout.strip() == "0", f"a clean stop on SIGTERM:\n{_logs(engine, name)[-3000:]}"
        assert "received signal 15" in _logs(engine, name)
        subprocess.run([*engine, "rm", name], check=True, capture_output=True)

        _container(engine, name, port, volume)  # a new container on the same volume
        _wait_healthy(engine, name, url)
        # Every run survived the stop and the new container: the guide's, the notebook's and the one cut short.
        runs = requests.get(f"{url}/api/runs?limit=100", timeout=60).json()["runs"]
        api = [(r["prompt"], r["finish_reason"], r["max_tokens"]) for r in runs if r["source"] == "api"]
        assert api[0] == ("Once upon a time", api[0][1], 100) and api[0][1] in ("stop", "length"), api
        assert api[-1] == ("Once upon a time", "cancelled", 2000), api
        assert {"python", "magic"} <= {r["source"] for r in runs}, "the quickstart notebook's runs"
    finally:
        subprocess.run([*engine, "rm", "--force", name], capture_output=True, check=False)
        subprocess.run([*engine, "volume", "rm", "--force", volume], capture_output=True, check=False)
