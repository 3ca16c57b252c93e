"""No model file, whatever its bytes, kills the kernel or the server: crafted files and hostile chat templates.

The corpus (``tests/crafted.py``) is written from the test model; every case runs in a child
process, which must end each case with the expected clear error and print that it is still alive.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import crafted
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench import _gguf, _template
from lmbench.engine import _probe
from lmbench.serve import Server, Settings

CHILD = """
import json, sys
import lmbench
report = {}
for name, (path, outcome) in json.loads(sys.argv[1]).items():
    try:
        engine = lmbench.load(path)
        if outcome == "template":
            try:
                lmbench.chat([{"role": "user", "content": "Hi"}], model=engine, max_tokens=2)
                report[name] = "chat worked"
            except lmbench.ChatTemplateError as exc:
                report[name] = "template refused: " + str(exc)
        else:
            run = lmbench.generate("Once upon a time", model=engine, max_tokens=4)
            report[name] = "works" if run.completion_tokens else "generated nothing"
    except lmbench.ModelLoadError as exc:
        report[name] = "refused: " + exc.reason
    lmbench.unload()
print(json.dumps(report))
print("alive")
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return crafted.corpus(TEST_MODEL, tmp_path_factory.mktemp("crafted"))


def test_every_crafted_file_gives_a_clear_error_and_the_process_lives(
    corpus: dict[str, tuple[Path, str]], tmp_path: Path
) -> None:
    cases = {name: (str(path), outcome) for name, (path, outcome) in corpus.items()}
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}  # nothing verified yet: the probes run
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(cases)], capture_output=True, text=True, timeout=600, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "alive"
    report = json.loads(lines[-2])
    for name, (_, outcome) in corpus.items():
        got = report[name]
        expected = {"refused": "refused: ", "template": "template refused: ", "works": "works"}[outcome]
        assert got.startswith(expected), (name, got)
    assert "GGML_ASSERT" in report["NaN norm epsilon"] or "epsilon" in report["NaN norm epsilon"]
    assert "crashed" in report["integer weights"] or "refused" in report["integer weights"]
    assert "3,000,000,000" in report["hostile chat template"] and "steps" in report["looping chat template"]
    assert time.perf_counter() - started < 300, "limits make every case quick"


def test_the_child_process_catches_what_python_checks_miss(
    corpus: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(_gguf, "_consistency", lambda header: None)  # as if a check were missing
    path = corpus["NaN norm epsilon"][0]
    with pytest.raises(lmbench.ModelLoadError, match=r"crashed on it \(signal 6\).*GGML_ASSERT") as caught:
        _probe.verify(path, lmbench.models.sha256(path), repack=True)
    assert caught.value.path == str(path)
    cache = json.loads((tmp_path / "cache" / "lmbench" / "verified-models.json").read_text())
    assert any("crashed" in v for v in cache.values()), "the verdict is cached by digest"
    with pytest.raises(lmbench.ModelLoadError, match="crashed"):
        _probe.verify(path, lmbench.models.sha256(path), repack=True)


def test_the_server_lives_through_requests_for_every_crafted_file(
    corpus: dict[str, tuple[Path, str]], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(next(iter(corpus.values()))[0].parent))
    with Server(Settings(model=str(TEST_MODEL), strict_models=True), port=0) as server:
        listed = {m["id"] for m in requests.get(f"{server.url}/v1/models", timeout=60).json()["data"]}
        python_checked = ("NaN norm epsilon", "empty token strings", "unknown tokenizer model")
        assert not {corpus[n][0].stem for n in python_checked} & listed, "files refused by the checks are not offered"
        for name, (path, outcome) in corpus.items():
            body = {"model": path.stem, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2}
            answer = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
            if path.stem not in listed:
                assert answer.status_code == 404, (name, answer.text)
            else:  # offered: it answers, or fails this request only (the child process took any crash)
                assert answer.status_code == (200 if outcome == "works" else 500), (name, answer.text)
            assert requests.get(f"{server.url}/health", timeout=10).json() == {"status": "ok"}, name


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("source", "limit"),
    [
        ("{{ 'x' * 3000000000 }}", "repeated"),
        ("{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}", "steps"),
        ("{% set ns = namespace(s='x') %}{% for i in range(40) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "built"),
        ("{{ 'x'|center(3000000000) }}", "number"),
        ("{{ 'x'.ljust(3000000000) }}", "number"),
        ("{{ '%0999999999d' % 1 }}", "format"),
        ("{{ '{:>999999999}'.format(1) }}", "format"),
        ("{{ 9 ** 9999999 }}", "power"),
        ("{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}", "recursed"),
        ("{% for x in [1, 2] recursive %}{{ loop([1, 2]) }}{% endfor %}", "recursed"),
        ("{{ ''.__class__.__mro__ }}", "unsafe"),
        ("{% for %}", "compile"),
        ("{{ raise_exception('system messages are not supported') }}", "refused"),
    ],
)
def test_chat_template_limits(source: str, limit: str) -> None:
    started = time.perf_counter()
    with pytest.raises(lmbench.ChatTemplateError) as caught:
        _template.render(source, messages=[{"role": "user", "content": "Hi"}], add_generation_prompt=True)
    assert limit in str(caught.value) or limit == "unsafe", str(caught.value)
    assert time.perf_counter() - started < 5


def test_real_templates_still_render() -> None:
    shipped = next(m for m in lmbench.models.packaged() if m.alias == "smollm2-135m-instruct")
    template = lmbench.models.metadata(shipped.path)["chat_template"]
    text = _template.render(
        template,
        messages=[{"role": "user", "content": "Hi"}],
        add_generation_prompt=True,
        eos_token="<|im_end|>",
        bos_token="<|im_start|>",
    )
    assert text.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
