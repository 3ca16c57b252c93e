"""LoRA adapters on the real test model: a tiny adapter written with the ``gguf`` package changes what the
model says, scale 0 gives back the base model token for token, and the adapter and scale are recorded."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest
from conftest import TEST_MODEL

import lmbench

PROMPT = "Once upon a time"


def write_adapter(path: Path, *, rank: int = 4, alpha: float = 4.0, spread: float = 0.5, width: int = 0) -> Path:
    """A rank-``rank`` LoRA adapter of random A and B for the test model's attention q and v projections.

    ``width`` > 0 gives A a wrong input width (an adapter made for another model).
    """
    weights = {t.name: t for t in gguf.GGUFReader(TEST_MODEL).tensors}
    writer = gguf.GGUFWriter(path, "llama")
    writer.add_string("general.type", "adapter")
    writer.add_string("adapter.type", "lora")
    writer.add_float32("adapter.lora.alpha", alpha)
    rng = np.random.default_rng(0)
    for layer in range(5):
        for name in ("attn_q", "attn_v"):
            n_in, n_out = (int(n) for n in weights[f"blk.{layer}.{name}.weight"].shape[:2])
            a = rng.normal(0, spread, (rank, width or n_in)).astype(np.float32)  # ggml's [n_in, rank]
            b = rng.normal(0, spread, (n_out, rank)).astype(np.float32)  # ggml's [rank, n_out]
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_a", a)
            writer.add_tensor(f"blk.{layer}.{name}.weight.lora_b", b)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_adapter(tmp_path_factory.mktemp("lora") / "tiny-lora.gguf")


def _greedy(engine: lmbench.Engine, n: int = 24) -> lmbench.Run:
    return lmbench.generate(PROMPT, model=engine, max_tokens=n, temperature=0.0, seed=0, logprobs=1, ignore_eos=True)


def _ids(run: lmbench.Run) -> list[int]:
    return [t["id"] for t in run.token_logprobs or []]


def test_scale_zero_is_the_base_model_token_for_token_and_scale_one_changes_it(adapter: Path) -> None:
    lmbench.unload()  # both engines with the default settings (another test may have loaded it otherwise)
    base = _greedy(lmbench.load(TEST_MODEL))
    off = lmbench.load(TEST_MODEL, lora={adapter: 0.0})
    assert off.lora == {str(adapter): 0.0} and off.scheduler.adapters
    at_zero = _greedy(off)
    assert _ids(at_zero) == _ids(base) and at_zero.text == base.text
    assert [t["logprob"] for t in at_zero.token_logprobs or []] == [t["logprob"] for t in base.token_logprobs or []]
    on = _greedy(lmbench.load(TEST_MODEL, lora={adapter: 1.0}))
    assert _ids(on) != _ids(base)
    found = lmbench.drift(TEST_MODEL, [lmbench.load(TEST_MODEL, lora={adapter: 0.5})], texts=[base.prompt + base.text])
    assert found.summary.kl_mean.iloc[0] > 0.05, "a scale of 0.5 moves the distributions measurably"


def test_the_adapter_and_its_scale_are_recorded_and_listed_beside_the_base(adapter: Path) -> None:
    _greedy(lmbench.load(TEST_MODEL, lora={adapter: 0.8}), n=4)
    _greedy(lmbench.load(TEST_MODEL), n=4)
    recorded = lmbench.runs().sort_values("created_at")
    assert recorded.lora.tolist() == [{str(adapter): 0.8}, None]
    assert recorded.lora_scale.iloc[0] == 0.8 and np.isnan(recorded.lora_scale.iloc[1])
    listed = lmbench.models.list().set_index("path")
    assert listed.loc[str(adapter), "source"] == "adapter"
    assert listed.loc[str(adapter), "base"] == str(TEST_MODEL.resolve())


def test_bad_adapters_are_refused_clearly(adapter: Path, tmp_path: Path) -> None:
    with pytest.raises(lmbench.ParameterError, match="lora must map adapter files to scales"):
        lmbench.load(TEST_MODEL, lora=str(adapter))  # type: ignore[arg-type]
    with pytest.raises(lmbench.ParameterError, match="finite number"):
        lmbench.load(TEST_MODEL, lora={adapter: float("nan")})
    with pytest.raises(lmbench.ModelLoadError, match="not a LoRA adapter"):
        lmbench.load(TEST_MODEL, lora={TEST_MODEL: 1.0})
    with pytest.raises(lmbench.ModelLoadError, match="no such file"):
        lmbench.load(TEST_MODEL, lora={tmp_path / "missing.gguf": 1.0})
    other = write_adapter(tmp_path / "other-model.gguf", width=96)
    with pytest.raises(lmbench.ModelLoadError, match=r"refused it as a LoRA adapter of stories260K\.gguf"):
        lmbench.load(TEST_MODEL, lora={other: 1.0})
    assert _greedy(lmbench.load(TEST_MODEL), n=2).completion_tokens == 2, "the base model still works"


def test_lora_scale_is_a_sweep_dimension(adapter: Path) -> None:
    frame = lmbench.sweep(
        PROMPT, grid={"lora_scale": [0.0, 1.0], "top_k": [1]}, seeds=1, lora=adapter, max_tokens=12, progress=False
    )
    assert frame.lora_scale.tolist() == [0.0, 1.0]
    base = lmbench.generate(PROMPT, model=TEST_MODEL, max_tokens=12, top_k=1, seed=0)
    assert frame.text.iloc[0] == base.text != frame.text.iloc[1]
    runs = lmbench.runs().set_index("id")
    assert runs.loc[frame.id, "lora"].tolist() == [{str(adapter): 0.0}, {str(adapter): 1.0}]
    with pytest.raises(lmbench.ParameterError, match="no adapter"):
        lmbench.sweep(PROMPT, grid={"lora_scale": [0.5]}, seeds=1, progress=False)
    with pytest.raises(lmbench.ParameterError, match="finite numbers"):
        lmbench.sweep(PROMPT, grid={"lora_scale": ["a"]}, seeds=1, lora=adapter, progress=False)
