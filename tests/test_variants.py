"""The model variants lab on the real test model (F32): quantized copies made by llama.cpp's quantizer,
their drift from the original on the same tokens, the variants table and its frontier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEST_MODEL
from crafted import write

import lmbench
from lmbench.variants_lab import frontier

TEXTS = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun.",
    "Tom had a big red ball. He wanted to share it with his friend, but his friend was sad.",
    "The bird sat in the tree and sang a happy song. The sun was warm and the sky was blue.",
]


@pytest.fixture(scope="module")
def quantized(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The test model quantized to Q8_0 and to Q4_0 (its rows of 64 are too short for K-quants' blocks)."""
    made = lmbench.quantize(TEST_MODEL, ["Q8_0", "Q4_0"], out=tmp_path_factory.mktemp("quants"), progress=False)
    return {row.type: Path(row.path) for row in made.itertuples()}


def test_quantize_writes_smaller_files_of_the_asked_types_recorded_with_their_source(tmp_path: Path) -> None:
    made = lmbench.quantize(TEST_MODEL, ["q8_0", "Q4_0"], out=tmp_path, progress=False)
    assert made.type.tolist() == ["Q8_0", "Q4_0"]
    assert [Path(p).name for p in made.path] == ["stories260K.Q8_0.gguf", "stories260K.Q4_0.gguf"]
    assert made.file_mb.is_monotonic_decreasing and (made.file_mb < TEST_MODEL.stat().st_size / 2**20).all()
    assert not made.reused.any()
    assert [lmbench.models.info(p)["quantization"] for p in made.path] == ["Q8_0", "Q4_0"]
    listed = lmbench.models.list().set_index("path")
    for path in made.path:
        assert listed.loc[path, "source"] == "quantized"
        assert listed.loc[path, "base"] == str(TEST_MODEL.resolve())
    from lmbench.ui._html import models_table

    shown = models_table(lmbench.models.list(), None)
    assert "↳ <code>stories260K.Q8_0</code>" in shown and "↳ <code>stories260K.Q4_0</code>" in shown
    # The same call again reuses the files made from the same source.
    assert lmbench.quantize(TEST_MODEL, "Q8_0", out=tmp_path, progress=False).reused.all()
    # A quantized copy loads and generates, by the name the model list shows, wherever it was written.
    assert lmbench.models.resolve("stories260K.Q8_0") == Path(made.path[0])
    run = lmbench.generate("Once upon a time", model="stories260K.Q8_0", max_tokens=8, temperature=0.0)
    assert run.completion_tokens == 8


def test_quantize_refuses_unknown_types_and_requantizing_unless_asked(tmp_path: Path) -> None:
    tmp_path = tmp_path / "out"
    with pytest.raises(lmbench.ParameterError, match=r"unknown quantization type 'Q9_9'.*Q4_K_M"):
        lmbench.quantize(TEST_MODEL, ["Q8_0", "Q9_9"], out=tmp_path, progress=False)
    assert not tmp_path.exists(), "nothing is quantized before the types are checked"
    (q8,) = lmbench.quantize(TEST_MODEL, "Q8_0", out=tmp_path, progress=False).path
    with pytest.raises(lmbench.ParameterError, match=r"already quantized .*Q8_0.*requantize=True"):
        lmbench.quantize(q8, "Q4_0", out=tmp_path, progress=False)
    again = lmbench.quantize(q8, "Q4_0", out=tmp_path / "again", requantize=True, progress=False)
    assert lmbench.models.info(again.path[0])["quantization"] == "Q4_0"
    with pytest.raises(lmbench.ModelLoadError):
        lmbench.quantize(tmp_path / "missing.gguf", "Q8_0", out=tmp_path, progress=False)


def test_drift_of_the_reference_against_itself_is_exactly_none(model_path: Path) -> None:
    found = lmbench.drift(model_path, [model_path], texts=TEXTS)
    (row,) = found.summary.to_dict("records")
    assert row["kl_mean"] == 0.0 and row["kl_p99"] == 0.0
    assert row["top1_agreement"] == 1.0 and row["delta_ppl"] == 0.0
    engine = lmbench.load(model_path)
    assert row["tokens"] == sum(len(engine.tokenize(t)) - 1 for t in TEXTS)
    assert 1.0 < row["ppl"] < 50.0


def test_lower_bit_widths_drift_more_and_the_worst_positions_show_both_top5(
    model_path: Path, quantized: dict[str, Path]
) -> None:
    found = lmbench.drift(model_path, [quantized["Q8_0"], quantized["Q4_0"]], texts=TEXTS, worst=3)
    q8, q4 = found.summary.to_dict("records")
    assert 0.0 < q8["kl_mean"] < q4["kl_mean"]
    assert q8["kl_p99"] < q4["kl_p99"] and q8["kl_mean"] <= q8["kl_p99"]
    assert q4["top1_agreement"] <= q8["top1_agreement"] <= 1.0
    assert abs(q8["delta_ppl"]) < abs(q4["delta_ppl"])
    worst = found.positions[found.positions.model == quantized["Q4_0"].name]
    assert len(worst) == 3 and worst.kl.is_monotonic_decreasing
    assert worst.kl.iloc[0] >= q4["kl_p99"]
    engine = lmbench.load(model_path)
    for row in worst.itertuples():
        tokens = engine.tokenize(TEXTS[row.text])
        assert row.token == engine.model.token_text(tokens[row.position])
        assert len(row.reference_top5) == len(row.candidate_top5) == 5
        probs = [p for _, p in row.reference_top5]
        assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert "largest disagreements" in found._repr_html_()


def test_drift_reads_texts_from_data_and_refuses_what_cannot_be_compared(model_path: Path, tmp_path: Path) -> None:
    from_data = lmbench.drift(model_path, [model_path], data=pd.DataFrame({"story": TEXTS}), column="story")
    assert from_data.summary.tokens.iloc[0] == lmbench.drift(model_path, [model_path], texts=TEXTS).summary.tokens[0]
    with pytest.raises(lmbench.ParameterError, match="one of them"):
        lmbench.drift(model_path, [model_path])
    with pytest.raises(lmbench.ParameterError, match="no text in column 'text'"):
        lmbench.drift(model_path, [model_path], data=[{"story": "x"}])
    with pytest.raises(lmbench.ParameterError, match="candidates"):
        lmbench.drift(model_path, model_path, texts=TEXTS)  # type: ignore[arg-type]

    def swap(fields: dict, tensors: dict) -> None:
        tokens, kind, sub = fields["tokenizer.ggml.tokens"]
        tokens = list(tokens)
        tokens[300], tokens[301] = tokens[301], tokens[300]
        fields["tokenizer.ggml.tokens"] = (tokens, kind, sub)

    other = write(model_path, tmp_path / "other-vocab.gguf", swap)
    with pytest.raises(lmbench.ParameterError, match="another vocabulary"):
        lmbench.drift(model_path, [other], texts=TEXTS)


def test_variants_gives_one_row_per_file_with_every_column(model_path: Path, quantized: dict[str, Path]) -> None:
    files = [model_path, quantized["Q8_0"], quantized["Q4_0"]]

    def task(path: str) -> float:
        engine = lmbench.load(path)
        (scores,) = engine.score([engine.tokenize(TEXTS[0])], start=1)
        return float(np.exp(scores.logprobs.mean()))

    table = lmbench.variants(files, texts=TEXTS, task=task, max_tokens=16)
    assert table.path.tolist() == [str(f) for f in files]
    assert table.variant.tolist() == ["stories260K", "stories260K.Q8_0", "stories260K.Q4_0"]
    assert table.quantization.tolist() == ["F32", "Q8_0", "Q4_0"]
    assert table.columns[: len(lmbench.variants_lab.VARIANT_COLUMNS)].tolist() == lmbench.variants_lab.VARIANT_COLUMNS
    assert table[lmbench.variants_lab.VARIANT_COLUMNS].notna().all().all()
    assert table.file_mb.is_monotonic_decreasing
    assert (table.memory_mb > table.file_mb * 0.5).all()
    assert (table.load_s > 0).all() and (table.tokens_per_s > 0).all() and (table.prompt_tokens_per_s > 0).all()
    assert table.kl_mean.iloc[0] == 0.0 and table.kl_mean.iloc[1] < table.kl_mean.iloc[2]
    assert table.score.iloc[0] > table.score.iloc[2]
    recorded = lmbench.runs(experiment="variants")
    measured = recorded[["warm-up" not in tags for tags in recorded.tags]]
    assert len(recorded) == 2 * len(files) and sorted(measured.model_path) == sorted(str(f) for f in files)
    assert (measured.prompt_tokens - measured.prompt_cached_tokens > 20).all(), "the prompt is evaluated, not cached"


def test_the_frontier_keeps_what_nothing_beats_on_both_axes() -> None:
    table = pd.DataFrame(
        {
            "variant": ["F32", "Q8_0", "Q4_0", "slow-and-bad"],
            "tokens_per_s": [100.0, 150.0, 200.0, 90.0],
            "top1_agreement": [1.0, 0.99, 0.9, 0.8],
            "kl_mean": [0.0, 0.01, 0.2, 0.3],
            "file_mb": [4.0, 1.0, 0.5, 2.0],
        }
    )
    assert frontier(table).tolist() == [True, True, True, False]
    assert frontier(table, "file_mb", "kl_mean").tolist() == [True, True, True, False]  # less is better on both
    assert frontier(table.assign(tokens_per_s=[100.0, 150.0, 140.0, 90.0])).tolist() == [True, True, False, False]
    fig = lmbench.plot_frontier(table)
    named = next(t for t in fig.data if t.name == "on the frontier")
    assert list(named.text) == ["F32", "Q8_0", "Q4_0"]
    assert fig.layout.title.text == "Frontier: F32, Q8_0, Q4_0"
    with pytest.raises(lmbench.ParameterError):
        lmbench.plot_frontier(table, y="rougeL")
