"""The one scheduler every generation goes through, on the real test model: isolation between
sequences, concurrent callers in one batch, cancelling one, prefix sharing, limits."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from conftest import TEST_MODEL

import lmbench

STORIES = [
    "Once upon a time",
    "The little cat",
    "Tom had a red ball",
    "One day, a girl named Lily",
    "The sun was shining",
    "There was a big tree",
    "Ben and his dad",
    "A small bird sat",
    "The dog ran to the park",
    "Mom made a cake",
    "It was a cold night",
    "Sue found a box",
    "The boat was slow",
    "A frog lived in a pond",
    "The king was sad",
    "Max liked to jump",
]
GREEDY = {"temperature": 0.0, "max_tokens": 48, "ignore_eos": True}


def _alone(prompts: list[str]) -> dict[str, lmbench.Run]:
    return {p: lmbench.generate(p, model=TEST_MODEL, seed=1, logprobs=2, **GREEDY) for p in prompts}  # type: ignore[arg-type]


def _identical(solo: lmbench.Run, batched: lmbench.Run) -> bool:
    """Whether two greedy runs of a prompt made the same tokens; where they part, the two best tokens
    must have been all but tied: batched matrix products add in another order, which moves logits in
    their last bits (documented in ``lmbench.engine._scheduler``)."""
    a, b = solo.token_logprobs, batched.token_logprobs
    assert a is not None and b is not None
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x["id"] != y["id"]), None)
    if at is None:
        return len(a) == len(b)
    best, second = a[at]["top"][:2]
    assert best["logprob"] - second["logprob"] < 0.01 and b[at]["id"] == second["id"], (solo.prompt, at)
    return False


def test_sixteen_prompts_in_one_batch_each_continue_their_own_prompt() -> None:
    alone = _alone(STORIES)
    df = lmbench.sweep(
        STORIES, grid={"temperature": [0.0]}, seeds=[1], max_tokens=48, ignore_eos=True, logprobs=2, progress=False
    )
    assert set(df.batch_size) == {16}, "all sixteen decoded together"
    same = sum(_identical(alone[row.prompt], lmbench.get_store().get(row.id)) for row in df.itertuples())
    assert same >= 12, f"only {same} of 16 texts identical"


def test_concurrent_callers_share_one_batch_and_a_cancelled_one_leaves_the_others_be() -> None:
    engine = lmbench.load(TEST_MODEL)
    engine.parallel = 8
    prompts = STORIES[:8]
    alone = _alone(prompts)
    cancel = threading.Event()
    seen: list[str] = []

    def stop_soon(piece: str) -> None:
        seen.append(piece)
        if len(seen) == 5:
            cancel.set()

    def ask(i: int) -> lmbench.Run:
        if i == 0:
            return lmbench.generate(
                prompts[0],
                model=engine,
                seed=1,
                cancel=cancel,
                on_token=stop_soon,
                temperature=0.0,
                max_tokens=2000,
                ignore_eos=True,
            )
        return lmbench.generate(prompts[i], model=engine, seed=1, logprobs=2, **GREEDY)  # type: ignore[arg-type]

    with ThreadPoolExecutor(8) as pool:
        runs = list(pool.map(ask, range(8)))
    assert runs[0].finish_reason == "cancelled" and runs[0].completion_tokens < 2000
    same = sum(_identical(alone[r.prompt], r) for r in runs[1:])
    assert same >= 5, f"only {same} of 7 texts identical"
    assert max(r.batch_size for r in runs) > 1, "concurrent callers decoded together"
    assert engine.scheduler.status()["busy"] == 0


def test_every_decode_runs_on_the_contexts_own_thread_whichever_caller_drives(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama.cpp's CPU backend keeps helper threads per calling thread; decodes from changing request threads
    ran several times slower, so each context decodes on one thread of its own."""
    from lmbench.engine import _native

    real = _native.llama_cpp.llama_decode
    deciding: set[str] = set()
    decoding: set[int] = set()
    real_decode = _native.Context.decode

    def decode(self: _native.Context, entries: list[_native.Entry]) -> None:
        deciding.add(threading.current_thread().name)
        real_decode(self, entries)

    def llama_decode(ctx: object, batch: object) -> int:
        decoding.add(threading.get_ident())
        return int(real(ctx, batch))

    monkeypatch.setattr(_native.Context, "decode", decode)
    monkeypatch.setattr(_native.llama_cpp, "llama_decode", llama_decode)
    lmbench.unload()
    engine = lmbench.load(TEST_MODEL)
    engine.parallel = 4

    def ask(i: int) -> int:
        lengths = (8, 16, 24, 32)  # callers finish one after another, so the drive passes between them
        return sum(
            lmbench.generate(
                p, model=engine, seed=k, max_tokens=lengths[(i + k) % 4], ignore_eos=True
            ).completion_tokens
            for k, p in enumerate(STORIES[4 * i : 4 * i + 4])
        )

    with ThreadPoolExecutor(4, thread_name_prefix="caller") as pool:
        made = sum(pool.map(ask, range(4)))
    assert made == 4 * (8 + 16 + 24 + 32)
    assert len(deciding) > 1, f"the drive passed between callers: {deciding}"
    assert len(decoding) == 1 and threading.get_ident() not in decoding, "one decode thread, not a caller"


def test_sampling_half_a_batch_on_the_decode_thread_changes_no_token(monkeypatch: pytest.MonkeyPatch) -> None:
    """A large batch samples half its sequences on the context's decode thread; every sequence has its own
    sampler and seed, so the tokens are the ones sampled one after another. Drafts of unequal length make
    llama.cpp split the batch (its output rows out of order until first read), and no log-probabilities
    are read before the two threads sample."""
    from lmbench.engine import _scheduler

    prompts = [f"{story}. {story}. {story}." for story in STORIES[:12]]
    options = {"seeds": [3, 4], "max_tokens": 24, "temperature": 0.9, "progress": False, "metrics": None}
    options |= {"draft": "ngram", "draft_min": 1, "logprobs": None}
    sampling: set[str] = set()
    real = _scheduler._sample_each

    def sample_each(ctx: object, jobs: list[tuple[object, int]]) -> list[int]:
        sampling.add(threading.current_thread().name)
        return real(ctx, jobs)  # type: ignore[arg-type]

    serial = lmbench.sweep(prompts, model=TEST_MODEL, name="serial", **options)  # type: ignore[arg-type]
    monkeypatch.setattr(_scheduler, "SPLIT_SAMPLING", 0)
    monkeypatch.setattr(_scheduler, "_sample_each", sample_each)
    threads = lmbench.load(TEST_MODEL).threads  # two threads, as on a quiet machine
    monkeypatch.setattr(threads, "current", 2)
    monkeypatch.setattr(threads, "now", lambda: 2)
    split = lmbench.sweep(prompts, model=TEST_MODEL, name="split", **options)  # type: ignore[arg-type]
    assert "lmbench-decode" in sampling and len(sampling) == 2, sampling
    key = ["prompt", "seed"]
    assert split.drafted_tokens.sum() > 0, "drafts were tried"
    assert serial.sort_values(key).text.tolist() == split.sort_values(key).text.tolist()


def test_a_shared_prefix_is_evaluated_once_and_changes_no_text() -> None:
    instruction = "Once upon a time there was a little girl who liked to play in the park with her friends. " * 4
    prompts = {f"p{i}": instruction + tail for i, tail in enumerate(STORIES[:6])}
    df = lmbench.sweep(prompts, grid={"temperature": [0.8]}, seeds=[3], max_tokens=16, progress=False, name="on")
    n_prefix = len(lmbench.tokenize(instruction, TEST_MODEL)) - 1
    cached = sorted(df.prompt_cached_tokens)
    assert cached[0] == 0 and all(c >= n_prefix for c in cached[1:]), cached
    engine = lmbench.load(TEST_MODEL)
    engine.scheduler.share_prefixes = False
    try:
        unshared = lmbench.sweep(
            prompts, grid={"temperature": [0.8]}, seeds=[3], max_tokens=16, progress=False, name="off"
        )
    finally:
        engine.scheduler.share_prefixes = True
    assert set(unshared.prompt_cached_tokens) == {0}
    assert dict(zip(df.prompt_name, df.text, strict=True)) == dict(
        zip(unshared.prompt_name, unshared.text, strict=True)
    )


def test_a_sweep_over_many_prompts_is_deterministic() -> None:
    kwargs = {"grid": {"temperature": [0.7, 1.2]}, "seeds": 2, "max_tokens": 24, "progress": False}
    first = lmbench.sweep(STORIES, name="a", **kwargs)
    second = lmbench.sweep(STORIES, name="b", **kwargs)
    assert len(first) == 64 and first.text.tolist() == second.text.tolist()
    assert first.batch_size.max() == 32


def test_the_same_prompt_again_reuses_the_cache() -> None:
    lmbench.unload()
    engine = lmbench.load(TEST_MODEL)
    first = lmbench.generate("Once upon a time there was a dog named Max", model=engine, max_tokens=4, seed=1)
    again = lmbench.generate("Once upon a time there was a dog named Max", model=engine, max_tokens=4, seed=1)
    assert first.prompt_cached_tokens == 0 and again.prompt_cached_tokens == again.prompt_tokens - 1
    assert again.text == first.text


def test_a_prompt_too_long_for_the_context_fails_before_it_starts() -> None:
    engine = lmbench.load(TEST_MODEL, n_ctx=64)
    with pytest.raises(lmbench.ContextOverflowError):
        lmbench.generate("Once upon a time " * 40, model=engine, max_tokens=4)
    assert lmbench.generate("Once upon a time", model=engine, max_tokens=4).completion_tokens > 0


def test_the_engine_shows_its_slots_and_kv_cache() -> None:
    engine = lmbench.load(TEST_MODEL)
    engine.parallel = 3
    lmbench.generate("Hi", model=engine, max_tokens=2)
    status = engine.scheduler.status()
    assert status["slots"] == 3 and status["cells_per_slot"] >= engine.n_ctx
    assert status["kv_cache_bytes"] > 0 and "KV cache 3 x" in repr(engine)
    with pytest.raises(lmbench.ParameterError, match="parallel"):
        engine.parallel = 0


def test_batched_runs_record_their_top_alternatives() -> None:
    df = lmbench.sweep(STORIES[:4], grid={"temperature": [0.9]}, seeds=2, max_tokens=12, logprobs=3, progress=False)
    assert set(df.batch_size) == {8}
    for row in df.itertuples():
        tokens = lmbench.get_store().get(row.id).token_logprobs
        assert tokens is not None and len(tokens) == row.completion_tokens
        for entry in tokens:
            top = entry["top"]
            assert len(top) == 3 and [a["logprob"] for a in top] == sorted((a["logprob"] for a in top), reverse=True)
            chosen = next((a for a in top if a["id"] == entry["id"]), None)
            assert chosen is None or abs(chosen["logprob"] - entry["logprob"]) < 1e-6
            assert entry["logprob"] <= top[0]["logprob"] + 1e-6


def test_a_llama_cpp_failure_mid_batch_records_the_runs_in_flight_as_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.engine import _native

    real_decode = _native.Context.decode
    calls = [0]

    def failing(self: _native.Context, entries: list[_native.Entry]) -> None:
        calls[0] += 1
        if calls[0] == 6:  # as llama_decode reports a failure (for example no room left in the KV cache)
            raise lmbench.GenerationError("llama_decode failed with status 1 (batch of 8 tokens)")
        real_decode(self, entries)

    monkeypatch.setattr(_native.Context, "decode", failing)
    kwargs = {"grid": {"temperature": [0.5, 1.0]}, "seeds": 4, "max_tokens": 30, "ignore_eos": True, "progress": False}
    with pytest.raises(lmbench.GenerationError, match="status 1"):
        lmbench.sweep(STORIES[:1], name="fails", **kwargs)
    failed = lmbench.runs()
    assert len(failed) == 8 and set(failed.finish_reason) == {"error"}
    assert failed.error.str.contains("status 1").all() and (failed.completion_tokens > 0).all(), "what they had"
    monkeypatch.setattr(_native.Context, "decode", real_decode)
    resumed = lmbench.sweep(STORIES[:1], name="fails", **kwargs)
    assert len(resumed) == 8 and set(resumed.finish_reason) == {"length"}
    assert lmbench.generate("Once", max_tokens=3).completion_tokens == 3, "the engine works on"
