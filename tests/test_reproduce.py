"""The determinism audit, the token-level diff and forks, on the real engine and the test model."""

from __future__ import annotations

import math

import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench.reproduce import CONDITIONS, audit, diff, fork

PROMPT = "Once upon a time, there was a little"


def test_audit_reports_each_condition_identical_or_its_first_divergent_token() -> None:
    report = audit(PROMPT, model=TEST_MODEL, seed=3, runs=2, max_tokens=24)
    assert list(report.condition) == list(CONDITIONS)
    assert ((report.identical_rate >= 0) & (report.identical_rate <= 1)).all()
    reference = lmbench.get_store().get(report.attrs["reference_id"])
    for _, row in report.iterrows():
        run = lmbench.get_store().get(row.run_id)
        assert f"condition:{row.condition}" in run.tags and run.source == "audit"
        if row.identical_rate == 1:
            assert row.first_divergence is None or math.isnan(row.first_divergence)
            assert [t["id"] for t in run.token_logprobs] == [t["id"] for t in reference.token_logprobs]
        else:  # the exact first divergent token, with both top-5 distributions there
            at = int(row.first_divergence)
            ids = [t["id"] for t in run.token_logprobs]
            expected = [t["id"] for t in reference.token_logprobs]
            assert ids[:at] == expected[:at] and ids[at : at + 1] != expected[at : at + 1]
            assert len(row.reference_top) == 5
    tagged = lmbench.runs()
    audited = tagged[tagged.tags.map(lambda tags: f"audit:{report.attrs['audit_id']}" in tags)]
    assert len(audited) >= 1 + len(CONDITIONS) * 2  # every audit run is recorded
    batch = audited[audited.tags.map(lambda tags: "condition:batch 8" in tags)]
    assert set(batch.slots) == {8} and (batch.batch_size > 1).all()


def test_audit_refuses_bad_input() -> None:
    with pytest.raises(lmbench.ParameterError, match="unknown condition 'sideways'"):
        audit(PROMPT, model=TEST_MODEL, conditions=["alone", "sideways"])
    with pytest.raises(lmbench.ParameterError, match="runs must be"):
        audit(PROMPT, model=TEST_MODEL, runs=0)
    with pytest.raises(lmbench.ParameterError, match="temperature"):
        audit(PROMPT, model=TEST_MODEL, temperature=-1.0)
    assert len(lmbench.runs()) == 0


def test_diff_finds_the_fork_with_both_probabilities() -> None:
    a = lmbench.generate(PROMPT, model=TEST_MODEL, seed=1, temperature=1.5, max_tokens=30, logprobs=5)
    b = lmbench.generate(PROMPT, model=TEST_MODEL, seed=2, temperature=1.5, max_tokens=30, logprobs=5)
    found = diff(a.id, b)
    ids_a, ids_b = [t["id"] for t in a.token_logprobs], [t["id"] for t in b.token_logprobs]
    at = found.position
    assert at is not None and ids_a[:at] == ids_b[:at] and ids_a[at] != ids_b[at]
    fork_report = found.fork
    assert fork_report["token_a"] == a.token_logprobs[at]["token"]
    assert fork_report["logprob_a"] == pytest.approx(a.token_logprobs[at]["logprob"])
    assert fork_report["logprob_b"] == pytest.approx(b.token_logprobs[at]["logprob"])
    assert len(fork_report["top_a"]) == 5 and len(fork_report["top_b"]) == 5
    assert list(found.frame.same[:at]) == [True] * at and not found.frame.same[at]
    assert "lmbench-diff" in found._repr_html_()
    assert diff(a, a).identical and "identical" in diff(a, a)._repr_html_()
    plain = lmbench.generate(PROMPT, model=TEST_MODEL, max_tokens=3)
    with pytest.raises(lmbench.ParameterError, match="logprobs"):
        diff(a, plain)


def test_a_fork_continues_from_the_chosen_alternative() -> None:
    parent = lmbench.generate(PROMPT, model=TEST_MODEL, seed=4, temperature=0.0, max_tokens=20, logprobs=5)
    at = 3
    alternative = parent.token_logprobs[at]["top"][1]
    child = fork(parent, at, alternative["token"])
    ids = [t["id"] for t in child.token_logprobs]
    parent_ids = [t["id"] for t in parent.token_logprobs]
    assert ids[: at + 1] == [*parent_ids[:at], alternative["id"]]
    prefix = "".join(t["token"] for t in parent.token_logprobs[:at])
    assert child.text.startswith(prefix + alternative["token"])
    assert child.token_logprobs[at]["forced"] and child.token_logprobs[at]["logprob"] == pytest.approx(
        alternative["logprob"]
    )
    assert child.completion_tokens <= 20 and child.prompt_tokens == parent.prompt_tokens
    stored = lmbench.get_store().get(child.id)
    assert (stored.parent_id, stored.fork_position, stored.source) == (parent.id, at, "fork")
    table = lmbench.runs()
    assert table.set_index("id").loc[child.id, "parent_id"] == parent.id
    by_id = fork(parent.id, at, alternative["id"], temperature=0.0)
    assert by_id.text == child.text  # greedy after the same forced token: the same continuation
    with pytest.raises(lmbench.ParameterError, match="position must be"):
        fork(parent, 99, 5)
    with pytest.raises(lmbench.ParameterError, match="not among the alternatives"):
        fork(parent, at, "zzzz-not-a-token")
    with pytest.raises(lmbench.ParameterError, match="max_tokens"):
        fork(parent, at, alternative["id"], max_tokens=2)


def test_every_run_records_its_environment() -> None:
    run = lmbench.generate(PROMPT, model=TEST_MODEL, max_tokens=4)
    frame = lmbench.sweep(
        PROMPT, grid={"temperature": [0.5, 1.0]}, seeds=2, model=TEST_MODEL, max_tokens=4, progress=False, batch_size=4
    )
    assert run.environment and len(run.environment) == 12
    assert (run.slots, run.n_batch, run.kv_cache_type) == (1, 512, "f16")
    assert run.n_threads and run.lmbench_version == lmbench.__version__
    assert f"env {run.environment}" in run._repr_html_() and "1 slots, batch 1" in run._repr_html_()
    assert set(frame.slots) == {4} and set(frame.environment) == {run.environment}
    envs = lmbench.environments()
    facts = envs.set_index("environment").loc[run.environment]
    assert "CPU" in facts.system_info and facts.llama_cpp_python == run.llama_cpp_version
    grouped = lmbench.runs().groupby(["environment", "slots"]).size()
    assert grouped[(run.environment, 4)] == 4 and grouped[(run.environment, 1)] == 1
    again = lmbench.get_store().get(run.id)
    assert (again.environment, again.slots, again.kv_cache_type) == (run.environment, 1, "f16")


def test_a_forced_divergence_is_reported_at_the_exact_token() -> None:
    """On the test model every audit condition gives the same tokens (see the audit test), so the divergence
    is forced: a fork at a chosen position. ``diff`` (the report an audit gives a divergent run) must name it."""
    parent = lmbench.generate(PROMPT, model=TEST_MODEL, seed=5, temperature=0.0, max_tokens=16, logprobs=5)
    at = 5
    alternative = parent.token_logprobs[at]["top"][2]
    child = fork(parent, at, alternative["id"])
    report = diff(parent, child.id)
    assert report.position == at and not report.identical
    split = report.fork
    assert split["token_a"] == parent.token_logprobs[at]["token"] and split["token_b"] == alternative["token"]
    assert split["a_logprob_of_b"] == pytest.approx(alternative["logprob"])  # the parent's view of the chosen token
    assert split["top_a"] == [(t["token"], round(t["logprob"], 6)) for t in parent.token_logprobs[at]["top"]]
    assert split["near_tie"] is (
        parent.token_logprobs[at]["top"][0]["logprob"] - parent.token_logprobs[at]["top"][1]["logprob"] < 1e-3
    )
    assert list(report.frame.same[:at]) == [True] * at


def test_the_debug_tab_forks_from_an_alternative_and_checks_reproducibility() -> None:
    panel = lmbench.panel(str(TEST_MODEL), lang="es")
    try:
        panel.prompt.value = PROMPT
        panel.form.sliders["max_tokens"].value = 12
        panel.form.sliders["temperature"].value = 0.0
        panel.generate_button.click()
        panel.wait(120)
        parent = panel.last_run
        assert parent is not None and panel.error.value == ""
        panel.debug_token.value = 2
        label, token = panel.fork_choice.options[0]
        assert len(panel.fork_choice.options) >= 4 and token != parent.token_logprobs[2]["id"] and " p=" in label
        panel.fork_button.click()
        panel.wait(120)
        child = panel.last_run
        assert panel.error.value == "" and child is not None and child.id != parent.id
        assert (child.parent_id, child.fork_position) == (parent.id, 2)
        assert child.token_logprobs[2]["id"] == token
        assert "lmbench-diff" in panel.compare.output.value and "lmbench-diff" in panel.audit.value
        panel.audit_button.click()
        panel.wait(300)
        assert panel.error.value == "", panel.error.value
        assert "condición" in panel.audit.value and "batch 8" in panel.audit.value
        audited = lmbench.runs(store=panel.store)
        assert "audit" in set(audited.source)
    finally:
        panel.cancel.set()
        panel.wait(60)
    assert panel.fork_button.description == "Bifurcar" and panel.audit_button.description == "¿Reproducible?"
