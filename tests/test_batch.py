"""Batched sweeps against the real test model: determinism, per-run records, continuous batching, limits."""

from __future__ import annotations

import threading

import pytest
from conftest import after

import lmbench

PROMPT = "Once upon a time"


def _texts(df) -> dict[tuple, str]:
    return {(r.temperature, r.seed): r.text for r in df.itertuples()}


def test_batched_sweep_is_deterministic_and_records_the_batch_size() -> None:
    kwargs = {"grid": {"temperature": [0.0, 0.7, 1.4]}, "seeds": 4, "max_tokens": 40, "progress": False}
    first = lmbench.sweep(PROMPT, name="a", **kwargs)
    second = lmbench.sweep(PROMPT, name="b", **kwargs)
    assert _texts(first) == _texts(second)
    assert set(first.batch_size) == {12}
    one_by_one = lmbench.sweep(PROMPT, name="c", batch=False, **kwargs)
    assert set(one_by_one.batch_size) == {1}


def test_each_run_records_what_its_own_sequence_produced() -> None:
    df = lmbench.sweep(
        PROMPT, grid={"temperature": [0.5, 1.0], "max_tokens": [5, 30]}, seeds=3, stop=["\n"], progress=False
    )
    assert len(df) == 12 and df.id.is_unique
    for run in df.itertuples():
        stored = lmbench.get_store().get(run.id)
        tokens = stored.token_logprobs
        assert len(tokens) == stored.completion_tokens <= stored.max_tokens
        assert "\n" not in stored.text
        if stored.finish_reason == "length":
            assert stored.completion_tokens == stored.max_tokens
            assert "".join(t["token"] for t in tokens) == stored.text
        assert stored.seed == run.seed and stored.ttft_s <= stored.total_s


def test_continuous_batching_keeps_the_batch_full() -> None:
    df = lmbench.sweep(PROMPT, grid={"max_tokens": [3, 60]}, seeds=6, batch_size=4, progress=False)
    assert len(df) == 12 and set(df.batch_size) == {4}
    short, long = df[df.max_tokens == 3], df[df.max_tokens == 60]
    assert (short.completion_tokens <= 3).all() and (long.completion_tokens > 3).all()
    assert set(df.finish_reason) <= {"length", "stop"}


def test_the_prompt_is_evaluated_once_per_prompt() -> None:
    prompts = {"a": "Once upon a time there was a dog", "b": "The little cat"}
    df = lmbench.sweep(prompts, grid={"temperature": [0.5, 1.0]}, seeds=3, max_tokens=8, progress=False)
    for _, group in df.groupby("prompt_name"):
        cached = sorted(group.prompt_cached_tokens)
        n_prompt = group.prompt_tokens.iloc[0]
        assert cached == [0] + [n_prompt - 1] * (len(group) - 1), "one run pays for the prompt, the rest reuse it"


def test_a_prompt_that_cannot_fit_fails_before_anything_runs() -> None:
    with pytest.raises(lmbench.ContextOverflowError):
        lmbench.sweep("word " * 3000, grid={"temperature": [0.5]}, seeds=2, progress=False)
    assert lmbench.runs().empty


def test_bad_batch_size_is_refused() -> None:
    with pytest.raises(ValueError, match="batch_size"):
        lmbench.sweep(PROMPT, grid={"temperature": [0.5]}, seeds=1, batch_size=0, progress=False)


def test_cancel_keeps_finished_runs_and_records_the_rest_as_cancelled() -> None:
    stop = threading.Event()
    kwargs = {"grid": {"max_tokens": [2, 500]}, "seeds": 4, "batch_size": 8, "progress": False, "name": "cx"}
    df = lmbench.sweep(PROMPT, cancel=stop, on_run=after(3, stop.set), **kwargs)
    table = lmbench.runs().set_index("max_tokens")
    assert set(table.loc[2].finish_reason) == {"length"}, "the short runs finished"
    cancelled = table.loc[500]
    assert set(cancelled.finish_reason) == {"cancelled"} and (cancelled.completion_tokens < 500).all()
    assert len(df) == 8
    again = lmbench.sweep(PROMPT, **kwargs)
    assert len(again) == 8 and "cancelled" not in set(again.finish_reason)
    assert len(lmbench.runs()) == 8, "cancelled runs were replaced"


def test_generation_still_works_after_a_batched_sweep() -> None:
    lmbench.sweep(PROMPT, grid={"temperature": [0.5]}, seeds=3, max_tokens=10, progress=False)
    a = lmbench.generate(PROMPT, temperature=0, max_tokens=20)
    b = lmbench.generate(PROMPT, temperature=0, max_tokens=20)
    assert a.text == b.text and a.completion_tokens == 20
