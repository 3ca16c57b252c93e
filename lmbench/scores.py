"""Scores against references, assertions, a local judge, and the leaderboard that ranks settings by them.

Every score is a metric in the one registry (``lmbench.metrics``), stored beside its run:

- Reference scores (0..1, higher is closer to the reference; NaN when the item has none):
  ``rouge1``, ``rouge2``, ``rougeL`` (``rouge-score``, F1), ``chrf`` and ``bleu`` (``sacrebleu``,
  divided by 100), ``exact_match`` (after lower-casing and dropping punctuation, articles and extra
  space), ``token_f1`` (word overlap F1, SQuAD style).
- Assertions (1 pass, 0 fail; NaN when the run has none of that type): ``pass`` (every check of the
  run passes) and ``assert_<type>`` for ``contains``, ``icontains``, ``regex``, ``starts_with``,
  ``max_words``, ``max_chars``, ``is_json``, ``json_schema`` and ``python`` (a callable). Checks
  come from a data set's ``assert`` column or a sweep's ``assertions=``, as promptfoo's do.
- ``judge(rubric)``: a local model grades each output on a scale, its answer constrained by a
  grammar so it always parses; judge generations are runs (``source="judge"``) tagged with the
  judged run's id, and re-scoring reuses them.

``score(df, scorers)`` scores recorded runs after the fact; ``leaderboard(df, by)`` ranks settings
by mean scores with bootstrap intervals and pass rates with Wilson intervals.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import string
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import regex

from . import _sandbox, code_tasks, metrics, models
from ._extras import require
from .chat import chat
from .engine import embed
from .engine._engine import load_engine
from .errors import ParameterError, StoreError
from .metrics import bootstrap
from .params import check_text
from .run import COLUMNS, Run
from .significance import versus_best
from .store._ratings import SCORES as RATING_SCORES
from .store._store import Store, get_store

REFERENCE_SCORES = ("rouge1", "rouge2", "rougeL", "chrf", "bleu", "exact_match", "token_f1")
# How long one regex assertion may search an output: a catastrophic pattern must not hang a sweep.
ASSERTION_TIMEOUT_S = 1.0
ASSERTION_TYPES = (
    "contains",
    "icontains",
    "regex",
    "starts_with",
    "max_words",
    "max_chars",
    "is_json",
    "json_schema",
    "python",
)


# Reference scores --------------------------------------------------------------------------------


def _reference(run: Run) -> str | None:
    return (run.item or {}).get("reference")


# Reference scores whose package comes with the "eval" extra: checked when a scorer is named, before any run.
_PACKAGES = {
    "rouge": ("rouge_score.rouge_scorer", "the ROUGE scores"),
    "sacre": ("sacrebleu", "the chrF and BLEU scores"),
}
_NEEDS = {"rouge1": "rouge", "rouge2": "rouge", "rougeL": "rouge", "chrf": "sacre", "bleu": "sacre"}


def _package(which: str) -> Any:
    module, what = _PACKAGES[which]
    return require(module, "eval", what)


@functools.lru_cache(maxsize=1)
def _rouge() -> Any:
    return _package("rouge").RougeScorer(["rouge1", "rouge2", "rougeL"])


def _rouge_f(run: Run, kind: str) -> float:
    reference = _reference(run)
    return math.nan if reference is None else float(_rouge().score(reference, run.text)[kind].fmeasure)


def _sacre(run: Run, kind: str) -> float:
    sacrebleu = _package("sacre")
    reference = _reference(run)
    if reference is None:
        return math.nan
    fn = sacrebleu.sentence_chrf if kind == "chrf" else sacrebleu.sentence_bleu
    return float(fn(run.text, [reference]).score) / 100.0


def normalize(text: str) -> str:
    """Lower case, no punctuation, no English articles, single spaces (SQuAD's answer normalisation)."""
    text = "".join(c for c in text.lower() if c not in string.punctuation)
    return " ".join(w for w in text.split() if w not in ("a", "an", "the"))


def exact_match(run: Run) -> float:
    """1 when the output equals the reference after normalisation, else 0."""
    reference = _reference(run)
    return math.nan if reference is None else float(normalize(run.text) == normalize(reference))


def token_f1(run: Run) -> float:
    """F1 of the words the output and the reference share, after normalisation."""
    reference = _reference(run)
    if reference is None:
        return math.nan
    got, want = normalize(run.text).split(), normalize(reference).split()
    common = sum((Counter(got) & Counter(want)).values())
    if not got or not want or not common:
        return float(got == want)
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


# Assertions --------------------------------------------------------------------------------------


def _checks(run: Run) -> list[dict[str, Any]]:
    return list((run.item or {}).get("assert") or [])


def check(text: str, assertion: Mapping[str, Any]) -> bool:
    """Whether ``text`` passes one assertion (``{"type": ..., "value": ...}``)."""
    kind, value = assertion.get("type"), assertion.get("value")
    if kind == "contains":
        return str(value) in text
    if kind == "icontains":
        return str(value).lower() in text.lower()
    if kind == "regex":
        try:
            return regex.search(str(value), text, timeout=ASSERTION_TIMEOUT_S) is not None
        except TimeoutError:
            warnings.warn(
                f"assertion timed out: regex {str(value)[:60]!r} ran past {ASSERTION_TIMEOUT_S:g} s (a fail)",
                stacklevel=2,
            )
            return False
    if kind == "starts_with":
        return text.lstrip().startswith(str(value))
    if kind == "max_words":
        return len(text.split()) <= int(value)  # type: ignore[arg-type]
    if kind == "max_chars":
        return len(text) <= int(value)  # type: ignore[arg-type]
    if kind in ("is_json", "json_schema"):
        try:
            parsed = json.loads(text)
        except ValueError:
            return False
        if kind == "is_json":
            return True
        import jsonschema

        return bool(jsonschema.Draft202012Validator(value).is_valid(parsed))
    if kind == "python" and callable(value):
        return bool(value(text))
    raise ParameterError(f"unknown assertion type {kind!r}; types: {', '.join(ASSERTION_TYPES)}", name="assertions")


def check_assertions(
    assertions: Sequence[Mapping[str, Any] | Callable[[str], bool]] | None,
    *,
    where: str = "assertions",
    data: bool = False,
) -> list[dict[str, Any]]:
    """Assertions as dicts, checked before anything runs (a bare callable is a ``python`` assertion).

    Each needs a known ``type`` and a ``value`` that type can use: text for the text checks, a
    regex that compiles, a whole number for the counts, a valid JSON schema (a dict) for
    ``json_schema``, a callable for ``python`` (not from a data set, ``data=True``: a data set
    holds only what can be stored with a run).
    """
    if isinstance(assertions, str | bytes | Mapping) or not isinstance(assertions, Sequence | None):
        raise ParameterError(f"{where} must be a list of assertions, not {assertions!r}", name="assertions")
    checked = []
    for i, assertion in enumerate(assertions or []):
        if callable(assertion) and not data:
            assertion = {"type": "python", "value": assertion}
        at = f"{where}[{i}]"
        kinds = ASSERTION_TYPES if not data else tuple(k for k in ASSERTION_TYPES if k != "python")
        if not isinstance(assertion, Mapping) or assertion.get("type") not in kinds:
            raise ParameterError(
                f"{at} must be {{'type': one of {', '.join(kinds)}, 'value': ...}}, not {assertion!r}",
                name="assertions",
            )
        _check_value(assertion["type"], assertion.get("value"), at)
        checked.append(dict(assertion))
    return checked


def _check_value(kind: str, value: Any, at: str) -> None:
    """``ParameterError`` unless ``value`` is what an assertion of ``kind`` can use."""
    problem = None
    if kind in ("contains", "icontains", "starts_with", "regex") and not isinstance(value, str):
        problem = f"{kind} needs a string value, not {value!r}"
    elif kind in ("max_words", "max_chars") and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
        problem = f"{kind} needs a whole number >= 0, not {value!r}"
    elif kind == "regex":
        try:
            regex.compile(value)
        except regex.error as exc:
            problem = f"bad regex {value!r}: {exc}"
    elif kind == "json_schema":
        import jsonschema

        if not isinstance(value, dict):
            problem = f"json_schema needs a JSON schema (a dict), not {type(value).__name__}"
        else:
            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as exc:
                problem = f"json_schema is not a valid JSON schema: {exc.message}"
    elif kind == "python" and not callable(value):
        problem = f"python needs a callable, not {value!r}"
    if problem:
        raise ParameterError(f"{at}: {problem}", name="assertions")


def passes(run: Run) -> float:
    """1 when every assertion of the run passes, 0 when one fails (NaN without assertions)."""
    checks = _checks(run)
    return float(all(check(run.text, a) for a in checks)) if checks else math.nan


def _passes_type(run: Run, kind: str) -> float:
    checks = [a for a in _checks(run) if a.get("type") == kind]
    return float(all(check(run.text, a) for a in checks)) if checks else math.nan


for _kind in ("rouge1", "rouge2", "rougeL"):
    metrics.register(
        _kind,
        functools.partial(_rouge_f, kind=_kind),
        default=False,
        description=f"{_kind.upper()} F1 against the reference (0..1, higher is closer).",
        bounds=(0.0, 1.0),
    )
metrics.register(
    "chrf",
    functools.partial(_sacre, kind="chrf"),
    default=False,
    description="chrF against the reference (sacrebleu, 0..1, higher is closer).",
    bounds=(0.0, 1.0),
)
metrics.register(
    "bleu",
    functools.partial(_sacre, kind="bleu"),
    default=False,
    description="Sentence BLEU against the reference (sacrebleu, 0..1, higher is closer).",
    bounds=(0.0, 1.0),
)
metrics.register("exact_match", exact_match, default=False, bounds=(0.0, 1.0))
metrics.register("token_f1", token_f1, default=False, bounds=(0.0, 1.0))
metrics.register("pass", passes, default=False, bounds=(0.0, 1.0))
for _kind in ASSERTION_TYPES:
    metrics.register(
        f"assert_{_kind}",
        functools.partial(_passes_type, kind=_kind),
        default=False,
        description=f"1 when the run's {_kind} assertions pass, 0 when one fails.",
        bounds=(0.0, 1.0),
    )


# Embeddings -------------------------------------------------------------------------------------


def semantic_similarity(run: Run) -> float:
    """Cosine similarity of the run's text to the reference, in the run's own model's embeddings (NaN without one)."""
    reference = _reference(run)
    if reference is None or not run.text.strip() or not reference.strip():
        return math.nan
    text, ref = embed([run.text, reference], model=run.model_path)
    return float(text @ ref)


def semantic_diversity(texts: Sequence[str]) -> float:
    """1 minus the mean pairwise cosine similarity of a group's texts (the default model's embeddings)."""
    kept = [t for t in texts if t.strip()]
    if len(kept) < 2:
        return math.nan
    vectors = embed(kept)
    similarity = vectors @ vectors.T
    pairs = similarity[np.triu_indices(len(kept), k=1)]
    return float(1.0 - pairs.mean())


metrics.register("semantic_similarity", semantic_similarity, default=False)
metrics.register("semantic_diversity", semantic_diversity, kind="group", default=False)


# Tool calls ---------------------------------------------------------------------------------------


def _called(run: Run) -> list[tuple[str, Any]]:
    """The run's tool calls as (name, arguments); NaN scores follow when no tools were offered."""
    calls = []
    for call in run.tool_calls or []:
        try:
            calls.append((call["function"]["name"], json.loads(call["function"]["arguments"])))
        except (KeyError, TypeError, ValueError):
            calls.append((str(call), None))
    return calls


def _expected_call(run: Run) -> Mapping[str, Any] | None:
    expected = (run.item or {}).get("tool_call")
    return expected if isinstance(expected, Mapping) else None


def tool_name(run: Run) -> float:
    """1 when the run's first tool call names the data-set row's ``tool_call`` name (NaN without one)."""
    expected = _expected_call(run)
    if expected is None or not run.tools:
        return math.nan
    calls = _called(run)
    return float(bool(calls) and calls[0][0] == expected.get("name"))


def tool_args_valid(run: Run) -> float:
    """1 when the run made tool calls and each one's arguments validate against its tool's JSON schema."""
    import jsonschema

    if not run.tools:
        return math.nan
    schemas = {t["name"]: t.get("parameters") or {} for t in run.tools}
    calls = _called(run)
    return float(
        bool(calls)
        and all(
            name in schemas and jsonschema.Draft202012Validator(schemas[name]).is_valid(arguments)
            for name, arguments in calls
        )
    )


def tool_call(run: Run) -> float:
    """1 when the first tool call equals the row's ``tool_call`` (its name, and its ``arguments`` when given)."""
    expected = _expected_call(run)
    if expected is None or not run.tools:
        return math.nan
    calls = _called(run)
    if not calls or calls[0][0] != expected.get("name"):
        return 0.0
    return float("arguments" not in expected or calls[0][1] == expected["arguments"])


metrics.register("tool_name", tool_name, default=False)
metrics.register("tool_args_valid", tool_args_valid, default=False)
metrics.register("tool_call", tool_call, default=False)


def item_scorers(items: Sequence[Mapping[str, Any]]) -> list[str]:
    """The scores a sweep over these items gets by default: reference scores and assertion results it can use."""
    names: list[str] = []
    if any(i.get("reference") is not None for i in items):
        names += REFERENCE_SCORES
    kinds = {a.get("type") for i in items for a in i.get("assert") or []}
    if kinds:
        names += ["pass", *(f"assert_{k}" for k in ASSERTION_TYPES if k in kinds)]
    if any(i.get("tool_call") is not None for i in items):
        names += ["tool_name", "tool_call"]
    if any(code_tasks.TESTS in (i.get("vars") or {}) for i in items):
        names.append("tests")
    return names


# The judge ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Judge:
    """A local model that grades an output against a rubric (and the reference, when there is one)."""

    rubric: str
    model: str | None = None
    scale: tuple[int, int] = (1, 5)
    name: str = "judge"

    def grammar(self) -> str:
        low, high = self.scale
        return "root ::= " + " | ".join(f'"{n}"' for n in range(low, high + 1))

    def messages(self, run: Run) -> list[dict[str, str]]:
        low, high = self.scale
        reference = _reference(run)
        parts = [f"Rubric: {self.rubric}"]
        if reference is not None:
            parts.append(f"Reference answer: {reference}")
        question = (run.messages or [{}])[-1].get("content") if run.messages else run.prompt
        parts += [
            f"Question: {question}",
            f"Answer to grade: {run.text}",
            f"Grade the answer from {low} (worst) to {high} (best). Reply with the number only.",
        ]
        return [
            {"role": "system", "content": "You are a strict, fair grader."},
            {"role": "user", "content": "\n\n".join(parts)},
        ]

    def run_id(self, run: Run) -> str:
        identity = json.dumps([run.id, self.rubric, self.model, list(self.scale), self.name])
        return "judge-" + hashlib.sha1(identity.encode()).hexdigest()[:24]

    def check(self) -> None:
        """``ParameterError`` before anything runs if the rubric leaves no room in the judge model's context."""
        engine = load_engine(self.model)
        tokens, room = len(engine.tokenize(self.rubric)), engine.n_ctx - _JUDGE_ROOM
        if tokens > room:
            raise ParameterError(
                f"the judge's rubric is {tokens:,} tokens, but {self.model or 'the default model'}'s context of "
                f"{engine.n_ctx:,} tokens leaves {room:,} for it beside the answer to grade; shorten the rubric",
                name="rubric",
            )

    def __call__(self, run: Run, store: Store | None = None) -> float:
        """The grade of ``run`` (a recorded judge run is reused)."""
        target = get_store(store)
        judge_id = self.run_id(run)
        try:
            return _grade(target.get(judge_id).text)
        except StoreError:
            pass
        reply = chat(
            self.messages(run),
            model=self.model,
            store=target,
            source="judge",
            run_id=judge_id,
            experiment=run.experiment,
            tags=[f"judged:{run.id}", f"judge:{self.name}"],
            grammar=self.grammar(),
            temperature=0.0,
            max_tokens=4,
            seed=0,
        )
        return _grade(reply.text)


def _grade(text: str) -> float:
    try:
        return float(text.strip())
    except ValueError:
        return math.nan


def judge(
    rubric: str, model: str | os.PathLike[str] | None = None, scale: tuple[int, int] = (1, 5), *, name: str = "judge"
) -> Judge:
    """A scorer that asks a local model to grade outputs against ``rubric`` on ``scale`` (stored as ``name``).

    Checked at once: the rubric is valid text, the scale two whole numbers from 0 to 10, the name
    a string that is not a column of the runs table, and the model one that exists.
    """
    if not isinstance(rubric, str) or not rubric.strip():
        raise ParameterError("a judge needs a rubric: what makes an answer good", name="rubric")
    check_text("rubric", rubric)
    if isinstance(scale, str | bytes | Mapping) or not isinstance(scale, Sequence) or len(scale) != 2:
        raise ParameterError(f"scale must be two whole numbers (low, high), not {scale!r}", name="scale")
    low, high = scale
    if not (_whole(low) and _whole(high) and 0 <= low < high <= 10):
        raise ParameterError(f"scale must be two whole numbers from 0 to 10, low first, not {scale!r}", name="scale")
    if not isinstance(name, str) or not name.strip():
        raise ParameterError(f"a judge's name must be a non-empty string, not {name!r}", name="name")
    check_text("name", name)
    if name in _TAKEN_NAMES:
        raise ParameterError(f"a judge cannot be named {name!r}: the runs table has a column of that name", name="name")
    if model is not None:
        models.metadata(models.resolve(model))  # ModelLoadError now, not a column of NaN later
    return Judge(rubric, None if model is None else os.fspath(model), (int(low), int(high)), name)


def _whole(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


# Context tokens a judge keeps for the question, the answer it grades and its reply besides the rubric.
_JUDGE_ROOM = 64

# Columns of a runs table (and a sweep's coordinates) that a judge's scores must not overwrite.
_TAKEN_NAMES = frozenset({*(c.name for c in COLUMNS), "model", "prompt_name", "item", "system", "metrics"})


# Scoring recorded runs -------------------------------------------------------------------------------

Scorer = str | Judge | Callable[[Run], float]


def python_assertion(fn: Callable[[str], bool]) -> tuple[str, Callable[[Run], float]]:
    """A Python callable as an assertion metric: ``assert_<its name>``, 1 when it returns true for the text."""
    return f"assert_{getattr(fn, '__name__', 'python')}", lambda run: float(bool(fn(run.text)))


def named_scorer(scorer: Scorer) -> tuple[str, Callable[[Run], float]]:
    """A scorer's name and its function of a run."""
    if isinstance(scorer, str):
        known = metrics.available("run")
        if scorer not in known:
            raise ParameterError(f"unknown scorer {scorer!r}; registered: {', '.join(known)}", name="scorers")
        if scorer in _NEEDS:
            _package(_NEEDS[scorer])
        if scorer == "tests":
            _sandbox.check()
        return scorer, known[scorer].fn
    if isinstance(scorer, Judge):
        return scorer.name, scorer
    if callable(scorer):
        return getattr(scorer, "__name__", "score"), scorer
    raise ParameterError(f"a scorer is a metric name, a judge or a callable, not {scorer!r}", name="scorers")


def score(
    runs: pd.DataFrame | Sequence[str],
    scorers: Sequence[Scorer],
    *,
    store: str | os.PathLike[str] | Store | None = None,
) -> pd.DataFrame:
    """Score recorded runs again (nothing is generated but a judge's grades); the values are stored.

    ``runs`` is a runs table (``lmbench.runs()``, a sweep's result) or run ids; returns the table
    with a column per scorer.
    """
    target = get_store(store)
    named = [named_scorer(s) for s in scorers]
    for scorer in scorers:
        if isinstance(scorer, Judge):
            scorer.check()
    frame = runs.copy() if isinstance(runs, pd.DataFrame) else pd.DataFrame({"id": list(runs)})
    values: dict[str, dict[str, float]] = {}
    for run_id in frame["id"]:
        run = target.get(run_id)
        values[run_id] = {name: _safe(fn, run, target) for name, fn in named}
    target.add_metrics(values)
    for name, _ in named:
        frame[name] = [values[i][name] for i in frame["id"]]
    return frame


def _safe(fn: Callable[..., float], run: Run, store: Store) -> float:
    try:
        return float(fn(run, store) if isinstance(fn, Judge) else fn(run))
    except ParameterError:
        raise
    except Exception:  # noqa: BLE001 - one bad score must not lose the others
        return math.nan


# The leaderboard ---------------------------------------------------------------------------------------


def wilson(passed: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a pass rate (stays within 0..1)."""
    if n == 0:
        return (math.nan, math.nan)
    p = passed / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def leaderboard(df: pd.DataFrame, by: str | Sequence[str], metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per setting: mean and 95% interval of each score, pass rates, tokens/s; best first.

    Pass/fail columns (``pass``, ``tests``, ``assert_*``) get a pass rate with a Wilson interval; other scores
    a mean with a bootstrap interval. Sorted by the first metric, highest first. ``tied with best``
    says which settings are indistinguishable from the best on it: a paired test against the best
    (same items and seeds), Holm-corrected over the comparisons (``lmbench.significance.versus_best``;
    the table's ``attrs["note"]`` says how it was tested).
    """
    keys = [by] if isinstance(by, str) else list(by)
    missing = [k for k in keys if k not in df]
    if missing:
        raise ParameterError(
            f"cannot rank by {missing[0]!r}: not a column; columns: {', '.join(df.columns)}", name="by"
        )
    present = [c for c in df.columns if _is_score(c) and df[c].notna().any()]
    chosen = list(metrics) if metrics is not None else sorted(present, key=_rank_order)
    unknown = [m for m in chosen if m not in df]
    if unknown:
        raise ParameterError(f"no column {unknown[0]!r} to rank by; score the runs first", name="metrics")
    rows = []
    for key, group in df.groupby(keys, dropna=False, sort=False):
        row: dict[str, Any] = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row["n"] = len(group)
        for name in chosen:
            values = group[name].to_numpy(dtype=float)
            present = values[~np.isnan(values)]
            if _pass_fail(name):
                low, high = wilson(int(present.sum()), len(present))
            else:
                low, high = bootstrap(values)
            row[name] = float(present.mean()) if len(present) else math.nan
            row[f"{name} low"], row[f"{name} high"] = low, high
            if name == "tests" and "item" in group:
                row.update(_pass_at_most(group))
        if "tokens_per_s" in group:
            row["tokens_per_s"] = float(group["tokens_per_s"].mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    if chosen:
        table = table.sort_values(chosen[0], ascending=False, kind="stable", na_position="last")
    table = table.reset_index(drop=True)
    return versus_best(df, table, keys, chosen[0]) if chosen else table


def _pass_at_most(group: pd.DataFrame) -> dict[str, float]:
    """pass@k of the ``tests`` column for k = the seeds every item has, when that is more than one."""
    samples = group[group["tests"].notna()].groupby("item").size()
    k = int(samples.min()) if len(samples) else 0
    return {} if k < 2 else {f"pass@{k}": float(code_tasks.pass_at_k(group, k, by=[])[f"pass@{k}"].iloc[0])}


def _pass_fail(column: str) -> bool:
    return column in ("pass", "tests") or column.startswith("assert_")


_ORDER = ("pass", "tests", "judge", "rougeL", "rouge1", "rouge2", "chrf", "bleu", "token_f1", "exact_match")


def _is_score(column: str) -> bool:
    return (
        column in _ORDER or column.startswith("assert_") or column in RATING_SCORES
    )  # people's ratings, ranked after the automatic scores


def _rank_order(column: str) -> tuple[int, str]:
    return (_ORDER.index(column) if column in _ORDER else len(_ORDER), column)
