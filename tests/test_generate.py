"""Generation on the real test model: every parameter reaches llama.cpp, streaming, cancel, seeds."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

import lmbench
from lmbench.engine._engine import cpu_has_amx
from lmbench.engine._sequence import TextStream

PROMPT = "Once upon a time"


def test_generate_defaults_record_everything(model_path: Path) -> None:
    run = lmbench.generate(PROMPT)
    assert run.text.strip()
    assert (run.max_tokens, run.temperature, run.top_p) == (100, 0.7, 0.9)
    assert isinstance(run.seed, int)
    assert run.finish_reason in ("stop", "length")
    assert run.prompt_tokens > 0 and 0 < run.completion_tokens <= 100
    assert run.model_name == "stories260K.gguf" and run.model_size == model_path.stat().st_size
    assert len(run.model_sha256) == 64
    assert run.ttft_s is not None and run.total_s >= run.ttft_s
    assert run.tokens_per_s and run.tokens_per_s > 0
    assert run.lmbench_version == lmbench.__version__ and run.llama_cpp_version
    stored = lmbench.get_store().get(run.id)
    assert stored.text == run.text and stored.seed == run.seed and stored.params == run.params
    assert "lmbench-run" in run._repr_html_()


def test_same_seed_same_text_and_seeds_differ() -> None:
    a = lmbench.generate(PROMPT, seed=42, temperature=1.0)
    b = lmbench.generate(PROMPT, seed=42, temperature=1.0)
    others = {lmbench.generate(PROMPT, seed=s, temperature=1.0).text for s in range(1, 5)}
    assert a.text == b.text
    assert len(others | {a.text}) > 1


def test_temperature_zero_is_deterministic_whatever_the_seed() -> None:
    a = lmbench.generate(PROMPT, temperature=0, seed=1)
    b = lmbench.generate(PROMPT, temperature=0, seed=2)
    assert a.text == b.text


@pytest.mark.parametrize("narrow", [{"top_k": 1}, {"top_p": 1e-6}, {"min_p": 1.0}])
def test_narrow_samplers_equal_greedy(narrow: dict) -> None:
    greedy = lmbench.generate(PROMPT, temperature=0, max_tokens=60).text
    texts = {lmbench.generate(PROMPT, temperature=1.5, seed=s, max_tokens=60, **narrow).text for s in range(3)}
    assert texts == {greedy}


@pytest.mark.parametrize("penalty", [{"repeat_penalty": 2.0}, {"presence_penalty": 1.5}, {"frequency_penalty": 1.5}])
def test_penalties_change_greedy_output(penalty: dict) -> None:
    base = lmbench.generate(PROMPT, temperature=0, repeat_penalty=1.0, max_tokens=100).text
    changed = lmbench.generate(PROMPT, temperature=0, max_tokens=100, **{"repeat_penalty": 1.0, **penalty}).text
    assert changed != base


def test_max_tokens_caps_the_length() -> None:
    run = lmbench.generate(PROMPT, max_tokens=5, temperature=0)
    assert run.completion_tokens == 5 and run.finish_reason == "length"


def test_stop_string_ends_and_is_not_included() -> None:
    full = lmbench.generate(PROMPT, temperature=0, max_tokens=60).text
    assert "." in full
    run = lmbench.generate(PROMPT, temperature=0, max_tokens=60, stop=["."])
    assert run.finish_reason == "stop"
    assert run.text == full[: full.index(".")]


def test_streaming_pieces_join_to_the_final_text() -> None:
    pieces: list[str] = []
    run = lmbench.generate(PROMPT, seed=7, max_tokens=80, on_token=pieces.append)
    assert len(pieces) > 10
    assert "".join(pieces) == run.text
    held: list[str] = []
    stopped = lmbench.generate(PROMPT, temperature=0, max_tokens=80, stop=["Lily"], on_token=held.append)
    assert "".join(held) == stopped.text and "Lily" not in stopped.text


def test_cancel_event_stops_and_records_a_cancelled_run() -> None:
    cancel = threading.Event()
    pieces: list[str] = []

    def on_token(text: str) -> None:
        pieces.append(text)
        if len(pieces) == 5:
            cancel.set()

    run = lmbench.generate(PROMPT, max_tokens=500, on_token=on_token, cancel=cancel, temperature=0)
    assert run.finish_reason == "cancelled"
    assert 5 <= run.completion_tokens < 20 and run.text == "".join(pieces)
    assert lmbench.get_store().get(run.id).finish_reason == "cancelled"
    again = lmbench.generate(PROMPT, max_tokens=20, temperature=0)
    assert again.finish_reason == "length" and again.text.startswith(run.text)


def test_cancel_callable() -> None:
    count = 0

    def tick(_: str) -> None:
        nonlocal count
        count += 1

    run = lmbench.generate(PROMPT, max_tokens=500, on_token=tick, cancel=lambda: count >= 3)
    assert run.finish_reason == "cancelled" and run.completion_tokens <= 10


def test_keyboard_interrupt_is_recorded_and_engine_stays_usable() -> None:
    seen: list[str] = []

    def interrupt(text: str) -> None:
        seen.append(text)
        if len(seen) == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        lmbench.generate(PROMPT, max_tokens=200, on_token=interrupt, temperature=0, experiment="ki")
    table = lmbench.runs("ki")
    assert list(table.finish_reason) == ["cancelled"]
    assert table.text[0] and table.completion_tokens[0] >= 4
    greedy = lmbench.generate(PROMPT, max_tokens=30, temperature=0)
    assert greedy.text == lmbench.generate(PROMPT, max_tokens=30, temperature=0).text


def test_failing_stream_callback_is_recorded_as_error() -> None:
    def boom(_: str) -> None:
        raise ValueError("display went away")

    with pytest.raises(lmbench.GenerationError, match="display went away"):
        lmbench.generate(PROMPT, on_token=boom, experiment="err")
    table = lmbench.runs("err")
    assert list(table.finish_reason) == ["error"] and "display went away" in table.error[0]


def test_context_overflow_is_clear(model_path: Path) -> None:
    engine = lmbench.load(model_path, n_ctx=64)
    with pytest.raises(lmbench.ContextOverflowError) as info:
        lmbench.generate(PROMPT + " and then" * 40, model=engine)
    assert info.value.n_ctx == 64 and info.value.prompt_tokens > 64
    assert "64" in str(info.value)
    assert lmbench.runs().empty
    run = lmbench.generate(PROMPT, model=engine, max_tokens=500, temperature=0, repeat_penalty=1.0)
    assert run.prompt_tokens + run.completion_tokens <= 64 and run.finish_reason in ("length", "stop")


def test_logprobs_with_top_alternatives() -> None:
    run = lmbench.generate(PROMPT, temperature=0, max_tokens=10, logprobs=3)
    assert run.token_logprobs is not None and len(run.token_logprobs) == run.completion_tokens
    first = run.token_logprobs[0]
    assert first["logprob"] <= 0 and len(first["top"]) == 3
    assert first["top"][0]["id"] == first["id"], "greedy picks the likeliest token"
    assert "".join(t["token"] for t in run.token_logprobs) == run.text
    assert lmbench.get_store().get(run.id).token_logprobs == run.token_logprobs
    assert lmbench.generate(PROMPT, max_tokens=5).token_logprobs is None


def test_prompt_prefix_is_reused_from_the_kv_cache() -> None:
    first = lmbench.generate(PROMPT, max_tokens=5, seed=1)
    second = lmbench.generate(PROMPT, max_tokens=5, seed=1)
    assert second.prompt_cached_tokens == second.prompt_tokens - 1
    assert first.text == second.text


def test_utf8_split_across_tokens_is_decoded_whole() -> None:
    stream = TextStream(())
    data = "héllo 🙂".encode()
    for i in range(len(data)):
        stream.add(data[i : i + 1])
    stream.finish()
    assert stream.text == "héllo 🙂"
    partial = TextStream(())
    partial.add("🙂".encode()[:2])
    assert partial.take() == ""
    partial.finish()
    assert partial.text == "\ufffd"


def test_presets_feed_generate() -> None:
    lmbench.save_preset("cold", temperature=0.0, top_k=5)
    run = lmbench.generate(PROMPT, preset="cold", max_tokens=5)
    assert run.temperature == 0.0 and run.top_k == 5
    assert lmbench.generate(PROMPT, preset="cold", temperature=0.3, max_tokens=5).temperature == 0.3
    assert "creative" in lmbench.presets()
    with pytest.raises(lmbench.ParameterError, match="available presets"):
        lmbench.generate(PROMPT, preset="nope")
    lmbench.delete_preset("cold")
    assert "cold" not in lmbench.presets() and "creative" in lmbench.presets()
    with pytest.raises(lmbench.ParameterError, match="no saved preset named 'cold'"):
        lmbench.delete_preset("cold")
    with pytest.raises(lmbench.ParameterError, match="no saved preset"):
        lmbench.delete_preset("creative")  # a built-in


def test_unload_one_model_leaves_the_others(synthetic_model: Path) -> None:
    from conftest import TEST_MODEL

    lmbench.set_max_models(2)
    try:
        story, other = lmbench.load(TEST_MODEL), lmbench.load(synthetic_model)
        lmbench.unload(TEST_MODEL)
        assert story.closed and not other.closed and lmbench.loaded() == [other]
        assert lmbench.generate(PROMPT, model=TEST_MODEL, max_tokens=3).completion_tokens > 0, "loads again"
    finally:
        lmbench.unload()
        lmbench.set_max_models(1)


def test_done_when_story_in_one_process_table_in_another(lmbench_home: Path) -> None:
    story = subprocess.run(
        [sys.executable, "-c", "import lmbench; print(lmbench.generate('Once upon a time').text)"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert len(story.split()) > 5
    table = subprocess.run(
        [sys.executable, "-c", "import lmbench; t = lmbench.runs(); print(len(t)); print(t.text.iloc[-1])"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert table.startswith("1\n") and story.strip()[:30] in table


def test_ignore_eos_always_generates_max_tokens(synthetic_model: Path) -> None:
    ended = [lmbench.generate("Once upon a time", model=synthetic_model, max_tokens=2000, seed=s) for s in range(5)]
    stopped = [r for r in ended if r.finish_reason == "stop"]
    assert stopped, "a random model samples the end-of-sequence token now and then"
    for run in stopped:
        forced = lmbench.generate(
            "Once upon a time", model=synthetic_model, max_tokens=2000, seed=run.seed, ignore_eos=True
        )
        assert forced.completion_tokens == 2000 and forced.finish_reason == "length" and forced.ignore_eos
    table = lmbench.runs()
    assert table.ignore_eos.tolist() == [0] * 5 + [1] * len(stopped)


def test_quantized_models_load_and_generate_in_a_subprocess(synthetic_model: Path) -> None:
    """Q8_0 weights crashed llama.cpp's AMX path on AMX CPUs; lmbench turns weight repacking off there."""
    code = (
        "import sys, lmbench; e = lmbench.load(sys.argv[1]); "
        "print(e.weight_repack, lmbench.generate('Once', model=e, max_tokens=5).completion_tokens)"
    )
    result = subprocess.run([sys.executable, "-c", code, str(synthetic_model)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    repack, tokens = result.stdout.split()
    assert repack == str(not cpu_has_amx()) and tokens == "5"


def test_a_batch_has_the_single_run_error_policy_and_keeps_its_finished_runs(engine: lmbench.Engine) -> None:
    from lmbench.generation import Job, Recorder, generate_many
    from lmbench.params import validate_params
    from lmbench.run import Labels

    def boom(_: str) -> None:
        raise ValueError("display went away")

    params = validate_params({"max_tokens": 8, "temperature": 0, "seed": 1})
    jobs = [Job(PROMPT, params, Labels("batch-err")), Job(PROMPT, params, Labels("batch-err"), on_token=boom)]
    with pytest.raises(lmbench.GenerationError, match="display went away") as info:
        generate_many(engine, jobs, Recorder.to(None))
    assert isinstance(info.value.__cause__, ValueError)  # a foreign failure, wrapped as generate() wraps it
    table = lmbench.runs("batch-err")
    assert len(table) == 2 and sorted(table.finish_reason) == ["error", "length"]  # nothing finished is lost


def test_the_load_time_is_carried_by_the_first_run_after_loading_only(model_path: Path) -> None:
    lmbench.unload()
    engine = lmbench.load(model_path)
    first, second = (lmbench.generate(PROMPT, model=model_path, max_tokens=4) for _ in range(2))
    assert first.load_s == engine.load_s > 0 and second.load_s == 0
    assert engine.claim_load_s() == 0  # claimed once
