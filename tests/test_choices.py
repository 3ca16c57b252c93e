"""Multiple choice and classification on the real test model: by likelihood (acc, acc_norm) and by
generation under a grammar of the choices, recorded runs, confusion matrices and per-class scores."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import REPO, TEST_MODEL

import lmbench

STORIES = REPO / "notebooks" / "data" / "stories_mc.jsonl"
REVIEWS = REPO / "notebooks" / "data" / "reviews.jsonl"
LABELS = ["positive", "negative", "neutral"]


def test_likelihood_answers_are_the_likeliest_choice_and_are_recorded() -> None:
    items = pd.read_json(STORIES, lines=True).head(6)
    table = lmbench.choose("{story}", data=items, choices="choices", model=TEST_MODEL, experiment="mc")
    assert len(table) == 6 and table["prompt"].unique().tolist() == ["prompt"]
    for row, item in zip(table.itertuples(), items.itertuples(), strict=True):
        pairs = [(item.story, " " + c) for c in item.choices]
        expected = lmbench.loglikelihood(pairs, model=TEST_MODEL)["logprob"].to_numpy()
        np.testing.assert_allclose(row.logprobs, expected, atol=1e-3)
        assert row.prediction == item.choices[int(np.argmax(expected))]
        lengths = np.array([len(c) for c in item.choices])
        assert row.prediction_norm == item.choices[int(np.argmax(expected / lengths))]
        assert row.answer == item.answer and row.correct == (row.prediction == item.answer)
    recorded = lmbench.runs("mc", kind="choice")
    assert recorded["id"].tolist() == table["run_id"].tolist()
    np.testing.assert_array_equal(recorded["acc"], table["correct"].astype(float))
    np.testing.assert_array_equal(recorded["acc_norm"], table["correct_norm"].astype(float))
    assert recorded["text"].tolist() == table["prediction"].tolist()
    assert [c["item"] for c in recorded["sweep_coords"]] == items["id"].tolist()
    run = lmbench.get_store().get(table["run_id"][0])
    assert run.item is not None and run.item["id"] == "s01"
    assert [c["choice"] for c in run.token_logprobs or []] == items["choices"][0]


def test_the_test_model_knows_its_stories_better_than_chance() -> None:
    table = lmbench.choose("{story}", data=STORIES, choices="choices", model=TEST_MODEL)
    assert table["correct"].mean() > 0.25 and table["correct_norm"].mean() > 0.25  # four choices each


def test_grammar_answers_are_always_one_of_the_choices() -> None:
    items = pd.read_json(STORIES, lines=True).head(5)
    table = lmbench.choose("{story}", data=items, choices="choices", method="grammar", model=TEST_MODEL)
    assert all(p in c for p, c in zip(table["prediction"], items["choices"], strict=True))
    runs = lmbench.runs(kind="generate")
    assert sorted(runs["id"]) == sorted(table["run_id"])
    assert all(coords["method"] == "grammar" for coords in runs["sweep_coords"])
    assert all(text.startswith(" ") for text in runs["text"])  # the delimiter, as the grammar spells it


def test_classification_confusion_and_per_class_scores() -> None:
    table = lmbench.choose(
        {"a": "Review: {review}\nSentiment:", "b": "{review}\nThe review is"},
        data=REVIEWS,
        choices=LABELS,
        answer="label",
        model=TEST_MODEL,
    )
    assert len(table) == 80
    one = table[table["prompt"] == "a"]
    matrix = lmbench.confusion(one)
    assert list(matrix.index) == list(matrix.columns) == sorted(LABELS)
    assert matrix.to_numpy().sum() == 40
    assert matrix.sum(axis=1).to_dict() == one["answer"].value_counts().to_dict()
    report = lmbench.classification_report(one)
    assert math.isclose(report.loc["accuracy", "f1"], one["correct"].mean())
    assert math.isclose(report.loc["macro avg", "f1"], report.loc[sorted(LABELS), "f1"].mean())
    summary = lmbench.choice_summary(table)
    assert set(summary["prompt"]) == {"a", "b"} and summary["acc"].is_monotonic_decreasing
    figure = lmbench.plot_confusion(one)
    assert np.array_equal(np.array(figure.data[0].z), matrix.to_numpy())


@pytest.mark.no_test_model
def test_per_class_scores_match_their_definitions() -> None:
    answers = pd.DataFrame(
        {
            "answer": ["a", "a", "a", "b", "b", "c", "c", "c"],
            "prediction": ["a", "a", "b", "b", "c", "c", "c", None],
        }
    )
    matrix = lmbench.confusion(answers)
    assert matrix.loc["a"].tolist() == [2, 1, 0, 0] and list(matrix.columns) == ["a", "b", "c", "(none)"]
    report = lmbench.classification_report(answers)
    # a: 2 right of 2 predicted, of 3; b: 1 of 2, of 2; c: 2 of 3, of 3 (one unanswered counts as wrong).
    assert report.loc["a", ["precision", "recall"]].tolist() == [1.0, 2 / 3]
    assert report.loc["b", ["precision", "recall"]].tolist() == [0.5, 0.5]
    assert report.loc["c", ["precision", "recall"]].tolist() == [2 / 3, 2 / 3]
    assert math.isclose(report.loc["a", "f1"], 0.8)
    assert math.isclose(report.loc["accuracy", "f1"], 5 / 8)
    assert report["support"].tolist() == [3, 2, 3, 8, 8]


def test_bad_choice_tasks_are_refused_before_anything_runs() -> None:
    data = [{"story": "Once", "choices": ["a", "b"], "answer": "a"}]
    for options, words in [
        ({"choices": "missing"}, "no 'missing' column"),
        ({"choices": ["only"]}, "at least two"),
        ({"choices": ["a", "a"]}, "distinct"),
        ({"choices": ["x", "y"]}, "not one of its choices"),
        ({"choices": "choices", "method": "vote"}, "method"),
        ({"choices": "choices", "delimiter": "\udfff"}, "Unicode"),
    ]:
        with pytest.raises(lmbench.ParameterError, match=words):
            lmbench.choose("{story}", data=data, model=TEST_MODEL, **options)  # type: ignore[arg-type]
    with pytest.raises(lmbench.ParameterError, match="no 'prediction' column"):
        lmbench.confusion(pd.DataFrame({"answer": ["a"]}))
    assert lmbench.runs().empty
