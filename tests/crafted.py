"""Crafted GGUF files: the test model rewritten with one thing wrong, the way an attacker or a broken
converter would write it. Each case is made with the ``gguf`` package (a valid container) so that
only the model's meaning is off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import numpy as np

Fields = dict[str, tuple[Any, gguf.GGUFValueType, gguf.GGUFValueType | None]]
Tensors = dict[str, tuple[np.ndarray, gguf.GGMLQuantizationType]]


def _read(source: Path) -> tuple[Fields, Tensors]:
    reader = gguf.GGUFReader(source)
    fields: Fields = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF.") or name == "general.architecture":
            continue
        kind = field.types[0]
        sub = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        fields[name] = (field.contents(), kind, sub)
    tensors = {t.name: (np.array(t.data), t.tensor_type) for t in reader.tensors}
    return fields, tensors


def write(
    source: Path, target: Path, change: Callable[[Fields, Tensors], None], *, alignment: int | None = None
) -> Path:
    """``source`` with ``change`` applied to its metadata and tensors, written to ``target``."""
    fields, tensors = _read(source)
    change(fields, tensors)
    writer = gguf.GGUFWriter(target, "llama")
    if alignment is not None:
        writer.data_alignment = alignment
        fields["general.alignment"] = (alignment, gguf.GGUFValueType.UINT32, None)
    for name, (value, kind, sub) in fields.items():
        writer.add_key_value(name, value, kind, sub_type=sub)
    for name, (data, kind) in tensors.items():
        writer.add_tensor(name, data, raw_dtype=kind)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return target


def _set(name: str, value: Any, kind: gguf.GGUFValueType) -> Callable[[Fields, Tensors], None]:
    return lambda fields, tensors: fields.__setitem__(name, (value, kind, None))


def _tokens(edit: Callable[[list[str]], list[str]]) -> Callable[[Fields, Tensors], None]:
    def change(fields: Fields, tensors: Tensors) -> None:
        tokens, kind, sub = fields["tokenizer.ggml.tokens"]
        fields["tokenizer.ggml.tokens"] = (edit(list(tokens)), kind, sub)

    return change


def _drop_layer(fields: Fields, tensors: Tensors) -> None:
    for name in [n for n in tensors if n.startswith("blk.4.")]:
        del tensors[name]


def _as_int(name: str) -> Callable[[Fields, Tensors], None]:
    def change(fields: Fields, tensors: Tensors) -> None:
        data, _ = tensors[name]
        tensors[name] = (data.astype(np.int32), gguf.GGMLQuantizationType.I32)

    return change


U32, F32, STR = gguf.GGUFValueType.UINT32, gguf.GGUFValueType.FLOAT32, gguf.GGUFValueType.STRING
HOSTILE_TEMPLATE = "{{ 'x' * 3000000000 }}"
LOOPING_TEMPLATE = "{% for i in range(99999) %}{% for j in range(99999) %}{% endfor %}{% endfor %}"

# name -> (change, what must happen): "refused" (ModelLoadError), or "template" (loads; chat is refused).
CASES: dict[str, tuple[Callable[[Fields, Tensors], None], str]] = {
    "more layers than tensors": (_set("llama.block_count", 7, U32), "refused"),
    "fewer layers than tensors": (_set("llama.block_count", 3, U32), "refused"),
    "a layer's tensors missing": (_drop_layer, "refused"),
    "unknown tokenizer model": (_set("tokenizer.ggml.model", "nonsense", STR), "refused"),
    "NaN norm epsilon": (_set("llama.attention.layer_norm_rms_epsilon", float("nan"), F32), "refused"),
    "negative norm epsilon": (_set("llama.attention.layer_norm_rms_epsilon", -1.0, F32), "refused"),
    "empty token strings": (_tokens(lambda t: [*t[:100], "", *t[101:]]), "refused"),
    "vocabulary shorter than the embedding": (_tokens(lambda t: t[:400]), "refused"),
    "zero heads": (_set("llama.attention.head_count", 0, U32), "refused"),
    "embedding width mismatch": (_set("llama.embedding_length", 96, U32), "refused"),
    "integer weights": (_as_int("blk.0.attn_q.weight"), "refused"),
    "hostile chat template": (_set("tokenizer.chat_template", HOSTILE_TEMPLATE, STR), "template"),
    "looping chat template": (_set("tokenizer.chat_template", LOOPING_TEMPLATE, STR), "template"),
    "broken chat template": (_set("tokenizer.chat_template", "{% for %}", STR), "template"),
    "absurd trained context": (_set("llama.context_length", 2**28, U32), "works"),
}


def corpus(source: Path, folder: Path) -> dict[str, tuple[Path, str]]:
    """Every crafted case written into ``folder``: name -> (file, what must happen)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for i, (name, (change, outcome)) in enumerate(CASES.items()):
        made[name] = (write(source, folder / f"crafted-{i:02d}.gguf", change), outcome)
    made["alignment not a power of two"] = (
        write(source, folder / "crafted-align.gguf", lambda f, t: None, alignment=24),
        "refused",
    )
    return made
