"""Multiple choice and classification: every item of a data set answered with one of its choices.

``method="likelihood"`` scores each choice as a continuation of the filled prompt (after
``delimiter``) and picks the likeliest, as lm-evaluation-harness's multiple-choice tasks do:
``acc`` takes the highest summed log-likelihood, ``acc_norm`` the highest per character of the
choice. ``method="grammar"`` generates greedily under a grammar that allows exactly the choices.
Every answer is a recorded run (``kind="choice"`` for likelihood, a generation for grammar) with
its item, prompt name and method in ``sweep_coords``; ``confusion`` and ``classification_report``
read the answers back as a confusion matrix and per-class precision, recall and F1.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from . import datasets
from .engine import Engine
from .engine._engine import load_engine
from .errors import ParameterError
from .generation import Job, generate_many
from .likelihood import StoreArg, check_pairs, score_pairs, scoring_run
from .params import validate_params
from .run import Labels, Run
from .store import get_store
from .sweep import _prompts

Method = Literal["likelihood", "grammar"]
METHODS = ("likelihood", "grammar")


def _choices_of(item: datasets.Item, choices: str | Sequence[str], row: int) -> list[str]:
    """The item's choices: the shared list, or the list in its ``choices`` column (a list or JSON text)."""
    if not isinstance(choices, str):
        values: Any = choices
    elif choices not in item.vars:
        raise ParameterError(f"data row {row} (id {item.id!r}) has no {choices!r} column of choices", name="choices")
    else:
        values = item.vars[choices]
        if isinstance(values, str):
            try:
                values = json.loads(values)
            except ValueError:
                raise ParameterError(
                    f"data row {row}: column {choices!r} must hold a list of choices (or its JSON)", name="choices"
                ) from None
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Sequence) or len(values) < 2:
        raise ParameterError(f"data row {row}: choices must be a list of at least two strings", name="choices")
    listed = [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in values]
    if not all(isinstance(v, str) and v for v in listed) or len(set(listed)) != len(listed):
        raise ParameterError(
            f"data row {row}: choices must be distinct non-empty strings, not {values!r}", name="choices"
        )
    return listed


def _gold(item: datasets.Item, answer: str, options: list[str], row: int) -> int | None:
    """The index of the item's right choice (the answer column holds its text or its index), or None."""
    value = item.vars.get(answer)
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(options):
        return value
    if str(value) in options:
        return options.index(str(value))
    raise ParameterError(
        f"data row {row} (id {item.id!r}): answer {value!r} is not one of its choices {options}", name="answer"
    )


def _grammar(options: list[str]) -> str:
    """A GBNF grammar whose only sentences are the options."""
    return "root ::= " + " | ".join(json.dumps(o, ensure_ascii=False) for o in options)


def choose(
    prompts: str | Sequence[str] | Mapping[str, str],
    *,
    data: datasets.DataArg,
    choices: str | Sequence[str],
    answer: str = "answer",
    method: Method = "likelihood",
    delimiter: str = " ",
    model: str | os.PathLike[str] | Engine | None = None,
    experiment: str | None = None,
    tags: list[str] | None = None,
    store: StoreArg = None,
    source: str = "python",
) -> pd.DataFrame:
    """Answer every item of ``data`` with one of its ``choices``, for each prompt template; record every answer.

    ``choices`` is a list shared by all items (classification labels) or the name of a column
    holding each item's list (multiple choice); ``answer`` names the column with the right
    choice (its text or index; optional). One row per template and item: ``prediction`` (by
    summed log-likelihood, or the constrained generation), ``prediction_norm`` (by log-likelihood
    per character), ``correct`` and ``correct_norm`` (lm-evaluation-harness's acc and acc_norm),
    the ``logprobs`` of each choice, and the ``run_id``.
    """
    if method not in METHODS:
        raise ParameterError(f"method must be one of {', '.join(METHODS)}, not {method!r}", name="method")
    templates = _prompts(prompts)
    items = datasets.load(data)
    options = [_choices_of(item, choices, i) for i, item in enumerate(items)]
    golds = [_gold(item, answer, o, i) for i, (item, o) in enumerate(zip(items, options, strict=True))]
    filled = [
        (name, datasets.fill(name, template, item, i), i)
        for name, template in templates.items()
        for i, item in enumerate(items)
    ]
    check_pairs([(prompt, delimiter + o) for _, prompt, i in filled for o in options[i]])
    labels = Labels.checked(experiment, tags, source)
    engine = load_engine(model)
    answered = (_by_likelihood if method == "likelihood" else _by_grammar)(
        engine, filled, items, options, delimiter, labels
    )
    rows = []
    for (name, _, i), (run, lls) in zip(filled, answered, strict=True):
        gold = golds[i]
        pred = int(run.metrics["choice"]) if run.metrics["choice"] >= 0 else None
        norm = int(run.metrics.get("choice_norm", run.metrics["choice"]))
        rows.append(
            {
                "prompt": name,
                "item": items[i].id,
                "answer": None if gold is None else options[i][gold],
                "prediction": None if pred is None else options[i][pred],
                "prediction_norm": None if norm < 0 else options[i][norm],
                "correct": None if gold is None else pred == gold,
                "correct_norm": None if gold is None else norm == gold,
                "logprobs": lls,
                "run_id": run.id,
            }
        )
        if gold is not None:
            run.metrics.update({"acc": float(pred == gold), "acc_norm": float(norm == gold)})
    get_store(store).record([run for run, _ in answered])
    frame = pd.DataFrame(rows)
    for column in ("correct", "correct_norm"):
        frame[column] = frame[column].astype("boolean")
    frame.attrs["method"] = method
    return frame


def _by_likelihood(
    engine: Engine,
    filled: list[tuple[str, str, int]],
    items: list[datasets.Item],
    options: list[list[str]],
    delimiter: str,
    labels: Labels,
) -> list[tuple[Run, list[float] | None]]:
    pairs = [(prompt, delimiter + o) for _, prompt, i in filled for o in options[i]]
    scored = iter(score_pairs(engine, pairs))
    answered: list[tuple[Run, list[float] | None]] = []
    for name, prompt, i in filled:
        mine = [next(scored) for _ in options[i]]
        lls = np.array([s.logprob for s in mine])
        pred = int(np.argmax(lls))
        norm = int(np.argmax(lls / np.array([len(o) for o in options[i]])))
        run = scoring_run(
            engine,
            "choice",
            prompt,
            options[i][pred],
            prompt_tokens=len(mine[0].context_tokens),
            scores=[s.scores for s in mine],
            metrics={"choice": float(pred), "choice_norm": float(norm), "logprob": float(lls[pred])},
            labels=_labels(labels, items[i], name, "likelihood"),
        )
        run.token_logprobs = [
            {"choice": o, "logprob": s.logprob, "tokens": len(s.continuation_tokens), "greedy": s.is_greedy}
            for o, s in zip(options[i], mine, strict=True)
        ]
        answered.append((run, lls.tolist()))
    return answered


def _by_grammar(
    engine: Engine,
    filled: list[tuple[str, str, int]],
    items: list[datasets.Item],
    options: list[list[str]],
    delimiter: str,
    labels: Labels,
) -> list[tuple[Run, list[float] | None]]:
    jobs = []
    for name, prompt, i in filled:
        spelled = [delimiter + o for o in options[i]]
        longest = max(len(engine.tokenize(s, add_bos=False)) for s in spelled)
        params = validate_params(
            {"temperature": 0.0, "seed": 0, "max_tokens": longest + 1, "grammar": _grammar(spelled)}
        )
        jobs.append(Job(prompt, params, _labels(labels, items[i], name, "grammar")))
    made = generate_many(engine, jobs)
    answered: list[tuple[Run, list[float] | None]] = []
    for run, (_, _, i) in zip(made, filled, strict=True):
        assert run is not None
        text = run.text[len(delimiter) :] if run.text.startswith(delimiter) else run.text
        run.metrics = {"choice": float(options[i].index(text)) if text in options[i] else -1.0}
        answered.append((run, None))
    return answered


def _labels(labels: Labels, item: datasets.Item, name: str, method: str) -> Labels:
    return Labels(
        labels.experiment,
        labels.tags,
        labels.source,
        item=item.record(),
        sweep_coords={"prompt_name": name, "item": item.id, "method": method},
    )


def confusion(df: pd.DataFrame, *, truth: str = "answer", predicted: str = "prediction") -> pd.DataFrame:
    """The confusion matrix of answers: a row per true label, a column per predicted one, every label in both."""
    _require(df, truth, predicted)
    known = df[df[truth].notna()]
    labels = sorted(set(known[truth]) | set(known[predicted].dropna()))
    table = pd.crosstab(known[truth], known[predicted].fillna("(none)"))
    extra = ["(none)"] if "(none)" in table.columns else []
    table = table.reindex(index=labels, columns=labels + extra, fill_value=0)
    table.index.name, table.columns.name = "true", "predicted"
    return table


def classification_report(df: pd.DataFrame, *, truth: str = "answer", predicted: str = "prediction") -> pd.DataFrame:
    """Precision, recall, F1 and support per true label, then their macro average and the accuracy.

    A label never predicted has precision 0 (as scikit-learn's ``zero_division=0``).
    """
    table = confusion(df, truth=truth, predicted=predicted)
    labels = list(table.index)
    hits = np.array([table.loc[label, label] for label in labels], dtype=float)
    support = table.sum(axis=1).to_numpy(dtype=float)
    predicted_count = table[labels].sum(axis=0).to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted_count > 0, hits / predicted_count, 0.0)
        recall = np.where(support > 0, hits / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    report = pd.DataFrame({"precision": precision, "recall": recall, "f1": f1, "support": support}, index=labels)
    total = support.sum()
    report.loc["macro avg"] = [precision.mean(), recall.mean(), f1.mean(), total]
    report.loc["accuracy"] = [np.nan, np.nan, hits.sum() / total if total else np.nan, total]
    report["support"] = report["support"].astype(int)
    return report


def choice_summary(df: pd.DataFrame) -> pd.DataFrame:
    """Per prompt template: accuracy, length-normalised accuracy and macro-F1, best first."""
    _require(df, "prompt", "correct", "correct_norm")
    rows = []
    for name, group in df.groupby("prompt", sort=False):
        rows.append(
            {
                "prompt": name,
                "acc": group["correct"].astype(float).mean(),
                "acc_norm": group["correct_norm"].astype(float).mean(),
                "macro_f1": classification_report(group).loc["macro avg", "f1"],
                "items": len(group),
            }
        )
    return pd.DataFrame(rows).sort_values("acc", ascending=False, kind="stable").reset_index(drop=True)


def _require(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df]
    if missing:
        raise ParameterError(f"the table has no {missing[0]!r} column (use lmbench.choose()'s result)", name="df")
