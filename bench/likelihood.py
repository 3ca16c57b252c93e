"""The likelihood benchmark (B12): multiple choice answered by log-likelihood, batched vs one request per choice.

Run through ``bench/run.py --only B12``; it returns ``Result`` rows for the table.
"""

from __future__ import annotations

import random
import tempfile
import time
import uuid
from pathlib import Path

import lmbench
from bench.common import Result, alternate
from lmbench.likelihood import encode_pair
from lmbench.store._store import Store

OPENERS = [
    "Once upon a time, there was a little girl named Lily. She liked to",
    "Tom had a red ball. One day he went to the park and",
    "The sun was shining and the birds were singing. Ben wanted to",
    "Mom made a big cake for the party. The children were",
    "A small bird sat on the tree. It looked down and saw a",
]
WORDS = ["play", "run", "cat", "dog", "happy", "sad", "ball", "tree", "jump", "sing", "cake", "park"]


def items(n: int = 200, seed: int = 12) -> list[dict[str, object]]:
    """``n`` four-way items: a story opening (with a number, so contexts differ) and four one-word choices."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        choices = rng.sample(WORDS, 4)
        rows.append({"id": f"i{i}", "story": f"{rng.choice(OPENERS)} {i}", "choices": choices, "answer": choices[0]})
    return rows


def b12_multiple_choice(name: str, path: Path, reps: int) -> list[Result]:
    """Items per second: ``lmbench.choose`` (one batch, recorded) vs ``Engine.score`` once per choice (unrecorded)."""
    engine = lmbench.load(path)
    data = items()
    store = Store(Path(tempfile.mkdtemp(prefix="lmbench-b12-")) / "runs.db")
    pairs = [(str(row["story"]), " " + c) for row in data for c in row["choices"]]  # type: ignore[attr-defined]
    encoded = [encode_pair(engine, c, x) for c, x in pairs]

    def batched() -> float:
        started = time.perf_counter()
        lmbench.choose("{story}", data=data, choices="choices", model=engine, store=store, experiment=uuid.uuid4().hex)
        return len(data) / (time.perf_counter() - started)

    def one_by_one() -> float:
        started = time.perf_counter()
        for context, continuation in encoded:
            engine.score([context + continuation], start=len(context))
        return len(data) / (time.perf_counter() - started)

    a, b = alternate(batched, one_by_one, reps)
    return [Result("B12 multiple choice", name, "items/s, 200 items x 4 choices", a, b, "items/s", ">= 3x")]
