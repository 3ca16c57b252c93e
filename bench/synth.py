"""Synthetic Llama models with random weights and the test model's tokenizer, written with the `gguf` package.

Speed depends on a model's shapes, not on what its weights learned, so a random model of a
realistic size stands in for the small real models users run. The default shape is about 85M
parameters (width 768, 12 layers, 12 heads, feed-forward 2048, Q8_0 weights, about 90 MB) and
takes a few seconds to write. Run ``python bench/synth.py OUT.gguf`` or call ``synthesize``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import gguf
import numpy as np

REPO = Path(__file__).resolve().parents[1]
TOKENIZER_SOURCE = Path(
    os.environ.get("LMBENCH_TEST_MODEL") or REPO.parent / "shared" / "models" / "stories260K.gguf"
).expanduser()
QUANT = {"q8_0": gguf.GGMLQuantizationType.Q8_0, "f16": gguf.GGMLQuantizationType.F16}


def _copy_tokenizer(source: Path, writer: gguf.GGUFWriter) -> int:
    """Copy every ``tokenizer.*`` key of ``source``; returns the vocabulary size."""
    reader = gguf.GGUFReader(source)
    n_vocab = 0
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        value = field.contents()
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(name, value, kind, sub_type=sub)
        if name == "tokenizer.ggml.tokens":
            n_vocab = len(value)
    return n_vocab


def synthesize(
    path: str | os.PathLike[str],
    *,
    n_embd: int = 768,
    n_layer: int = 12,
    n_head: int = 12,
    n_ff: int = 2048,
    n_ctx: int = 2048,
    quant: str = "q8_0",
    seed: int = 0,
    tokenizer: Path = TOKENIZER_SOURCE,
) -> Path:
    """Write a random-weight Llama GGUF to ``path`` (a temporary file first, so a crash leaves nothing half-made)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".partial")
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(tmp, "llama")
    writer.add_name(f"synthetic-llama-{n_embd}x{n_layer}")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_head)
    writer.add_rope_dimension_count(n_embd // n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = _copy_tokenizer(tokenizer, writer)

    def matrix(name: str, rows: int, cols: int) -> None:
        weights = rng.standard_normal((rows, cols), dtype=np.float32) * (1.0 / np.sqrt(cols))
        kind = QUANT[quant]
        writer.add_tensor(name, gguf.quants.quantize(weights, kind), raw_dtype=kind)

    def norm(name: str) -> None:
        writer.add_tensor(name, np.ones(n_embd, dtype=np.float32))

    matrix("token_embd.weight", n_vocab, n_embd)
    norm("output_norm.weight")
    matrix("output.weight", n_vocab, n_embd)
    for i in range(n_layer):
        norm(f"blk.{i}.attn_norm.weight")
        for part in ("q", "k", "v", "output"):
            matrix(f"blk.{i}.attn_{part}.weight", n_embd, n_embd)
        norm(f"blk.{i}.ffn_norm.weight")
        matrix(f"blk.{i}.ffn_gate.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_up.weight", n_ff, n_embd)
        matrix(f"blk.{i}.ffn_down.weight", n_embd, n_ff)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(target)
    return target


def parameter_count(*, n_embd: int = 768, n_layer: int = 12, n_ff: int = 2048, n_vocab: int = 512) -> int:
    return 2 * n_vocab * n_embd + n_layer * (4 * n_embd * n_embd + 3 * n_embd * n_ff + 2 * n_embd) + n_embd


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("output")
    parser.add_argument("--n-embd", type=int, default=768)
    parser.add_argument("--n-layer", type=int, default=12)
    parser.add_argument("--n-head", type=int, default=12)
    parser.add_argument("--n-ff", type=int, default=2048)
    parser.add_argument("--quant", choices=sorted(QUANT), default="q8_0")
    args = parser.parse_args()
    out = synthesize(
        args.output, n_embd=args.n_embd, n_layer=args.n_layer, n_head=args.n_head, n_ff=args.n_ff, quant=args.quant
    )
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")
