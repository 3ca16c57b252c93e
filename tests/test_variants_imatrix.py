"""Quantizing with an importance matrix: a GGUF imatrix file (as llama.cpp's ``llama-imatrix`` writes it, here
written with the ``gguf`` package) reaches llama.cpp's quantizer and lowers the rounding error where it says
the inputs matter; a matrix for another model or a file that is no imatrix is refused before anything runs."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import TEST_MODEL
from gguf.quants import dequantize

import lmbench

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
