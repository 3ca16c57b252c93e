"""The likelihood benchmarks: B11, tokens scored per second by ``lmbench.perplexity`` vs llama.cpp's
``llama-perplexity``; B12, multiple choice answered by log-likelihood, batched vs one request per choice.

Run through ``bench/run.py --only B11,B12``; each returns ``Result`` rows for the table.
"""

from __future__ import annotations

import json
import math
import random
import re
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import lmbench
from bench import llama_tools
from bench.common import Result, alternate
from lmbench.engine._engine import physical_cores
from lmbench.likelihood import encode_pair, prefix_token
from lmbench.store._store import Store

HERE = Path(__file__).resolve().parent

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


# B11 ---------------------------------------------------------------------------------------------------

# The context both sides score with; llama-perplexity needs at least two of these in the text.
PPL_CONTEXT = 256


def ppl_text(copies: int = 12) -> str:
    """A few thousand tokens of short stories (the evaluation pack's, repeated), the test model's domain."""
    lines = (HERE.parent / "notebooks" / "data" / "stories_mc.jsonl").read_text().splitlines()
    stories = [json.loads(line)["story"] for line in lines if line.strip()]
    return " ".join(stories * copies)


def log_clock(log: str, marker: str) -> float:
    """The seconds on llama.cpp's log clock (``M.SS.mmm.uuu``) of the last message starting with ``marker``.

    The stamp is the one just before the marker, not the line's first: the final estimate shares a line with
    the ETA message, whose stamp (after the first pass) comes first on it.
    """
    stamp = re.findall(rf"(\d+\.\d+\.\d+\.\d+) \w {re.escape(marker)}", log)[-1]
    minutes, seconds, millis, micros = stamp.split(".")[-4:]
    return int(minutes) * 60 + int(seconds) + int(millis) / 1e3 + int(micros) / 1e6


def _llama_perplexity(binary: Path, path: Path, text: Path, threads: int) -> tuple[float, float, int]:
    """llama-perplexity's final PPL, its scoring seconds (from its log's clock: the first chunk to the
    final estimate, model load excluded) and the tokens it scored."""
    command = [str(binary), "-m", str(path), "-f", str(text), "-c", str(PPL_CONTEXT), "-t", str(threads)]
    command += llama_tools.as_lmbench_loads()
    out = subprocess.run(command, check=True, capture_output=True, text=True)
    log = out.stdout + out.stderr
    llama_tools.same_features("llama-perplexity", log)

    chunks = int(re.search(r"over (\d+) chunks", log).group(1))  # type: ignore[union-attr]
    ppl = float(re.search(r"Final estimate: PPL = ([\d.]+)", log).group(1))  # type: ignore[union-attr]
    scored = chunks * (PPL_CONTEXT - 1 - PPL_CONTEXT // 2)  # it scores the second half of each chunk
    return ppl, log_clock(log, "Final estimate") - log_clock(log, "perplexity: calculating perplexity"), scored


def _same_chunks(engine: lmbench.Engine, text: str) -> float:
    """Perplexity through lmbench's scoring path (``Engine.score``, which ``lmbench.perplexity`` uses) of exactly
    llama-perplexity's windows: the text after BOS in chunks of the context, each chunk's first token replaced
    by BOS, the second half of each chunk scored."""
    bos = [prefix_token(engine)]
    tokens = bos + engine.tokenize(text, add_bos=False)
    chunks = [bos + tokens[at + 1 : at + PPL_CONTEXT] for at in range(0, len(tokens) - PPL_CONTEXT + 1, PPL_CONTEXT)]
    scores = engine.score(chunks, start=PPL_CONTEXT // 2 + 1)
    return math.exp(-sum(s.total for s in scores) / sum(len(s.tokens) for s in scores))


def b11_perplexity(name: str, path: Path, reps: int) -> list[Result]:
    """Tokens scored per second by ``lmbench.perplexity`` (recorded) vs llama-perplexity, same model, context and
    threads, and the perplexity values of the two.

    Speed: lmbench with ``window=context - 1, stride=context / 2`` scores each token once with at least half a
    context before it, evaluating about two tokens per scored token as llama-perplexity does. Values:
    llama-perplexity scores only the second half of disjoint chunks whose first token is replaced by BOS, which
    rolling windows cannot express; so the agreement row scores exactly its chunks through ``Engine.score``
    (lmbench.perplexity's own scoring path), and ``lmbench.perplexity``'s own value is shown beside it.
    """
    binary = llama_tools.build("llama-perplexity")
    if binary is None:
        return []
    engine = lmbench.load(path, n_ctx=max(PPL_CONTEXT, 512), n_threads=physical_cores())  # fixed: the same as theirs
    text = ppl_text()
    text_file = Path(tempfile.mkdtemp(prefix="lmbench-b11-")) / "stories.txt"
    text_file.write_text(text)
    store = Store(text_file.parent / "runs.db")
    theirs_ppl: list[float] = []

    def ours() -> float:
        started = time.perf_counter()
        result = lmbench.perplexity(
            text, model=engine, window=PPL_CONTEXT - 1, stride=PPL_CONTEXT // 2, store=store, experiment="b11"
        )
        return result.overall["tokens"] / (time.perf_counter() - started)

    def theirs() -> float:
        ppl, seconds, scored = _llama_perplexity(binary, path, text_file, engine.n_threads)
        theirs_ppl.append(ppl)
        return scored / seconds

    a, b = alternate(ours, theirs, reps)
    rolling = lmbench.perplexity(text, model=engine, window=PPL_CONTEXT - 1, stride=PPL_CONTEXT // 2, store=store)
    measure = f"tokens scored/s, context {PPL_CONTEXT}, {engine.n_threads} threads"
    return [
        Result("B11 perplexity", name, measure, a, b, "tokens/s", ">= 0.9x"),
        Result(
            "B11 perplexity",
            name,
            "PPL of llama-perplexity's chunks, Engine.score",
            _same_chunks(engine, text),
            theirs_ppl[-1],
            "PPL",
            "within 1%",
        ),
        Result(
            "B11 perplexity",
            name,
            "PPL, lmbench.perplexity (rolling windows)",
            rolling.overall["perplexity"],
            theirs_ppl[-1],
            "PPL",
            "close (other windows)",
        ),
    ]
