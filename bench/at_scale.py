"""B15 at scale: an evaluation of N items x 4 settings x 32 tokens on the default model, end to end.

One ``lmbench.sweep`` over a data set of N short questions (each through the model's chat
template) at 4 temperatures, 32 tokens each, recorded with no metrics and no log-probabilities (the
generation machinery, as llama-batched-bench measures it): the minutes it takes from
the call to the DataFrame, and its generated tokens per second (every completion token over the
whole wall time, prompts and recording included) against llama-batched-bench's S_TG at the same
batch (the sweep's 32 sequences, the items' median prompt length, 32 tokens). The target: >= 0.95.
"""

from __future__ import annotations

import statistics
import tempfile
import time
import uuid
from pathlib import Path

import lmbench
from bench import llama_tools
from bench.common import Result
from bench.speculative import default_model
from lmbench.store import Store
from lmbench.sweep import MAX_BATCH

TOPICS = ("rivers", "bread", "trains", "owls", "glass", "rain", "maps", "bees", "salt", "kites", "clocks", "moss")
TEMPERATURES = [0.0, 0.4, 0.8, 1.2]
MAX_TOKENS = 32


def items(n: int) -> list[dict[str, str]]:
    """``n`` distinct questions (the same few shapes over topics and numbers)."""
    return [{"id": str(i), "topic": TOPICS[i % len(TOPICS)], "number": str(i)} for i in range(n)]


def b15_at_scale(n_items: int) -> list[Result]:
    path = default_model()
    engine = lmbench.load(path)
    store = Store(Path(tempfile.mkdtemp()) / "b15.db")
    template = "Question {number}: in one sentence, what is one surprising fact about {topic}?"
    options = {
        "seeds": [0],
        "max_tokens": MAX_TOKENS,
        "ignore_eos": True,
        "logprobs": None,
        "metrics": None,
        "progress": False,
    }
    lmbench.sweep(template, data=items(MAX_BATCH), model=path, store=store, name="warm-up", **options)  # type: ignore[arg-type]
    started = time.perf_counter()
    df = lmbench.sweep(
        template,
        data=items(n_items),
        grid={"temperature": TEMPERATURES},
        model=path,
        store=store,
        name=uuid.uuid4().hex,
        **options,  # type: ignore[arg-type]
    )
    wall = time.perf_counter() - started
    generated = float(df.completion_tokens.sum()) / wall
    results = [
        Result(
            "B15 at scale",
            path.stem,
            f"{n_items:,} items x {len(TEMPERATURES)} settings x {MAX_TOKENS} tokens: minutes end to end",
            wall / 60,
            None,
            "min",
            "report",
        )
    ]
    binary = llama_tools.batched_bench()
    if binary is not None:
        n_prompt = int(statistics.median(df.prompt_tokens))
        s_tg = llama_tools.s_tg(
            binary, path, n_prompt=n_prompt, n_gen=MAX_TOKENS, n_seq=MAX_BATCH, threads=engine.n_threads, reps=3
        )
        results.append(
            Result(
                "B15 at scale",
                path.stem,
                f"batch {MAX_BATCH}: generated tok/s end to end vs llama-batched-bench S_TG ({n_prompt}-token prompts)",
                generated,
                s_tg,
                "tok/s",
                ">= 0.95",
            )
        )
    return results
