"""The engine against the real test model: loading, caching, bad files, logs, threads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import lmbench
from lmbench.engine._engine import loaded


def test_load_is_cached_and_returns_the_same_engine(model_path: Path) -> None:
    first = lmbench.load(model_path)
    second = lmbench.load(str(model_path))
    assert first is second
    assert first.n_ctx == 2048
    assert first.info["architecture"] == "llama"
    assert first.sha256 == "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"


def test_other_options_load_another_engine_and_evict_the_first(model_path: Path) -> None:
    first = lmbench.load(model_path)
    with pytest.warns(UserWarning, match=r"loading it again with n_ctx=256 \(loaded: 2048\)"):
        other = lmbench.load(model_path, n_ctx=256)
    assert other is not first and other.n_ctx == 256
    assert first.closed, "with one resident model the least recently used one is closed"
    with pytest.raises(lmbench.EngineClosedError):
        first.tokenize("hello")
    assert loaded() == [other]


def test_load_settings_are_kept_by_every_call_naming_the_model(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(model_path.parent))
    lmbench.unload()
    mine = lmbench.load(model_path, n_threads=1, n_ctx=512)
    run = lmbench.generate("Once upon a time", model=str(model_path), max_tokens=4)
    by_name = lmbench.generate("Once upon a time", model=model_path.name, max_tokens=4)
    by_alias = lmbench.generate("Once upon a time", model=model_path.stem, max_tokens=4)
    assert loaded() == [mine] and mine.n_threads == 1 and mine.n_ctx == 512
    assert {run.model_path, by_name.model_path, by_alias.model_path} == {str(model_path)}
    assert lmbench.load(model_path, n_threads=1) is mine, "settings that agree reuse the engine"
    assert not [w for w in recwarn if "loaded with other settings" in str(w.message)]


def test_max_models_keeps_several_resident(model_path: Path) -> None:
    lmbench.set_max_models(2)
    try:
        a = lmbench.load(model_path, n_ctx=128)
        b = lmbench.load(model_path, n_ctx=256)
        assert not a.closed and not b.closed
        assert lmbench.load(model_path, n_ctx=128) is a
    finally:
        lmbench.set_max_models(1)
    assert len(loaded()) == 1


def test_unload_closes_engines(model_path: Path) -> None:
    engine = lmbench.load(model_path)
    lmbench.unload()
    assert engine.closed and loaded() == []
    assert not lmbench.load(model_path).closed


def test_llama_cpp_logs_are_captured_not_printed(model_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    lmbench.unload()
    engine = lmbench.load(model_path, n_ctx=512)
    lmbench.generate("Once", model=engine, max_tokens=3)
    out, err = capfd.readouterr()
    assert "llama_model_loader" not in out + err
    assert any("llama_model_loader" in line for line in engine.logs)
    assert any("[lmbench] loaded" in line for line in engine.logs)


def _bad_files(tmp_path: Path, model_path: Path) -> dict[str, Path]:
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    noise = tmp_path / "noise.gguf"
    noise.write_bytes(os.urandom(4096))
    truncated = tmp_path / "truncated.gguf"
    truncated.write_bytes(model_path.read_bytes()[: model_path.stat().st_size // 2])
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(model_path.read_bytes()[:64])
    garbage_header = tmp_path / "garbage-header.gguf"
    garbage_header.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + os.urandom(2048))
    directory = tmp_path / "folder.gguf"
    directory.mkdir()
    return {
        "missing": tmp_path / "missing.gguf",
        "directory": directory,
        "empty": empty,
        "random bytes": noise,
        "truncated": truncated,
        "header only": header_only,
        "garbage header": garbage_header,
    }


@pytest.mark.parametrize(
    "case", ["missing", "directory", "empty", "random bytes", "truncated", "header only", "garbage header"]
)
def test_bad_model_files_raise_model_load_error(case: str, tmp_path: Path, model_path: Path) -> None:
    path = _bad_files(tmp_path, model_path)[case]
    with pytest.raises(lmbench.ModelLoadError) as info:
        lmbench.load(path)
    assert str(path) in str(info.value)
    assert info.value.reason
    with pytest.raises(lmbench.ModelLoadError):
        lmbench.generate("Once", model=path)
    assert lmbench.runs().empty, "nothing is recorded for a model that failed to load"


def test_bad_model_never_kills_the_process(tmp_path: Path, model_path: Path) -> None:
    paths = _bad_files(tmp_path, model_path)
    script = (
        "import sys, lmbench\n"
        "for p in sys.argv[1:]:\n"
        "    try:\n"
        "        lmbench.load(p)\n"
        "    except lmbench.ModelLoadError as e:\n"
        "        print('ok', e.reason)\n"
        "print('alive')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, *map(str, paths.values())], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("ok ") == len(paths)
    assert result.stdout.strip().endswith("alive")


def test_unknown_alias_says_how_to_give_a_model() -> None:
    with pytest.raises(lmbench.ModelNotFoundError, match="LMBENCH_MODEL"):
        lmbench.load("no-such-model-alias")


def test_model_found_by_file_name_in_model_path(model_path: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(model_path, folder / "stories260K.gguf")
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(folder))
    assert lmbench.load("stories260K").path == (folder / "stories260K.gguf").resolve()


def test_threads_share_one_engine_safely(engine: lmbench.Engine) -> None:
    expected = {
        seed: lmbench.generate("Once upon a time", model=engine, seed=seed, max_tokens=30).text for seed in range(4)
    }
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            results[seed] = lmbench.generate("Once upon a time", model=engine, seed=seed, max_tokens=30).text
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == expected


def test_a_failed_load_leaves_the_working_model_loaded(model_path: Path, tmp_path: Path) -> None:
    working = lmbench.load(model_path)
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\x03\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(lmbench.ModelLoadError):
        lmbench.load(bad)
    with pytest.raises(lmbench.ModelLoadError):
        lmbench.load(tmp_path / "missing.gguf")
    assert not working.closed and lmbench.loaded() == [working]


def test_a_closed_engine_is_loaded_again_when_used(model_path: Path, synthetic_model: Path) -> None:
    first = lmbench.load(model_path, n_ctx=512)
    lmbench.load(synthetic_model)  # one model at a time: the first is closed to make room
    assert first.closed
    run = lmbench.generate("Once", model=first, max_tokens=3)
    assert run.model_name == model_path.name and run.n_ctx == 512, "reloaded with its own settings"


def test_load_time_is_the_whole_wait_with_its_parts(model_path: Path) -> None:
    lmbench.unload()
    engine = lmbench.load(model_path, n_ctx=256)
    parts = engine.load_parts
    assert set(parts) == {"checks_s", "llama_cpp_s"} and all(v >= 0 for v in parts.values())
    assert engine.load_s >= parts["checks_s"] + parts["llama_cpp_s"] - 1e-6
    assert any("checks" in line and "llama.cpp" in line for line in engine.logs)


def test_threads_follow_what_the_machine_leaves_free_unless_given(model_path: Path) -> None:
    lmbench.unload()
    fixed = lmbench.load(model_path, n_threads=2)
    assert fixed.threads.fixed and fixed.n_threads == 2 and "2 (fixed)" in repr(fixed)
    lmbench.unload()
    auto = lmbench.load(model_path)
    assert not auto.threads.fixed and "threads auto:" in repr(auto)
    cpus = os.cpu_count() or 1
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(cpus)]
    try:
        time.sleep(1.0)  # the engine re-reads the machine's CPU use every tenth of a second
        runs = [lmbench.generate("Once upon a time", model=auto, max_tokens=64, ignore_eos=True) for _ in range(3)]
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert auto.n_threads == 1, "every core busy with another process: one thread"
    assert runs[-1].n_threads == 1 and all(r.completion_tokens == 64 for r in runs)


def test_a_burst_of_another_process_keeps_the_threads_and_a_competitor_that_stays_takes_one() -> None:
    from lmbench.engine._threads import INTERVAL_S, Threads

    threads = Threads(2, fixed=False)
    time.sleep(INTERVAL_S)
    assert threads.now() == 2, "a quiet machine: both cores"
    spin = "import time\nend = time.time() + 30\nwhile time.time() < end: pass"
    hogs = [subprocess.Popen([sys.executable, "-c", spin]) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(1.5 * INTERVAL_S)
        assert threads.now() == 2, "one reading of every core busy is a burst: the threads stay"
        time.sleep(1.5 * INTERVAL_S)
        assert threads.now() == 1, "still busy at the next reading: a competitor, so one thread"
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


@pytest.mark.no_test_model
def test_a_client_beside_the_engine_keeps_the_threads_and_a_busy_core_takes_one() -> None:
    from lmbench.engine._threads import Threads

    threads = Threads(2, fixed=False)
    threads._cpus = 2
    assert [threads._free(others) for others in (0.0, 0.5, 0.65)] == [2, 2, 2], "a client's share of a core"
    assert [threads._free(others) for others in (0.8, 1.0, 1.6)] == [1, 1, 1], "a core kept busy"
    assert threads._free(2.0) == 1, "never fewer than one"


def test_a_child_process_this_one_waited_for_does_not_count_as_another() -> None:
    from lmbench.engine._threads import INTERVAL_S, Threads

    threads = Threads(2, fixed=False)
    spin = "import time\nend = time.time() + 0.6\nwhile time.time() < end: pass"
    subprocess.run([sys.executable, "-c", spin], check=True)  # as a model file's test load runs: ours, waited for
    time.sleep(INTERVAL_S)
    assert threads.now() == 2, "the child's CPU time is this process's own"
