"""The benchmark scripts run (quick settings: one repetition, the test model); timings are printed, never asserted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import gguf
import pytest
from conftest import REPO

import lmbench


def _run(*args: str) -> str:
    result = subprocess.run([sys.executable, *args], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_synth_writes_a_llama_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "small.gguf"
    _run("bench/synth.py", str(out), "--n-embd", "128", "--n-layer", "2", "--n-head", "4", "--n-ff", "256")
    reader = gguf.GGUFReader(out)
    assert reader.fields["general.architecture"].contents() == "llama"
    engine = lmbench.load(out)
    assert engine.info["layers"] == 2 and engine.info["quantization"] == "Q8_0"
    run = lmbench.generate("Once", model=engine, max_tokens=20, ignore_eos=True)
    assert run.completion_tokens == 20


def test_bench_run_quick() -> None:
    out = _run("bench/run.py", "--reps", "1", "--models", "stories260K", "--only", "B1,B2,B3,B5,B13", "--no-record")
    for bench in ("B1 overhead", "B2 sweep", "B3 shared prompt", "B5 store", "B13 busy machine"):
        assert f"| {bench} |" in out
    assert "load average" in out, "the results say how quiet the machine was"
    print(out)


def test_per_token_profile() -> None:
    out = _run("bench/per_token.py")
    assert "llama.cpp decode" in out and "sampler chain" in out
    print(out)


def test_llama_cpp_tools_are_compared_only_with_the_same_cpu_features() -> None:
    sys.path.insert(0, str(REPO))
    from bench import llama_tools

    ours = llama_tools.library_features()
    assert ours, "llama-cpp-python reports its CPU features"
    line = "system_info: n_threads = 2 | CPU : " + " | ".join(f"{k} = {v}" for k, v in ours.items()) + " |"
    assert "OPENMP" in llama_tools.same_features("llama-server", line) or "OPENMP" not in ours
    first = next(iter(ours))
    other = line.replace(f"{first} = {ours[first]}", f"{first} = 0" if ours[first] != "0" else f"{first} = 1")
    with pytest.raises(RuntimeError, match="refusing to compare"):
        llama_tools.same_features("llama-server", other)


def test_llama_perplexity_is_timed_from_its_first_chunk_to_its_final_estimate() -> None:
    from bench.likelihood import log_clock

    log = (
        "0.00.062.852 I perplexity: calculating perplexity over 24 chunks, n_ctx=256, batch_size=2048, n_seq=8\n"
        "0.01.920.984 I perplexity: 1.86 seconds per pass - ETA 0.05.385.368 I Final estimate: PPL = 845.9461\n"
    )
    assert log_clock(log, "Final estimate") - log_clock(log, "perplexity: calculating perplexity") == pytest.approx(
        5.385368 - 0.062852
    )
