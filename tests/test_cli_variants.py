"""``lmbench quantize``, ``lmbench drift`` and ``lmbench variants``: the real console script over the real test
model, its options built from the functions they call (the defaults are the functions')."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench import cli

LMBENCH = str(Path(sys.executable).parent / "lmbench")
TEXTS = ["Once upon a time, there was a little girl named Lily.", "Tom had a big red ball and a happy dog."]


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LMBENCH, *args], capture_output=True, text=True, timeout=300)


def test_every_option_is_a_keyword_of_its_function_with_its_default_in_the_help() -> None:
    for command, (function, _, options) in cli._FUNCTION_COMMANDS.items():
        parameters = inspect.signature(function).parameters
        assert {o.name for o in options} <= set(parameters), command
        result = run_cli(command, "--help")
        assert result.returncode == 0 and result.stdout.startswith(f"usage: lmbench {command}")
        flat = " ".join(result.stdout.split())
        for option in options:
            default = parameters[option.name].default
            if not option.positional and not option.switch and default not in (None, inspect.Parameter.empty):
                shown = ", ".join(default) if isinstance(default, tuple) else str(default)
                assert f"(default: {shown})" in flat, (command, option.name)


def test_quantize_drift_and_variants_from_the_command_line(tmp_path: Path) -> None:
    folder, made = tmp_path / "quants", tmp_path / "made.csv"
    result = run_cli(
        "quantize", TEST_MODEL, "-t", "Q8_0", "--type", "q4_0", "--folder", str(folder), "-q", "-o", str(made)
    )
    assert result.returncode == 0, result.stderr
    table = pd.read_csv(made)
    assert list(table.type) == ["Q8_0", "Q4_0"] and all(Path(p).parent == folder.resolve() for p in table.path)
    assert "Q4_0" in result.stdout and f"wrote 2 rows to {made}" in result.stderr
    q8, q4 = table.path

    texts = tmp_path / "texts.jsonl"
    pd.DataFrame({"story": TEXTS}).to_json(texts, orient="records", lines=True)
    drifted = tmp_path / "drift.parquet"
    result = run_cli(
        "drift", TEST_MODEL, q8, q4, "--data", str(texts), "--column", "story", "--worst", "2", "-o", str(drifted)
    )
    assert result.returncode == 0, result.stderr
    summary = pd.read_parquet(drifted)
    expected = lmbench.drift(TEST_MODEL, [q8, q4], data=str(texts), column="story").summary
    pd.testing.assert_frame_equal(summary, expected)
    assert 0 < summary.kl_mean[0] < summary.kl_mean[1], "Q4_0 drifts more than Q8_0"
    assert "largest disagreements with stories260K" in result.stdout and "candidate_top5" in result.stdout
    quiet = run_cli("drift", TEST_MODEL, q8, "--text", TEXTS[0], "--worst", "0")
    assert quiet.returncode == 0 and "largest disagreements" not in quiet.stdout, "--worst 0 is passed on as 0"

    rows = tmp_path / "variants.jsonl"
    args = ["variants", TEST_MODEL, q4, "--text", TEXTS[0], "--text", TEXTS[1], "-n", "8", "-e", "cli-variants"]
    result = run_cli(*args, "--out", str(rows))
    assert result.returncode == 0, result.stderr
    frame = pd.read_json(rows, lines=True)
    assert list(frame.columns) == lmbench.variants_lab.VARIANT_COLUMNS and list(frame.quantization) == ["F32", "Q4_0"]
    assert frame.kl_mean[0] == 0 and frame.kl_mean[1] > 0
    measured = lmbench.runs("cli-variants")
    assert len(measured) == 4 and sorted(measured.max_tokens) == [1, 1, 8, 8], "a warm-up and a measured run per file"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["quantize", TEST_MODEL, "-t", "Q9_9"], 1, "unknown quantization type 'Q9_9'"),
        (["quantize", TEST_MODEL, "-o", "made.xlsx"], 1, "cannot write 'made.xlsx'"),
        (["drift", TEST_MODEL, TEST_MODEL], 1, "give the texts to compare on as texts=... or data=..."),
        (["drift", TEST_MODEL], 2, "the following arguments are required: candidates"),
        (["variants", TEST_MODEL, "--text", "x", "-n", "many"], 2, "invalid int value: 'many'"),
    ],
)
def test_bad_input_is_one_line_before_anything_runs(tmp_path: Path, args: list[str], code: int, message: str) -> None:
    here = tmp_path / "here"
    here.mkdir()
    result = subprocess.run([LMBENCH, *args], capture_output=True, text=True, timeout=300, cwd=here)
    assert result.returncode == code and message in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert message in lines[-1] and (code == 2 or len(lines) == 1), "one line (after the usage for a usage error)"
    assert not list(here.iterdir()), "nothing was written"
