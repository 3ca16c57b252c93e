"""lmbench's benchmark suite: ``python bench/run.py`` prints a table and records it in bench/RESULTS.md.

Each comparison runs its two sides in one process, alternating A and B every repetition to
cancel machine noise, and reports medians. Models: the test model (stories260K) and a synthetic
85M-parameter Llama that ``bench/synth.py`` writes on first use (kept out of git).

B1 overhead      lmbench.generate (recorded) vs a bare llama_cpp.Llama.create_completion loop
B2 sweep         a 32-run sweep (8 temperatures x 4 seeds, 64 tokens) batched vs a sequential create_completion loop
B3 shared prompt a ~400-token prompt x 16 runs: prompt tokens evaluated and their time, batched vs re-evaluated
B4 ceiling       batched generation speed (no log-probabilities, no metrics) over llama-batched-bench's S_TG
B5 store         10,000 runs recorded; lmbench.runs() of 100,000 rows (first read, from the snapshot, last=10)
B6 many prompts  32 distinct prompts x 64 tokens through one sweep vs a sequential create_completion loop
B7 clients       16 openai clients x 4 streamed requests: lmbench serve --parallel 16 vs 1, and vs llama-server
                 (each server a process of its own)
B8 template      32 prompts sharing a ~300-token prefix: prompt tokens evaluated and time, prefix sharing on vs off
B9 scale-out     a 32-run sweep on a Dask LocalCluster of 2 one-thread workers vs in this process; cost per task
B10 model list   `lmbench models list` and `lmbench.panel()` with 20 models in the folders (the baseline: start-up)
B11 perplexity   tokens scored/s: lmbench.perplexity (context 256, stride 128) vs llama-perplexity; PPL agreement
B12 choices      200 items x 4 choices by log-likelihood: lmbench.choose (one batch) vs Engine.score once per choice
B13 busy machine one request with 0 and 1 competing CPU-bound processes: the default threads vs fixed 1 and 2
B14 speculative  the summarize notebook's 8 articles on the default model, temperature 0 and 0.7: prompt lookup vs plain
B15 at scale     N items x 4 settings x 32 tokens on the default model end to end (--items, default 1000) vs S_TG
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import llama_cpp
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import lmbench
from bench import at_scale, busy, likelihood, llama_tools, model_list, scale_out, scheduling, speculative
from bench.common import PROMPT, SAMPLING, Result, alternate, baseline_llama, sequential, sweep_target
from bench.synth import TOKENIZER_SOURCE, synthesize
from lmbench.engine._engine import physical_cores
from lmbench.store._store import Store

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SYNTHETIC = HERE / ".models" / "synthetic-85M-q8_0.gguf"


TEMPERATURES = [0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4, 1.6]


def fresh_sweep(engine: lmbench.Engine, store: Store, prompt: str = PROMPT, **options: object) -> pd.DataFrame:
    """A batched sweep that never resumes (a new name each time), generating every token it is asked for."""
    options = {"grid": {"temperature": TEMPERATURES}, "seeds": 4, "max_tokens": 64, **options}
    return lmbench.sweep(
        prompt, ignore_eos=True, model=engine.path, name=uuid.uuid4().hex, progress=False, store=store, **options
    )


def b1_overhead(name: str, path: Path, reps: int) -> Result:
    engine = lmbench.load(path)
    bare = baseline_llama(path)
    store = Store(Path(tempfile.mkdtemp()) / "b1.db")
    max_tokens = 256

    def ours() -> float:
        started = time.perf_counter()  # the whole call: recording and metrics included
        run = lmbench.generate(PROMPT, model=engine, max_tokens=max_tokens, seed=1, store=store, **SAMPLING)
        return run.completion_tokens / (time.perf_counter() - started)

    def theirs() -> float:
        started = time.perf_counter()
        out = bare.create_completion(PROMPT, max_tokens=max_tokens, seed=1, **SAMPLING)
        return out["usage"]["completion_tokens"] / (time.perf_counter() - started)

    ours(), theirs()  # warm up both
    a, b = alternate(ours, theirs, reps)
    bare.close()
    return Result("B1 overhead", name, "tokens/s, one generation", a, b, "tok/s", ">= 0.95")


def b2_sweep(name: str, path: Path, reps: int) -> Result:
    engine = lmbench.load(path)
    bare = baseline_llama(path)
    store = Store(Path(tempfile.mkdtemp()) / "b2.db")

    def ours() -> float:
        started = time.perf_counter()
        df = fresh_sweep(engine, store)
        return df.completion_tokens.sum() / (time.perf_counter() - started)

    def theirs() -> float:
        calls = [(PROMPT, {**SAMPLING, "temperature": t, "seed": seed}) for t in TEMPERATURES for seed in range(4)]
        return sequential(bare, calls)

    ours(), theirs()
    a, b = alternate(ours, theirs, reps)
    bare.close()
    return Result("B2 sweep", name, "generated tokens/s, 32 runs", a, b, "tok/s", sweep_target(name))


def b3_shared_prompt(name: str, path: Path, reps: int) -> list[Result]:
    engine = lmbench.load(path)
    sentence = "The little dog ran to the park and played with a red ball in the sun. "
    prompt = sentence * 25
    n_prompt = len(engine.tokenize(prompt))
    store = Store(Path(tempfile.mkdtemp()) / "b3.db")
    evaluated: list[int] = []

    def batched() -> float:
        engine.scheduler.forget()  # a prompt new to the cache, as in the sweep's first run
        df = fresh_sweep(engine, store, prompt, grid={"temperature": [0.5, 1.0]}, seeds=8, max_tokens=32)
        evaluated.append(int((df.prompt_tokens - df.prompt_cached_tokens).sum()))
        first = df.sort_values("prompt_cached_tokens").iloc[0]
        return float(first.ttft_s)  # the one prompt evaluation (plus the first step)

    bare = baseline_llama(path)

    def every_run() -> float:
        tokens = engine.tokenize(prompt)
        total = 0.0
        for _ in range(16):
            bare.reset()
            started = time.perf_counter()
            bare.eval(tokens)
            total += time.perf_counter() - started
        return total

    batched(), every_run()
    a, b = alternate(batched, every_run, reps)
    bare.close()
    return [
        Result(
            "B3 shared prompt",
            name,
            f"prompt evaluation s per 16-run sweep ({n_prompt} tokens)",
            a,
            b,
            "s",
            "< 1/16 of re-evaluating",
        ),
        Result(
            "B3 shared prompt",
            name,
            "prompt tokens evaluated per sweep",
            evaluated[-1],
            16 * n_prompt,
            "tokens",
            f"{n_prompt} once, + 1 per run",
        ),
    ]


def b4_ceiling(name: str, path: Path, reps: int) -> Result | None:
    binary = llama_tools.batched_bench()
    if binary is None:
        return None
    engine = lmbench.load(path)
    n_prompt = len(engine.tokenize(PROMPT))
    store = Store(Path(tempfile.mkdtemp()) / "b4.db")
    generation: list[float] = []
    for _ in range(reps):
        # Generation only, as llama-batched-bench measures it: no log-probabilities, no metrics.
        df = fresh_sweep(engine, store, logprobs=None, metrics=None)
        # Generation speed as llama-batched-bench counts it: all tokens after the first step, over that time.
        span = (df.total_s - df.ttft_s).max()
        generation.append(float((df.completion_tokens - 1).sum() / span))
    s_tg = llama_tools.s_tg(binary, path, n_prompt=n_prompt, n_gen=64, n_seq=32, threads=engine.n_threads, reps=reps)
    return Result(
        "B4 ceiling",
        name,
        "batch 32: generation tok/s vs llama-batched-bench S_TG",
        statistics.median(generation),
        s_tg,
        "tok/s",
        ">= 0.8",
    )


def b5_store(reps: int) -> list[Result]:
    folder = Path(tempfile.mkdtemp())
    template = lmbench.generate(PROMPT, model=TOKENIZER_SOURCE, max_tokens=20, store=Store(folder / "t.db"))
    one_by_one, together = [], []
    for rep in range(reps):
        runs = [dataclasses.replace(template, id=uuid.uuid4().hex) for _ in range(10_000)]
        store = Store(folder / f"w{rep}.db")
        started = time.perf_counter()
        for run in runs[:1000]:
            store.record(run)
        one_by_one.append(1000 / (time.perf_counter() - started))
        started = time.perf_counter()
        store.record(runs)
        together.append(10_000 / (time.perf_counter() - started))
    big = Store(folder / "big.db")
    for _ in range(10):
        big.record([dataclasses.replace(template, id=uuid.uuid4().hex) for _ in range(10_000)])
    first_started = time.perf_counter()
    assert len(big.runs()) == 100_000
    first = time.perf_counter() - first_started
    again, newest = [], []
    for _ in range(reps):
        started = time.perf_counter()
        Store(big.path).runs()
        again.append(time.perf_counter() - started)
        started = time.perf_counter()
        assert len(Store(big.path).runs(last=10)) == 10
        newest.append(time.perf_counter() - started)
    return [
        Result(
            "B5 store",
            "-",
            "runs recorded per second, one transaction each",
            statistics.median(one_by_one),
            None,
            "runs/s",
        ),
        Result(
            "B5 store", "-", "runs recorded per second, 10,000 in one call", statistics.median(together), None, "runs/s"
        ),
        Result("B5 store", "-", "lmbench.runs() of 100,000 rows, first read (builds the snapshot)", first, None, "s"),
        Result(
            "B5 store",
            "-",
            "lmbench.runs() of 100,000 rows, later reads",
            statistics.median(again),
            None,
            "s",
            "well under 1 s",
        ),
        Result(
            "B5 store",
            "-",
            "lmbench.runs(last=10) of 100,000 rows (SQL, no snapshot)",
            statistics.median(newest),
            None,
            "s",
            "what 10 rows cost",
        ),
    ]


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    with contextlib.suppress(OSError, StopIteration), open("/proc/cpuinfo") as fh:
        cpu = next(line.split(":", 1)[1].strip() for line in fh if line.startswith("model name"))
    cores = physical_cores()
    return f"{cpu}, {os.cpu_count()} logical CPUs ({cores} physical cores used), Python {platform.python_version()}"


def table(results: list[Result]) -> str:
    lines = [
        "| bench | model | measure | lmbench | baseline | ratio | target |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        base = f"{r.baseline:,.3f}" if r.baseline is not None else ""
        ratio = f"{r.ratio:.2f}" if r.ratio is not None else ""
        lines.append(
            f"| {r.bench} | {r.model} | {r.measure} | {r.lmbench:,.3f} {r.unit} | {base} | {ratio} | {r.target} |"
        )
    return "\n".join(lines)


def record(results: list[Result], notes: str) -> None:
    """Put this run's table at the top of RESULTS.md, above the older ones."""
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {stamp}\n\n{machine()}; lmbench {lmbench.__version__}, llama-cpp-python {llama_cpp.__version__}.\n"
        f"{notes}\n\n{table(results)}\n"
    )
    header = "# Benchmark results\n\nNewest first. Produced by `python bench/run.py` (see its docstring).\n"
    old = RESULTS.read_text() if RESULTS.exists() else header
    body = old[len(header) :] if old.startswith(header) else old
    RESULTS.write_text(f"{header}\n{section}{body}")


def main() -> None:
    parser = argparse.ArgumentParser(description="lmbench benchmarks (see the module docstring)")
    parser.add_argument(
        "--only", default="B1,B2,B3,B4,B5,B6,B7,B8,B9,B10,B11,B12,B13,B14,B15", help="comma-separated: B1,...,B15"
    )
    parser.add_argument(
        "--models", default="stories260K,synthetic-85M", help="of stories260K, synthetic-85M, default (SmolLM2-135M)"
    )
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side (medians are reported)")
    parser.add_argument("--items", type=int, default=1000, help="B15's items (each run at 4 settings)")
    parser.add_argument("--no-record", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    os.environ.setdefault("LMBENCH_HOME", tempfile.mkdtemp(prefix="lmbench-bench-"))
    wanted = set(args.only.split(","))
    start = busy.quiet()
    print(start, flush=True)
    paths = {"stories260K": TOKENIZER_SOURCE, "synthetic-85M": SYNTHETIC}
    if "default" in args.models:  # the model the product ships (SmolLM2-135M-Instruct Q4_1)
        paths["default"] = lmbench.models.packaged()[0].path
    if "synthetic-85M" in args.models and not SYNTHETIC.exists():
        print(f"writing {SYNTHETIC} ...", flush=True)
        synthesize(SYNTHETIC)
    steps: dict[str, Callable[[str, Path, int], list[Result]]] = {
        "B1": lambda name, path, reps: [b1_overhead(name, path, 2 * reps - 1)],  # the noisiest: more rounds
        "B2": lambda name, path, reps: [b2_sweep(name, path, reps)],
        "B3": b3_shared_prompt,
        "B4": lambda name, path, reps: [r for r in [b4_ceiling(name, path, reps)] if r],
        "B6": lambda name, path, reps: [scheduling.b6_many_prompts(name, path, reps)],
        "B7": scheduling.b7_concurrent_clients,
        "B8": scheduling.b8_shared_template,
        "B9": scale_out.b9_scale_out,
        "B11": likelihood.b11_perplexity,
        "B12": likelihood.b12_multiple_choice,
        "B13": busy.b13_busy_machine,
    }
    results: list[Result] = []
    for name in args.models.split(","):
        for key, step in steps.items():
            if key in wanted:
                print(f"{key} on {name} ...", flush=True)
                results += step(name, paths[name], args.reps)
                print(table(results[-1:]).splitlines()[-1], flush=True)
                lmbench.unload()
    if "B5" in wanted:
        print("B5 ...", flush=True)
        results += b5_store(args.reps)
    if "B10" in wanted:
        print("B10 ...", flush=True)
        results += model_list.b10_model_list(args.reps)
    if "B14" in wanted:  # on the default model, whatever --models says
        print("B14 ...", flush=True)
        results += speculative.b14_speculative(args.reps)
        lmbench.unload()
    if "B15" in wanted:
        print("B15 ...", flush=True)
        results += at_scale.b15_at_scale(args.items)
        lmbench.unload()
    print(table(results))
    if not args.no_record:
        cpu = " | ".join(f"{k} = {v}" for k, v in sorted(llama_tools.library_features().items()))
        notes = (
            f"{args.reps} repetitions per side, alternating; medians. Models: {args.models}. {start}.\n"
            f"llama.cpp CPU features, llama-cpp-python's and (checked equal) the llama.cpp tools': {cpu}."
        )
        record(results, notes)
        print(f"recorded in {RESULTS}")


if __name__ == "__main__":
    main()
