"""Where the time goes per generated token: ``python bench/per_token.py [MODEL.gguf]``.

Profiles (cProfile) a 32-run batched sweep and 8 single generations, and prints microseconds
per generated token for llama.cpp's decode, sampling, and lmbench's own Python work.
"""

from __future__ import annotations

import cProfile
import os
import pstats
import sys
import tempfile
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lmbench
from bench.synth import TOKENIZER_SOURCE

# (label, file suffix, function name) of the functions that make up a token's cost.
PARTS = [
    ("llama.cpp decode", "_native.py", "decode"),
    ("scheduler steps (decode included)", "_scheduler.py", "_step"),
    ("sampler chain", "_sampling.py", "sample"),
    ("log-probabilities", "_sequence.py", "log_softmax"),
    ("token records", "_sequence.py", "logprob_entry"),
    ("text decoding, stop strings", "_sequence.py", "add"),
    ("token bytes", "engine.py", "piece"),
    ("recording runs", "store.py", "record"),
    ("metrics", "metrics.py", "compute"),
]


def profile(label: str, statement: str, namespace: dict, tokens: int) -> None:
    profiler = cProfile.Profile()
    profiler.runctx(statement, namespace, namespace)
    stats = pstats.Stats(profiler).stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, _), (_, _, tt, _, _) in stats.items())
    print(f"\n{label}: {tokens} tokens, {1e6 * total / tokens:.1f} us per token in all")
    spent_in = {}
    for name, suffix, function in PARTS:
        spent_in[name] = sum(
            ct for (file, _, fn), (_, _, _, ct, _) in stats.items() if file.endswith(suffix) and fn == function
        )
    for name, spent in spent_in.items():
        if spent:
            print(f"  {name:<30} {1e6 * spent / tokens:8.1f} us/token")


def main() -> None:
    os.environ.setdefault("LMBENCH_HOME", tempfile.mkdtemp(prefix="lmbench-profile-"))
    model = Path(sys.argv[1]) if len(sys.argv) > 1 else TOKENIZER_SOURCE
    engine = lmbench.load(model)
    grid = {"temperature": [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]}
    namespace = {"lmbench": lmbench, "engine": engine, "grid": grid, "uuid": uuid}
    sweep = "lmbench.sweep('Once upon a time', grid=grid, seeds=4, max_tokens=64, ignore_eos=True, model=engine.path, progress=False, name=uuid.uuid4().hex)"  # noqa: E501
    exec(sweep, namespace)  # warm up
    print(f"model {engine.name}, {engine.n_threads} threads")
    profile("batched sweep, 32 runs x 64 tokens (logprobs recorded)", sweep, namespace, 32 * 64)
    single = (
        "for s in range(8): lmbench.generate('Once upon a time', model=engine, max_tokens=128, seed=s, ignore_eos=True)"
    )
    profile("single generations, 8 x 128 tokens", single, namespace, 8 * 128)


if __name__ == "__main__":
    main()
