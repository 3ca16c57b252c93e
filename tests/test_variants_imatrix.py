"""Importance matrices: a GGUF imatrix file (as llama.cpp's ``llama-imatrix`` writes it, here written with the
``gguf`` package) reaches llama.cpp's quantizer and lowers the rounding error where it says the inputs matter;
a matrix for another model or a file that is no imatrix is refused before anything runs; ``imatrix()`` makes
one with lmbench's engine, whose values are the weights' real inputs (checked against NumPy)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import TEST_MODEL
from gguf.quants import dequantize

import lmbench
from lmbench.variants_lab import imatrix

WEIGHT = "blk.0.attn_q.weight"
# Columns of every weight the matrix calls important (the rest barely matter).
IMPORTANT = np.arange(0, 64, 5)


def write_imatrix(path: Path, *, columns: int = 0) -> Path:
    """An importance matrix for the test model's block weights: large on ``IMPORTANT`` columns, tiny elsewhere.

    ``columns`` > 0 gives every entry that many columns (a matrix made for another model).
    """
    writer = gguf.GGUFWriter(path, "")
    writer.add_string("general.type", "imatrix")
    writer.add_array("imatrix.datasets", ["tests"])
    writer.add_uint32("imatrix.chunk_count", 1)
    writer.add_uint32("imatrix.chunk_size", 512)
    for tensor in gguf.GGUFReader(TEST_MODEL).tensors:
        if tensor.name.startswith("blk.") and len(tensor.shape) == 2:
            width = columns or int(tensor.shape[0])
            sums = np.full((1, width), 0.01 * 512, dtype=np.float32)
            sums[0, IMPORTANT[width > IMPORTANT]] = 100.0 * 512
            writer.add_tensor(f"{tensor.name}.in_sum2", sums)
            writer.add_tensor(f"{tensor.name}.counts", np.array([[512.0]], dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _weight(path: Path | str) -> np.ndarray:
    tensor = next(t for t in gguf.GGUFReader(path).tensors if t.name == WEIGHT)
    return np.asarray(dequantize(tensor.data, tensor.tensor_type), dtype=np.float64).reshape(-1, 64)


def test_an_importance_matrix_lowers_the_error_on_the_columns_it_marks(tmp_path: Path) -> None:
    imatrix = write_imatrix(tmp_path / "imatrix.gguf")
    plain = lmbench.quantize(TEST_MODEL, "Q4_0", out=tmp_path, progress=False)
    weighted = lmbench.quantize(TEST_MODEL, "Q4_0", out=tmp_path, imatrix=imatrix, progress=False)
    assert plain.imatrix[0] is None and weighted.imatrix[0] == str(imatrix.resolve())
    assert Path(weighted.path[0]).name == "stories260K-imatrix.Q4_0.gguf" and not weighted.reused[0]
    assert lmbench.models.info(weighted.path[0])["quantization"] == "Q4_0"
    original = _weight(TEST_MODEL)
    error = {name: (_weight(made.path[0]) - original) ** 2 for name, made in (("plain", plain), ("imatrix", weighted))}
    marked = {name: float(e[:, IMPORTANT].sum()) for name, e in error.items()}
    rest = {name: float(np.delete(e, IMPORTANT, axis=1).sum()) for name, e in error.items()}
    # llama.cpp chose each block's scale to fit the marked columns, paying for it on the others.
    assert marked["imatrix"] < 0.8 * marked["plain"], marked
    assert rest["imatrix"] > rest["plain"], rest
    # The same source and matrix again: the copy is reused; the copy without a matrix is another file.
    assert lmbench.quantize(TEST_MODEL, "Q4_0", out=tmp_path, imatrix=imatrix, progress=False).reused[0]
    assert lmbench.quantize(TEST_MODEL, "Q4_0", out=tmp_path, progress=False).reused[0]
    # A copy quantized with a matrix generates like any other.
    run = lmbench.generate("Once upon a time", model=weighted.path[0], max_tokens=8, seed=0, temperature=0.0)
    assert run.completion_tokens == 8


def test_a_matrix_for_another_model_or_a_file_that_is_none_is_refused_before_quantizing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    other = write_imatrix(tmp_path / "other.gguf", columns=96)
    with pytest.raises(lmbench.ParameterError, match=r"imatrix other\.gguf: .* 96 values, .* needs 64") as caught:
        lmbench.quantize(TEST_MODEL, "Q4_0", out=out, imatrix=other, progress=False)
    assert caught.value.name == "imatrix"
    legacy = tmp_path / "imatrix.dat"
    legacy.write_bytes(b"\x01\x00\x00\x00" + b"\x00" * 64)
    with pytest.raises(lmbench.ParameterError, match=r"not a GGUF importance matrix .*llama-imatrix"):
        lmbench.quantize(TEST_MODEL, "Q4_0", out=out, imatrix=legacy, progress=False)
    with pytest.raises(lmbench.ParameterError, match=r"holds no \.in_sum2 tensors"):
        lmbench.quantize(TEST_MODEL, "Q4_0", out=out, imatrix=TEST_MODEL, progress=False)
    with pytest.raises(lmbench.ParameterError, match=r"missing\.gguf: no such file"):
        lmbench.quantize(TEST_MODEL, "Q4_0", out=out, imatrix=tmp_path / "missing.gguf", progress=False)
    assert not out.exists(), "nothing is quantized before the matrix is checked"


STORIES = [
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. " * 2,
    "Tom had a big red ball. He wanted to share it with his friend, but his friend was sad. " * 2,
]


def test_the_engine_makes_the_matrix_of_the_weights_real_inputs(tmp_path: Path) -> None:
    made = imatrix(TEST_MODEL, texts=STORIES, out=tmp_path / "stories.imatrix.gguf", chunk=64)
    reader = gguf.GGUFReader(made)
    assert bytes(reader.fields["general.type"].parts[-1]).decode() == "imatrix"
    found = {t.name: np.asarray(t.data, dtype=np.float64).reshape(-1) for t in reader.tensors}
    model = gguf.GGUFReader(TEST_MODEL)
    weights = {t.name: t for t in model.tensors if t.name.startswith("blk.") and len(t.shape) == 2}
    assert {n.rsplit(".", 1)[0] for n in found} == set(weights), "every block weight, the last layer's too"
    engine = lmbench.load(TEST_MODEL)
    tokens = [t for text in STORIES for t in engine.tokenize(text)]
    assert {float(found[f"{name}.counts"][0]) for name in weights} == {len(tokens)}
    for name, tensor in weights.items():
        assert found[f"{name}.in_sum2"].shape == (int(tensor.shape[0]),) and (found[f"{name}.in_sum2"] > 0).all()
    # q, k and v read the same input, as do gate and up: their sums are the same.
    for layer in range(5):
        q = found[f"blk.{layer}.attn_q.weight.in_sum2"]
        assert np.array_equal(q, found[f"blk.{layer}.attn_k.weight.in_sum2"])
        assert np.array_equal(
            found[f"blk.{layer}.ffn_gate.weight.in_sum2"], found[f"blk.{layer}.ffn_up.weight.in_sum2"]
        )
    # Layer 0's attention reads the normed token embeddings: the same sums from NumPy.
    data = {t.name: np.asarray(t.data, dtype=np.float64) for t in model.tensors}
    eps = float(model.fields["llama.attention.layer_norm_rms_epsilon"].parts[-1][0])
    x = data["token_embd.weight"][tokens]
    normed = x / np.sqrt(np.mean(x**2, axis=1, keepdims=True) + eps) * data["blk.0.attn_norm.weight"]
    np.testing.assert_allclose(found["blk.0.attn_q.weight.in_sum2"], (normed**2).sum(axis=0), rtol=1e-4)
    # It quantizes as a llama-imatrix file does.
    quantized = lmbench.quantize(TEST_MODEL, "Q4_0", out=tmp_path, imatrix=made, progress=False)
    assert lmbench.models.info(quantized.path[0])["quantization"] == "Q4_0" and quantized.imatrix[0] == str(made)


def test_imatrix_refuses_what_cannot_make_one(tmp_path: Path) -> None:
    with pytest.raises(lmbench.ParameterError, match="needs at least 16") as caught:
        imatrix(TEST_MODEL, texts=["Hi."], out=tmp_path / "short.gguf")
    assert caught.value.name == "texts"
    with pytest.raises(lmbench.ParameterError, match="chunk must be a whole number of at least 16"):
        imatrix(TEST_MODEL, texts=STORIES, chunk=8)
    with pytest.raises(lmbench.ParameterError, match=r"out must be a \.gguf file"):
        imatrix(TEST_MODEL, texts=STORIES, out=tmp_path / "matrix.dat")
    with pytest.raises(lmbench.ParameterError, match=r"texts=\.\.\. or data=\.\.\."):
        imatrix(TEST_MODEL)
    assert not list(tmp_path.glob("*.*")) and not list(tmp_path.rglob("*imatrix*")), "nothing was written"
