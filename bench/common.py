"""What every benchmark shares: the result row, alternating medians, the bare llama-cpp-python baseline."""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import llama_cpp

from lmbench.engine._engine import cpu_has_amx, physical_cores

PROMPT = "Once upon a time"
SAMPLING = {"temperature": 0.8, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "repeat_penalty": 1.1}


@dataclasses.dataclass
class Result:
    bench: str
    model: str
    measure: str
    lmbench: float
    baseline: float | None
    unit: str
    target: str = ""

    @property
    def ratio(self) -> float | None:
        return self.lmbench / self.baseline if self.baseline else None


def alternate(a: Callable[[], float], b: Callable[[], float], reps: int) -> tuple[float, float]:
    """Median of ``a()`` and of ``b()`` over ``reps`` rounds, alternating which goes first."""
    results_a, results_b = [], []
    for rep in range(reps):
        first, second = ((a, results_a), (b, results_b)) if rep % 2 == 0 else ((b, results_b), (a, results_a))
        for fn, bucket in (first, second):
            bucket.append(fn())
    return statistics.median(results_a), statistics.median(results_b)


def baseline_llama(path: Path, n_ctx: int = 2048) -> llama_cpp.Llama:
    """The bare llama-cpp-python model the comparisons run against (same threads and context as lmbench's)."""
    threads = physical_cores()
    with _model_params(use_extra_bufts=not cpu_has_amx()):  # as lmbench loads it (see lmbench.engine._native)
        return llama_cpp.Llama(
            model_path=str(path), n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, verbose=False
        )


@contextlib.contextmanager
def _model_params(**fields: object) -> Iterator[None]:
    """Set llama.cpp model parameters that ``llama_cpp.Llama()`` has no argument for, for one load."""
    module = llama_cpp.llama_cpp
    original = module.llama_model_default_params

    def patched() -> object:
        params = original()
        for name, value in fields.items():
            setattr(params, name, value)
        return params

    module.llama_model_default_params = patched
    try:
        yield
    finally:
        module.llama_model_default_params = original


def sequential(bare: llama_cpp.Llama, requests: Iterable[tuple[str, dict[str, object]]]) -> float:
    """Tokens/s of 64-token ``create_completion`` calls one after another: the sweep benchmarks' baseline."""
    started, tokens = time.perf_counter(), 0
    for prompt, settings in requests:
        tokens += bare.create_completion(prompt, max_tokens=64, **settings)["usage"]["completion_tokens"]  # type: ignore[index, arg-type]
    return tokens / (time.perf_counter() - started)


def sweep_target(model: str) -> str:
    """What a batched sweep should reach against the sequential loop (a tiny model gains less)."""
    return ">= 1.5" if model == "stories260K" else ">= 2.5"
