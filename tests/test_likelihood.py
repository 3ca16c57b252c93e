"""Likelihood evaluation on the real test model: teacher-forced scoring through the scheduler,
``lmbench.loglikelihood`` and rolling-window ``lmbench.perplexity``, recorded as runs of their own kind."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench.likelihood import encode_pair, rolling_windows

STORY = "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun."


def _greedy(engine: lmbench.Engine, prompt: str, n: int = 24) -> lmbench.Run:
    return lmbench.generate(prompt, model=engine, temperature=0.0, max_tokens=n, logprobs=3, ignore_eos=True)


def test_scoring_a_greedy_generation_gives_back_its_log_probabilities(engine: lmbench.Engine) -> None:
    run = _greedy(engine, "Once upon a time")
    prompt = engine.tokenize("Once upon a time")
    generated = [t["id"] for t in run.token_logprobs or []]
    (scores,) = engine.score([prompt + generated], start=len(prompt), top=3)
    assert scores.tokens == generated
    expected = np.array([t["logprob"] for t in run.token_logprobs or []])
    np.testing.assert_allclose(scores.logprobs, expected, atol=2e-3)
    assert scores.is_greedy and scores.greedy.all()
    assert scores.top_ids[:, 0].tolist() == generated  # greedy: the likeliest token is the one taken
    assert [[t["id"] for t in entry["top"]] for entry in run.token_logprobs or []] == scores.top_ids.tolist()
    assert np.all(np.diff(scores.top_logprobs, axis=1) <= 0)
    assert math.isclose(scores.total, float(expected.sum()), abs_tol=2e-2)


def test_a_token_the_model_would_not_pick_is_not_greedy(engine: lmbench.Engine) -> None:
    prompt = engine.tokenize("Once upon a time")
    (best,) = engine.score([[*prompt, 0]], start=len(prompt), top=1)
    likeliest = int(best.top_ids[0, 0])
    unlikely = int(
        np.argsort(engine.score([[*prompt, 0]], start=len(prompt), distributions=True)[0].distributions[0])[0]
    )
    (picked, other) = engine.score([[*prompt, likeliest], [*prompt, unlikely]], start=len(prompt))
    assert picked.is_greedy and not other.is_greedy
    assert picked.total > other.total


def test_distributions_are_normalised_and_agree_with_the_scored_tokens(engine: lmbench.Engine) -> None:
    tokens = engine.tokenize(STORY)
    (scores,) = engine.score([tokens], start=3, distributions=True)
    dist = scores.distributions
    assert dist is not None and dist.shape == (len(tokens) - 3, engine.n_vocab)
    np.testing.assert_allclose(np.exp(dist.astype(np.float64)).sum(axis=1), 1.0, atol=1e-4)
    np.testing.assert_allclose(dist[np.arange(len(dist)), tokens[3:]], scores.logprobs, atol=1e-4)


def test_batched_scoring_equals_one_at_a_time_and_shares_the_context(engine: lmbench.Engine) -> None:
    context = engine.tokenize("Once upon a time, there was a little")
    endings = [engine.tokenize(w, add_bos=False) for w in (" girl", " boy", " dog", " cat", " bird", " tree")]
    sequences = [context + e for e in endings] + [engine.tokenize("The sun was shining and the birds sang")]
    starts = [len(context)] * len(endings) + [2]
    alone = [engine.score([s], start=k)[0] for s, k in zip(sequences, starts, strict=True)]
    together = engine.score(sequences, start=starts)
    for a, b in zip(alone, together, strict=True):
        assert a.tokens == b.tokens
        np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    assert max(t.batch_size for t in together) > 1
    # The context is evaluated once: every other continuation takes its cells (all but the last context token).
    assert sorted(t.cached for t in together[: len(endings)])[1:] == [len(context) - 1] * (len(endings) - 1)


def test_sequences_of_every_length_scored_in_lockstep_equal_their_scores_alone(engine: lmbench.Engine) -> None:
    # Contexts of many lengths with continuations of one to four tokens, more than the 16 slots: decodes pad
    # short sequences and fill idle slots, and the padding cells are dropped (a second batch reuses the cache).
    words = ["girl", "boy", "dog", "cat", "bird", "tree", "ball", "park"]
    contexts = [engine.tokenize(f"{STORY[: 10 + 7 * i]}") for i in range(6)]
    endings = [engine.tokenize(" " + " ".join(words[: 1 + i % 4]), add_bos=False) for i in range(8)]
    sequences = [c + e for c in contexts for e in endings]
    starts = [len(c) for c in contexts for _ in endings]
    alone = [engine.score([s], start=k)[0] for s, k in zip(sequences, starts, strict=True)]
    for _ in range(2):
        together = engine.score(sequences, start=starts)
        for a, b in zip(alone, together, strict=True):
            np.testing.assert_allclose(a.logprobs, b.logprobs, atol=1e-4)
    assert max(t.batch_size for t in together) == 16 and sum(t.cached for t in together) > 0


def test_scoring_shares_the_batch_with_a_running_generation(engine: lmbench.Engine) -> None:
    engine.parallel = 2
    try:
        expected = _greedy(engine, "The little cat", 64)
        tokens = engine.tokenize(STORY)
        (alone,) = engine.score([tokens], start=1)
        runs: list[lmbench.Run] = []
        thread = threading.Thread(target=lambda: runs.append(_greedy(engine, "The little cat", 64)))
        thread.start()
        (scored,) = engine.score([tokens], start=1)
        thread.join()
        np.testing.assert_allclose(scored.logprobs, alone.logprobs, atol=1e-3)
        assert runs[0].text == expected.text
    finally:
        engine.parallel = 1


def test_bad_scoring_requests_are_refused_before_anything_runs(engine: lmbench.Engine) -> None:
    tokens = engine.tokenize("Once upon a time")
    bad = [
        ({"sequences": [tokens], "start": 0}, "start"),
        ({"sequences": [tokens], "start": len(tokens)}, "start"),
        ({"sequences": [tokens[:1]]}, "start"),
        ({"sequences": [[*tokens, engine.n_vocab]]}, "token ids"),
        ({"sequences": [[*tokens, True]]}, "token ids"),
        ({"sequences": ["Once upon"]}, "list of token ids"),
        ({"sequences": [tokens], "top": 101}, "top"),
        ({"sequences": [tokens, tokens], "start": [1]}, "2 sequences"),
        ({"sequences": [tokens], "slots": 0}, "slots"),
    ]
    for options, words in bad:
        with pytest.raises(lmbench.ParameterError, match=words):
            engine.score(**options)  # type: ignore[arg-type]
    with pytest.raises(lmbench.ContextOverflowError):
        engine.score([tokens * (engine.n_ctx // len(tokens) + 1)])
    assert engine.score([]) == []


def test_loglikelihood_sums_the_continuation_and_records_runs(engine: lmbench.Engine, tmp_path: Path) -> None:
    run = _greedy(engine, "Once upon a time", 6)
    pairs = [("Once upon a time", run.text), ("Once upon a time", " the moon ate a shoe"), ("", STORY)]
    table = lmbench.loglikelihood(pairs, model=TEST_MODEL, experiment="ll", top=2)
    assert list(table.columns) == ["context", "continuation", "logprob", "tokens", "is_greedy", "run_id"]
    assert table["is_greedy"].tolist() == [True, False, False]
    for (context, continuation), row in zip(pairs, table.itertuples(), strict=True):
        context_tokens, continuation_tokens = encode_pair(engine, context, continuation)
        (scores,) = engine.score([context_tokens + continuation_tokens], start=len(context_tokens))
        assert row.tokens == len(continuation_tokens)
        assert math.isclose(row.logprob, scores.total, abs_tol=1e-3)
    recorded = lmbench.runs("ll", kind="loglikelihood")
    assert recorded["id"].tolist() == table["run_id"].tolist()
    assert recorded["model_name"].unique().tolist() == [TEST_MODEL.name]
    np.testing.assert_allclose(recorded["logprob"], table["logprob"])
    assert recorded["prompt"].tolist() == [p[0] for p in pairs] and recorded["text"].tolist() == [p[1] for p in pairs]
    assert lmbench.runs(kind="generate")["id"].tolist() == [run.id]
    again = lmbench.get_store().get(table["run_id"][0])
    assert again.kind == "loglikelihood" and again.metrics["is_greedy"] == 1.0
    assert [t["greedy"] for t in again.token_logprobs or []] == [True] * int(table["tokens"][0])
    assert all(len(t["top"]) == 2 for t in again.token_logprobs or [])
    exported = pd.read_json(lmbench.export(tmp_path / "runs.jsonl", "ll"), lines=True)
    assert exported["kind"].tolist() == ["loglikelihood"] * 3


def test_loglikelihood_splits_pairs_like_lm_evaluation_harness(engine: lmbench.Engine) -> None:
    # A context's trailing space belongs to the continuation: both spellings are the same question.
    assert encode_pair(engine, "Once upon a time ", "there") == encode_pair(engine, "Once upon a time", " there")
    context, continuation = encode_pair(engine, "", "Once upon a time")
    assert context == [engine.tokenize("")[0]] and continuation == engine.tokenize("Once upon a time", add_bos=False)
    spaced, plain = lmbench.loglikelihood(
        [("Once upon a time ", "there"), ("Once upon a time", " there")], model=TEST_MODEL
    )["logprob"]
    assert math.isclose(spaced, plain, abs_tol=1e-4)  # the second reuses the first one's cells: float noise only


def test_loglikelihood_refuses_bad_pairs_before_anything_runs() -> None:
    for pairs, words in [
        ("Once", "list of"),
        ([("Once",)], r"pairs\[0\]"),
        ([("Once", "")], "empty"),
        ([("Once", b"x")], "continuation"),
        ([(3, "x")], "context"),
        ([("Once", "up\udfff")], "Unicode"),
    ]:
        with pytest.raises(lmbench.ParameterError, match=words):
            lmbench.loglikelihood(pairs, model=TEST_MODEL)  # type: ignore[arg-type]
    assert lmbench.runs().empty


def _lm_eval_windows(
    tokens: list[int], prefix: int, max_len: int, context_len: int
) -> list[tuple[list[int], list[int]]]:
    """lm-evaluation-harness's ``get_rolling_token_windows`` then ``make_disjoint_window``, as documented."""
    pred_len = max_len - context_len + 1
    first = min(max_len, len(tokens))
    windows = [([prefix, *tokens[: first - 1]], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        n = min(len(tokens) - predicted, pred_len)
        end = predicted + n
        windows.append((tokens[max(end - max_len - 1, 0) : end - 1], tokens[end - n : end]))
        predicted += n
    return [(ctx[: len(ctx) - (len(cont) - 1)], cont) for ctx, cont in windows]


@pytest.mark.no_test_model
def test_rolling_windows_are_lm_evaluation_harness_windows() -> None:
    for n in (1, 5, 16, 17, 40):
        for window in (1, 4, 8, 16):
            for stride in range(1, window + 1):
                tokens = list(range(100, 100 + n))
                full = [7, *tokens]
                ours = [
                    (full[max(end - window - 1, 0) : first], full[first:end])
                    for first, end in rolling_windows(n, window, stride)
                ]
                assert ours == _lm_eval_windows(tokens, 7, window, window - stride + 1), (n, window, stride)
                scored = [t for _, cont in ours for t in cont]
                assert scored == tokens  # every token once, in order


def test_perplexity_of_one_window_is_the_loglikelihood_of_the_text(engine: lmbench.Engine) -> None:
    result = lmbench.perplexity([STORY, "The little cat sat on the mat."], model=TEST_MODEL, experiment="ppl")
    table = result.texts
    likelihood = lmbench.loglikelihood([("", STORY), ("", "The little cat sat on the mat.")], model=TEST_MODEL)
    np.testing.assert_allclose(table["logprob"], likelihood["logprob"], atol=1e-3)
    first = table.iloc[0]
    assert first["tokens"] == len(engine.tokenize(STORY, add_bos=False))
    assert first["words"] == len(STORY.split()) and first["bytes"] == len(STORY.encode())
    assert math.isclose(first["perplexity"], math.exp(-first["logprob"] / first["tokens"]))
    assert math.isclose(first["bits_per_byte"], -first["logprob"] / first["bytes"] / math.log(2))
    assert first["windows"] == [(0, first["tokens"])]
    overall = result.overall
    assert overall["tokens"] == table["tokens"].sum() and overall["texts"] == 2
    assert math.isclose(overall["word_perplexity"], math.exp(-table["logprob"].sum() / table["words"].sum()))
    recorded = lmbench.runs("ppl", kind="perplexity")
    assert recorded["id"].tolist() == table["run_id"].tolist()
    np.testing.assert_allclose(recorded["perplexity"], table["perplexity"])
    assert recorded["window"].tolist() == [engine.n_ctx - 1] * 2


def test_perplexity_windows_score_every_token_once_with_the_context_they_are_given(engine: lmbench.Engine) -> None:
    text = " ".join([STORY] * 3)
    tokens = engine.tokenize(text, add_bos=False)
    disjoint = lmbench.perplexity(text, model=TEST_MODEL, window=16).texts.iloc[0]
    rolling = lmbench.perplexity(text, model=TEST_MODEL, window=16, stride=4).texts.iloc[0]
    whole = lmbench.perplexity(text, model=TEST_MODEL).texts.iloc[0]
    assert disjoint["tokens"] == rolling["tokens"] == whole["tokens"] == len(tokens)
    for row in (disjoint, rolling):
        covered = [t for first, end in row["windows"] for t in range(first, end)]
        assert covered == list(range(len(tokens)))
    assert len(rolling["windows"]) > len(disjoint["windows"]) > 1
    assert rolling["logprob"] != disjoint["logprob"] and whole["windows"] == [(0, len(tokens))]
    # Each window scores its tokens given the `window` tokens before them (the prefix token first).
    full = [engine.tokenize("")[0], *tokens]
    for row in (disjoint, rolling):
        run = lmbench.get_store().get(row["run_id"])
        logprobs = [t["logprob"] for t in run.token_logprobs or []]
        for first, end in row["windows"][1:3]:
            begin = end - 16
            (window,) = engine.score([full[begin : end + 1]], start=first + 1 - begin)
            np.testing.assert_allclose(logprobs[first:end], window.logprobs, atol=1e-4)


def test_perplexity_refuses_bad_settings_before_anything_runs(engine: lmbench.Engine) -> None:
    for options, words in [
        ({"texts": []}, "non-empty"),
        ({"texts": [""]}, "no tokens"),
        ({"texts": [3]}, "string"),
        ({"texts": "Once", "window": 0}, "window"),
        ({"texts": "Once", "window": engine.n_ctx}, "window"),
        ({"texts": "Once", "window": 8, "stride": 9}, "stride"),
        ({"texts": "Once", "stride": 1.5}, "stride"),
    ]:
        with pytest.raises(lmbench.ParameterError, match=words):
            lmbench.perplexity(model=TEST_MODEL, **options)  # type: ignore[arg-type]
    assert lmbench.runs().empty


def test_the_ubatch_count_follows_llama_cpps_equal_split_over_separate_streams() -> None:
    from lmbench.engine._scheduler import _ubatches

    assert _ubatches([(0, 255), (1, 255)]) == 1  # two whole windows
    assert _ubatches([(0, 255), (1, 254)]) == 2
    assert _ubatches([(0, 2), (1, 2), (3, 2)]) == 2  # slot 2 idle: two runs of consecutive slots
    assert _ubatches([(0, 1), (1, 3), (2, 2)]) == 3
