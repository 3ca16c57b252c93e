"""Evaluations: data sets x templates, reference scores, assertions, the judge, score(), the leaderboard,
and structured output, on hand-made texts with known answers and on the real test model."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import openai
import pandas as pd
import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench import scores
from lmbench.serve import Server, Settings

SCHEMA = {
    "type": "object",
    "properties": {
        "mood": {"enum": ["happy", "sad"]},
        "count": {"enum": [0, 1, 2, 3]},
        "note": {"type": "string", "maxLength": 12},
    },
    "required": ["mood", "count"],
    "additionalProperties": False,
}
DATA = [
    {"id": "a", "animal": "cat", "reference": "The cat sat.", "assert": [{"type": "icontains", "value": "cat"}]},
    {"id": "b", "animal": "dog", "reference": "The dog ran.", "assert": [{"type": "max_words", "value": 200}]},
]


@pytest.fixture(scope="module")
def base_run(tmp_path_factory: pytest.TempPathFactory) -> lmbench.Run:
    return lmbench.generate("Once", model=TEST_MODEL, max_tokens=2, store=tmp_path_factory.mktemp("s") / "runs.db")


def _as(run: lmbench.Run, text: str, reference: str | None = None, checks: list | None = None) -> lmbench.Run:
    item = {"id": "x", "vars": {}, "reference": reference, "assert": checks or []}
    return dataclasses.replace(run, text=text, item=item)


def _metric(name: str, run: lmbench.Run) -> float:
    return lmbench.metrics.available("run")[name].fn(run)


def test_reference_scores_on_known_texts(base_run: lmbench.Run) -> None:
    same = _as(base_run, "The cat sat on the mat.", "The cat sat on the mat.")
    other = _as(base_run, "Zebras gallop quickly.", "The cat sat on the mat.")
    for name in ("rouge1", "rouge2", "rougeL", "chrf", "bleu", "exact_match", "token_f1"):
        assert _metric(name, same) == pytest.approx(1.0), name
        assert _metric(name, other) < 0.2, name
    assert _metric("exact_match", _as(base_run, "the Paris!", "Paris")) == 1.0, "articles and punctuation go"
    assert _metric("token_f1", _as(base_run, "the cat sat", "cat sat down")) == pytest.approx(0.8)
    assert math.isnan(_metric("rougeL", _as(base_run, "anything"))), "no reference, no score"


@pytest.mark.parametrize(
    ("check", "text", "expected"),
    [
        ({"type": "contains", "value": "Paris"}, "It is Paris.", True),
        ({"type": "contains", "value": "Paris"}, "It is paris.", False),
        ({"type": "icontains", "value": "PARIS"}, "It is paris.", True),
        ({"type": "regex", "value": r"\b\d{4}\b"}, "In 1999.", True),
        ({"type": "starts_with", "value": "Yes"}, "  Yes, indeed", True),
        ({"type": "max_words", "value": 3}, "one two three four", False),
        ({"type": "max_chars", "value": 5}, "short", True),
        ({"type": "is_json"}, '{"a": 1}', True),
        ({"type": "is_json"}, "{a: 1}", False),
        ({"type": "json_schema", "value": SCHEMA}, '{"mood": "sad", "count": 3}', True),
        ({"type": "json_schema", "value": SCHEMA}, '{"mood": "angry", "count": 3}', False),
        ({"type": "json_schema", "value": SCHEMA}, '{"mood": "sad", "count": 7}', False),
        ({"type": "python", "value": lambda t: t.endswith("!")}, "Wow!", True),
    ],
)
@pytest.mark.no_test_model
def test_assertions(check: dict, text: str, expected: bool) -> None:
    assert scores.check(text, check) is expected


@pytest.mark.no_test_model
def test_bad_assertions_are_refused() -> None:
    for bad in [{"type": "nope"}, {"type": "regex", "value": "("}, {"type": "max_words", "value": "3"}, "contains"]:
        with pytest.raises(lmbench.ParameterError):
            scores.check_assertions([bad])  # type: ignore[list-item]


def test_pass_and_assert_metrics(base_run: lmbench.Run) -> None:
    run = _as(base_run, "A cat.", checks=[{"type": "icontains", "value": "cat"}, {"type": "max_words", "value": 1}])
    assert _metric("pass", run) == 0.0 and _metric("assert_icontains", run) == 1.0
    assert _metric("assert_max_words", run) == 0.0 and math.isnan(_metric("assert_regex", run))


@pytest.mark.no_test_model
def test_templates_fill_from_every_kind_of_data(tmp_path: Path) -> None:
    frame = pd.DataFrame(DATA).assign(**{"assert": [json.dumps(d["assert"]) for d in DATA]})
    frame.to_csv(tmp_path / "d.csv", index=False)
    frame.to_json(tmp_path / "d.jsonl", orient="records", lines=True)
    frame.to_parquet(tmp_path / "d.parquet")
    for source in [DATA, pd.DataFrame(DATA), tmp_path / "d.csv", tmp_path / "d.jsonl", tmp_path / "d.parquet"]:
        items = lmbench.datasets.load(source)
        assert [i.id for i in items] == ["a", "b"] and items[0].reference == "The cat sat."
        assert items[0].assertions == [{"type": "icontains", "value": "cat"}]
    assert [i.id for i in lmbench.datasets.load([{"x": 1}, {"x": 2}])] == ["0", "1"], "row numbers without ids"


def test_a_sweep_over_data_records_items_and_scores(tmp_path: Path) -> None:
    df = lmbench.sweep(
        {"t1": "A story about a {animal}:", "t2": "The {animal} said"},
        data=DATA,
        grid={"temperature": [0.0]},
        seeds=1,
        max_tokens=12,
        progress=False,
        assertions=[{"type": "max_chars", "value": 1000}],
    )
    assert len(df) == 4 and sorted(df.item.unique()) == ["a", "b"]
    assert set(df.prompt) == {"A story about a cat:", "A story about a dog:", "The cat said", "The dog said"}
    for column in ("rougeL", "chrf", "token_f1", "pass", "assert_icontains", "assert_max_chars"):
        assert column in df, column
    assert df.assert_max_chars.tolist() == [1.0] * 4
    stored = lmbench.runs(heavy=True).set_index("id").loc[df.id[0], "item"]
    assert stored["vars"]["reference"] == "The cat sat." and stored["id"] == "a"
    again = lmbench.sweep(
        {"t1": "A story about a {animal}:", "t2": "The {animal} said"},
        data=DATA,
        grid={"temperature": [0.0]},
        seeds=1,
        max_tokens=12,
        progress=False,
        assertions=[{"type": "max_chars", "value": 1000}],
    )
    assert len(lmbench.runs()) == 4 and again.text.tolist() == df.text.tolist(), "resumed, nothing generated"


def test_template_and_data_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(lmbench.ParameterError, match=r"template 'q' uses \{topic\}.*row 0 \(id 'a'\)"):
        lmbench.sweep({"q": "About {topic}"}, data=DATA, grid={"temperature": [0.5]}, progress=False)
    with pytest.raises(lmbench.ParameterError, match="empty"):
        lmbench.sweep("{x}", data=[], grid={"temperature": [0.5]}, progress=False)
    with pytest.raises(lmbench.ParameterError, match="cannot read data file"):
        lmbench.sweep("{x}", data=tmp_path / "missing.csv", grid={"temperature": [0.5]}, progress=False)
    with pytest.raises(lmbench.ParameterError, match="appears twice"):
        lmbench.sweep("{x}", data=[{"id": 1, "x": 1}, {"id": 1, "x": 2}], grid={"temperature": [0.5]}, progress=False)
    assert lmbench.runs().empty


def test_the_judge_always_parses_and_its_runs_are_linked_and_reused() -> None:
    df = lmbench.sweep("The {animal}", data=DATA, grid={"temperature": [0.5]}, seeds=1, max_tokens=8, progress=False)
    grader = lmbench.judge("The text is about the animal named in the question.", scale=(1, 5))
    graded = lmbench.score(df, [grader, "rougeL"])
    assert graded.judge.between(1, 5).all() and graded.judge.apply(float.is_integer).all()
    judged = lmbench.runs(heavy=True)
    judges = judged[judged.source == "judge"]
    assert len(judges) == 2 and {t for tags in judges.tags for t in tags} >= {f"judged:{i}" for i in df.id}
    assert judges.grammar.iloc[0] == 'root ::= "1" | "2" | "3" | "4" | "5"', "the grade is constrained"
    before = len(lmbench.runs())
    again = lmbench.score(df, [grader])
    assert len(lmbench.runs()) == before and again.judge.tolist() == graded.judge.tolist(), "nothing regenerated"
    stored = lmbench.runs()
    assert stored.set_index("id").loc[df.id, "judge"].tolist() == graded.judge.tolist(), "scores persist"


@pytest.mark.no_test_model
def test_leaderboard_orders_settings_with_honest_intervals() -> None:
    df = pd.DataFrame(
        {
            "setting": ["a"] * 6 + ["b"] * 6,
            "rougeL": [0.9, 0.8, 0.85, 0.95, 0.9, 0.88, 0.2, 0.3, 0.25, 0.1, 0.2, 0.3],
            "pass": [1, 1, 1, 1, 1, 0, 0, 0, 1, 0, 0, 0],
            "tokens_per_s": [10.0] * 12,
        }
    )
    board = lmbench.leaderboard(df, by="setting")
    assert board.setting.tolist() == ["a", "b"], "best first"
    row = board.iloc[0]
    assert row["pass"] == pytest.approx(5 / 6) and 0 <= row["pass low"] < row["pass"] < row["pass high"] <= 1
    assert 0.8 <= row["rougeL low"] <= row["rougeL"] <= row["rougeL high"] <= 0.95, "within the values' range"
    assert scores.wilson(0, 5)[0] == 0.0 and scores.wilson(5, 5)[1] == 1.0
    with pytest.raises(lmbench.ParameterError, match="not a column"):
        lmbench.leaderboard(df, by="nothing")


@pytest.mark.parametrize("batched", [False, True])
def test_structured_output_always_validates(batched: bool) -> None:
    if batched:
        frame = lmbench.sweep(
            "Once upon a time",
            grid={"temperature": [0.5, 1.5]},
            seeds=3,
            max_tokens=150,
            json_schema=SCHEMA,
            progress=False,
        )
        texts = frame.text.tolist()
    else:
        texts = [
            lmbench.generate("Once upon a time", json_schema=SCHEMA, max_tokens=150, seed=s).text for s in range(4)
        ]
    for text in texts:
        jsonschema.validate(json.loads(text), SCHEMA)
    stored = lmbench.runs(heavy=True)
    assert all(s == SCHEMA for s in stored.json_schema)


def test_grammar_parameter_and_errors() -> None:
    run = lmbench.generate("Once", grammar='root ::= "yes" | "no"', max_tokens=5, seed=1)
    assert run.text in ("yes", "no") and run.finish_reason == "stop"
    with pytest.raises(lmbench.ParameterError, match="grammar does not parse"):
        lmbench.generate("Once", grammar="root ::= (((", max_tokens=5)
    with pytest.raises(lmbench.ParameterError, match="json_schema"):
        lmbench.generate("Once", json_schema={"type": "nonsense"}, max_tokens=5)
    with pytest.raises(lmbench.ParameterError, match="'minimum', which a grammar cannot enforce"):
        lmbench.generate("Once", json_schema={"type": "integer", "minimum": 0}, max_tokens=5)
    assert len(lmbench.runs()) == 1


def test_openai_response_format_json_schema() -> None:
    with Server(Settings(model=str(TEST_MODEL)), port=0) as server:
        client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
        reply = client.chat.completions.create(
            model="stories260K",
            messages=[{"role": "user", "content": "Mood?"}],
            max_tokens=150,
            seed=2,
            response_format={"type": "json_schema", "json_schema": {"name": "mood", "schema": SCHEMA}},
        )
        jsonschema.validate(json.loads(reply.choices[0].message.content), SCHEMA)
        loose = client.chat.completions.create(
            model="stories260K",
            messages=[{"role": "user", "content": "Mood?"}],
            max_tokens=60,
            seed=2,
            response_format={"type": "json_object"},
        )
        if loose.choices[0].finish_reason == "stop":  # the grammar ended it: the text is whole JSON
            json.loads(loose.choices[0].message.content)


@pytest.mark.no_test_model
def test_bootstrap_is_reproducible() -> None:
    values = np.array([0.1, 0.5, 0.9, 0.4])
    assert scores.bootstrap(values) == scores.bootstrap(values)


def test_chat_sweeps_with_conversation_templates_and_system_prompts() -> None:
    conversation = [{"role": "user", "content": "Tell me about a {animal}."}]
    df = lmbench.sweep(
        messages=conversation,
        systems={"short": "Be brief.", "long": "Tell long stories."},
        data=DATA,
        grid={"temperature": [0.0]},
        seeds=1,
        max_tokens=6,
        progress=False,
    )
    assert len(df) == 4 and sorted(df.system.unique()) == ["long", "short"] and set(df.chat_format) == {"plain"}
    stored = lmbench.runs(heavy=True).set_index("id")
    first = stored.loc[df.id[0], "messages"]
    assert first[0]["role"] == "system" and first[1] == {"role": "user", "content": "Tell me about a cat."}
    sent = stored.loc[df.id[0], "prompt_sent"]
    assert "Be brief." in sent or "Tell long stories." in sent, "rendered through the template"
    assert df.prompt[0] == "Tell me about a cat.", "the prompt shown is what was asked"
    plain = lmbench.sweep(
        "Once", systems="Be brief.", grid={"temperature": [0.0]}, seeds=1, max_tokens=4, progress=False
    )
    assert plain.system.tolist() == ["system"] and plain.chat_format.tolist() == ["plain"]
    with pytest.raises(lmbench.ParameterError, match="prompts or messages"):
        lmbench.sweep("Once", messages=conversation, grid={"temperature": [0.0]}, progress=False)
    with pytest.raises(lmbench.ParameterError, match="role"):
        lmbench.sweep(messages=[{"role": "wizard", "content": "x"}], grid={"temperature": [0.0]}, progress=False)
