"""The ``lmbench`` console script, run as a real subprocess against the real test model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import requests
from conftest import TEST_MODEL
from fakehub import serve

import lmbench
from lmbench.cli import exposure_warning

LMBENCH = str(Path(sys.executable).parent / "lmbench")


def cli(*args: str, stdin: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([LMBENCH, *args], capture_output=True, text=True, input=stdin, timeout=300, env=env)


@pytest.mark.parametrize(
    "command", [[], ["run"], ["sweep"], ["runs"], ["export"], ["models"], ["models", "pull"], ["serve"]]
)
def test_help_on_every_subcommand(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.returncode == 0 and result.stdout.startswith("usage: lmbench")


def test_run_streams_text_and_records_it() -> None:
    result = cli("run", "Once upon a time", "-t", "0.5", "-p", "0.8", "-n", "20", "--seed", "7", "--stop", "zzz")
    assert result.returncode == 0, result.stderr
    run = lmbench.runs().iloc[-1]
    assert result.stdout.strip() == run.text.strip()
    assert (run.source, run.temperature, run.top_p, run.max_tokens, run.seed) == ("cli", 0.5, 0.8, 20, 7)
    assert list(run.stop) == ["zzz"] and "seed 7" in result.stderr


def test_run_json_and_stdin_prompt() -> None:
    result = cli("run", "-", "--json", "-n", "5", "--top-k", "1", stdin="Once upon a time")
    record = json.loads(result.stdout)
    assert record["prompt"] == "Once upon a time" and record["top_k"] == 1 and record["completion_tokens"] == 5
    assert "distinct_2" in record["metrics"]


def test_errors_are_one_line_with_exit_codes() -> None:
    usage = cli("run", "x", "-t", "hot")
    assert usage.returncode == 2 and "invalid float value: 'hot'" in usage.stderr
    bad_value = cli("run", "x", "-t", "-1")
    assert bad_value.returncode == 1
    expected = "invalid temperature=-1.0: input should be greater than or equal to 0 (allowed: 0 <= temperature)"
    assert bad_value.stderr.strip().splitlines() == [f"lmbench: error: {expected}"]
    missing = cli("run", "x", "--model", "/nowhere/model.gguf")
    assert missing.returncode == 1 and len(missing.stderr.strip().splitlines()) == 1
    assert "model.gguf" in missing.stderr
    assert cli("frobnicate").returncode == 2
    assert lmbench.runs().empty


def test_sweep_from_options_writes_the_table(tmp_path: Path) -> None:
    out = tmp_path / "sweep.csv"
    result = cli(
        "sweep",
        "--prompt",
        "Once upon a time",
        "--grid",
        "temperature=0.2,1.0",
        "--seeds",
        "2",
        "-n",
        "8",
        "-e",
        "cli-sweep",
        "-o",
        str(out),
        "--quiet",
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(out)
    assert len(table) == 4 and sorted(table.temperature.unique()) == [0.2, 1.0]
    assert set(lmbench.runs("cli-sweep").max_tokens) == {8}
    assert "temperature" in result.stdout


@pytest.mark.parametrize("suffix", ["json", "yaml", "toml"])
def test_sweep_from_a_config_file(tmp_path: Path, suffix: str) -> None:
    config = tmp_path / f"sweep.{suffix}"
    texts = {
        "json": json.dumps(
            {"prompts": {"story": "Once"}, "grid": {"top_k": [1, 5]}, "seeds": [3], "params": {"max_tokens": 6}}
        ),
        "yaml": "prompts:\n  story: Once\ngrid:\n  top_k: [1, 5]\nseeds: [3]\nparams:\n  max_tokens: 6\n",
        "toml": 'seeds = [3]\n[prompts]\nstory = "Once"\n[grid]\ntop_k = [1, 5]\n[params]\nmax_tokens = 6\n',
    }
    config.write_text(texts[suffix])
    result = cli("sweep", str(config), "-e", suffix, "--quiet")
    assert result.returncode == 0, result.stderr
    table = lmbench.runs(suffix)
    assert sorted(table.top_k) == [1, 5] and set(table.seed) == {3} and set(table.max_tokens) == {6}


def test_sweep_config_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid: [unclosed")
    assert cli("sweep", str(bad)).returncode == 2
    unknown = tmp_path / "unknown.json"
    unknown.write_text('{"prompt": "x", "grid": {"temperature": [1]}, "colour": "red"}')
    result = cli("sweep", str(unknown))
    assert result.returncode == 2 and "unknown key 'colour'" in result.stderr
    assert cli("sweep", "--prompt", "x").returncode == 2, "no grid"
    assert cli("sweep", "--grid", "temperature").returncode == 2


def test_runs_and_export(tmp_path: Path) -> None:
    for seed in range(3):
        lmbench.generate("Once", max_tokens=4, seed=seed, experiment="x")
    table = cli("runs", "-e", "x")
    assert table.returncode == 0 and len(table.stdout.strip().splitlines()) == 4
    as_json = json.loads(cli("runs", "--format", "json", "--last", "2").stdout)
    assert [r["seed"] for r in as_json] == [1, 2]
    csv = cli("runs", "--format", "csv").stdout
    assert csv.startswith("id,created_at")
    target = tmp_path / "runs.parquet"
    assert cli("export", str(target)).returncode == 0
    assert len(pd.read_parquet(target)) == 3
    assert cli("export", str(tmp_path / "runs.xlsx")).returncode == 1


def test_models_list_info_and_pull(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(TEST_MODEL.parent))
    listing = cli("models")
    assert listing.returncode == 0 and "stories260K" in listing.stdout and "llama" in listing.stdout
    info = cli("models", "info", "stories260K")
    assert info.returncode == 0 and "architecture" in info.stdout
    with serve() as hub:
        hub.add("someone/tiny", "tiny.gguf", TEST_MODEL.read_bytes())
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
        pulled = cli("models", "pull", "someone/tiny", "tiny.gguf", "--alias", "tiny")
        assert pulled.returncode == 0, pulled.stderr
        assert Path(pulled.stdout.strip()).name == "tiny.gguf"
        missing = cli("models", "pull", "someone/tiny", "absent.gguf")
        assert missing.returncode == 1 and "download failed" in missing.stderr
    assert cli("run", "Once", "-n", "3", "--model", "tiny").returncode == 0


def test_serve_answers_until_stopped() -> None:
    proc = subprocess.Popen(
        [LMBENCH, "serve", "--port", "0", "--api-key", "k"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("lmbench API on http://127.0.0.1:"), proc.stderr.read() if proc.poll() else line
        url = line.split()[3]
        answer = requests.post(
            f"{url}/api/generate", json={"prompt": "Once", "max_tokens": 4}, headers={"Authorization": "Bearer k"}
        )
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] == 4
    finally:
        proc.terminate()
        proc.wait(30)
    assert lmbench.runs().source.tolist() == ["api"]


def test_exposure_warning() -> None:
    assert exposure_warning("127.0.0.1", None) is None
    assert exposure_warning("0.0.0.0", "key") is None
    assert "without --api-key" in exposure_warning("0.0.0.0", None)


def test_json_outputs_are_valid_json(tmp_path: Path) -> None:
    run = cli("run", "Once", "-n", "3", "--json")
    assert run.returncode == 0, run.stderr
    record = json.loads(run.stdout)  # the standard library refuses NaN only when asked: check there is none
    assert "NaN" not in run.stdout and record["metrics"]["mean_logprob"] is None and record["stop"] == []
    listing = cli("runs", "--format", "json")
    assert "\\/" not in listing.stdout and json.loads(listing.stdout)[0]["model_path"] == str(TEST_MODEL)
    info = cli("models", "info", str(TEST_MODEL))
    assert "1.2 MB" in info.stdout and "293K" in info.stdout


def test_tables_are_written_by_one_rule_for_every_suffix(tmp_path: Path) -> None:
    for suffix in (".csv", ".jsonl", ".ndjson", ".json", ".parquet"):
        table = tmp_path / f"sweep{suffix}"
        result = cli(
            "sweep", "--prompt", "Once", "--grid", "temperature=0.5", "--seeds", "1", "-n", "4", "-o", str(table), "-q"
        )
        assert result.returncode == 0, result.stderr
        exported = tmp_path / f"runs{suffix}"
        assert cli("export", str(exported)).returncode == 0
        assert lmbench.datasets.load(table) and lmbench.datasets.load(exported), "what is written reads back as data"
    result = cli("export", str(tmp_path / "runs.xlsx"))
    assert result.returncode == 1 and "use .csv, .jsonl, .ndjson, .json or .parquet" in result.stderr
