"""Does a result reproduce: the determinism audit, the token-level diff of two runs, and forks.

``audit`` generates one request under the conditions that may change its text (alone, again
with its prompt in the cache, in batches of 2, 8 and 32 slots, without prefix sharing, after
another prompt, with another thread count, on a fresh engine) and says, per condition, whether
the tokens were identical to the first run's and, where not, the first divergent token with both
top-5 distributions there (was it a near tie, a flip within float noise?). ``diff`` finds where
two runs' tokens part, with both runs' probabilities at the fork. ``fork`` continues a run from
another token at a position: a new run, linked to its parent by ``parent_id`` and
``fork_position``.
"""

from __future__ import annotations

import html
import math
import os
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from ._prompting import template_stops, tokenize_options
from .engine._engine import Engine, load_engine
from .errors import ParameterError
from .generation import Continuation, Job, Recorder, generate_many
from .params import check_text, validate_params
from .run import BORDER, MUTED, Labels, Run
from .store._store import Store, get_store

CONDITIONS = (
    "alone",
    "prompt cached",
    "batch 2",
    "batch 8",
    "batch 32",
    "no prefix cache",
    "after another prompt",
    "other threads",
    "fresh engine",
)
# Two log-probabilities closer than this at a divergence are a near tie: float noise can swap them.
NEAR_TIE = 1e-3
TOP = 5
OTHER_PROMPT = "The little dog ran to the park"


def _ids(run: Run) -> list[int]:
    if run.token_logprobs is None:
        raise ParameterError(
            f"run {run.id[:8]} has no token record: generate it with logprobs=N (0 or more)", name="run", value=run.id
        )
    return [int(t["id"]) for t in run.token_logprobs]


def _first_divergence(a: list[int], b: list[int]) -> int | None:
    """The first position where two token lists differ (one ending earlier counts), None when equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def _logprob_of(entry: dict[str, Any] | None, token: int | None) -> float:
    """The log-probability ``entry``'s distribution gave ``token`` (NaN when it is not among its top)."""
    if entry is None or token is None:
        return math.nan
    if int(entry["id"]) == token:
        return float(entry["logprob"])
    return next((float(t["logprob"]) for t in entry.get("top") or [] if int(t["id"]) == token), math.nan)


def _top(entry: dict[str, Any] | None) -> list[tuple[str, float]]:
    return [(t["token"], round(float(t["logprob"]), 6)) for t in (entry or {}).get("top") or []]


@dataclass
class Divergence:
    """Where two runs' tokens part: the shared prefix, then each run's token with both runs' log-probabilities."""

    run_a: Run
    run_b: Run
    position: int | None  # None: the same tokens
    frame: pd.DataFrame = field(repr=False)  # one row per position: token_a, token_b, logprob_a, logprob_b, same

    @property
    def identical(self) -> bool:
        return self.position is None

    def _entry(self, run: Run) -> dict[str, Any] | None:
        entries = run.token_logprobs or []
        return entries[self.position] if self.position is not None and self.position < len(entries) else None

    @property
    def fork(self) -> dict[str, Any]:
        """At the divergence: each run's token, the log-probability each run's distribution gave both tokens,
        each run's top alternatives, and whether the best two of the first run were within float noise."""
        if self.position is None:
            return {}
        ea, eb = self._entry(self.run_a), self._entry(self.run_b)
        ta, tb = (None if e is None else int(e["id"]) for e in (ea, eb))
        best = [float(t["logprob"]) for t in (ea or {}).get("top") or []][:2]
        return {
            "position": self.position,
            "token_a": None if ea is None else ea["token"],
            "token_b": None if eb is None else eb["token"],
            "logprob_a": _logprob_of(ea, ta),
            "logprob_b": _logprob_of(eb, tb),
            "a_logprob_of_b": _logprob_of(ea, tb),
            "b_logprob_of_a": _logprob_of(eb, ta),
            "top_a": _top(ea),
            "top_b": _top(eb),
            "near_tie": len(best) == 2 and best[0] - best[1] < NEAR_TIE,
        }

    def _repr_html_(self) -> str:
        entries_a = self.run_a.token_logprobs or []
        at = self.position if self.position is not None else len(entries_a)
        common = html.escape("".join(t["token"] for t in entries_a[:at]))
        if self.position is None:
            same = f"<div style='{MUTED}'>identical</div>"
            return f"<div class='lmbench-diff' style='white-space:pre-wrap'>{common}{same}</div>"

        def branch(run: Run, colour: str) -> str:
            rest = run.token_logprobs or []
            first = rest[at]["token"] if at < len(rest) else "∎"
            tail = "".join(t["token"] for t in rest[at + 1 :])
            return (
                f"<div style='white-space:pre-wrap'><span style='{MUTED}'>{run.id[:8]}</span> "
                f"<b style='background:{colour}'>{html.escape(first)}</b>{html.escape(tail)}</div>"
            )

        fork = self.fork
        probs = (
            f"at token {at}: A {fork['token_a']!r} {math.exp(fork['logprob_a']):.3f} (B gave it "
            f"{math.exp(fork['b_logprob_of_a']):.3f}); B {fork['token_b']!r} {math.exp(fork['logprob_b']):.3f} "
            f"(A gave it {math.exp(fork['a_logprob_of_b']):.3f}){' · near tie' if fork['near_tie'] else ''}"
        )
        return (
            f"<div class='lmbench-diff' style='font-family:sans-serif;{BORDER};border-radius:6px;padding:6px 10px'>"
            f"<div style='white-space:pre-wrap'>{common}</div>"
            f"{branch(self.run_a, 'rgba(46,125,50,.25)')}{branch(self.run_b, 'rgba(176,0,32,.2)')}"
            f"<div style='{MUTED};font-size:85%'>{html.escape(probs)}</div></div>"
        )


def _resolve(run: Run | str, store: Store) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, str):
        return store.get(run)
    raise ParameterError(f"a run is a Run or a run id, not {type(run).__name__}", name="run")


def diff(run_a: Run | str, run_b: Run | str, *, store: str | os.PathLike[str] | Store | None = None) -> Divergence:
    """Where the tokens of two runs (``Run``s or ids) diverge, with both runs' probabilities at the fork.

    Both need their token record (generated with ``logprobs=N``; with N >= 1 each side also shows
    what it thought of the other's token, when that token was among its top N).
    """
    target = get_store(store)
    a, b = _resolve(run_a, target), _resolve(run_b, target)
    ids_a, ids_b = _ids(a), _ids(b)
    entries_a, entries_b = a.token_logprobs or [], b.token_logprobs or []
    rows = []
    for i in range(max(len(ids_a), len(ids_b))):
        ea = entries_a[i] if i < len(entries_a) else None
        eb = entries_b[i] if i < len(entries_b) else None
        rows.append(
            {
                "position": i,
                "token_a": None if ea is None else ea["token"],
                "token_b": None if eb is None else eb["token"],
                "logprob_a": math.nan if ea is None else float(ea["logprob"]),
                "logprob_b": math.nan if eb is None else float(eb["logprob"]),
                "same": ea is not None and eb is not None and ea["id"] == eb["id"],
            }
        )
    return Divergence(a, b, _first_divergence(ids_a, ids_b), pd.DataFrame(rows))


# Forks -----------------------------------------------------------------------------------------------


def fork(
    parent: Run | str,
    position: int,
    token: int | str,
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    **params: Any,
) -> Run:
    """Continue ``parent`` from ``token`` at ``position``: its first ``position`` tokens, then ``token``
    (an id, or one of the alternatives recorded there by its text), then a new generation.

    The fork is recorded as a new run with ``parent_id`` and ``fork_position``; its text starts
    with the parent's text up to the fork. Parameters are the parent's, with ``params`` overriding
    (``max_tokens`` counts the whole text, the parent's tokens included).
    """
    target = get_store(store)
    run = _resolve(parent, target)
    ids = _ids(run)
    if isinstance(position, bool) or not isinstance(position, int) or not 0 <= position < max(len(ids), 1):
        raise ParameterError(
            f"position must be a token index from 0 to {max(len(ids) - 1, 0)}, not {position!r}",
            name="position",
            value=position,
        )
    if run.params.constraint() is not None:
        raise ParameterError(
            "a run constrained by a grammar or JSON schema cannot be forked: the chosen token may break the constraint",
            name="run",
            value=run.id,
        )
    entries = run.token_logprobs or []
    at = entries[position] if position < len(entries) else None
    engine = load_engine(run.model_path if model is None else model)
    chosen = _chosen_token(engine, at, token)
    values = validate_params({**run.params.model_dump(), **params})
    if values.max_tokens <= position + 1:
        raise ParameterError(
            f"max_tokens must be more than the {position + 1} tokens the fork starts with",
            name="max_tokens",
            value=values.max_tokens,
        )
    if values.logprobs is None:
        values = values.model_copy(update={"logprobs": 0})
    labels = Labels(
        run.experiment,
        tuple(run.tags),
        "fork",
        uuid.uuid4().hex,
        messages=run.messages,
        chat_format=run.chat_format,
        item=run.item,
        parent_id=run.id,
        fork_position=position,
    )
    options = tokenize_options(run.chat_format)
    job = Continuation(
        run.prompt_sent or run.prompt,  # the text the run sent, tokenized as it was
        values,
        labels,
        asked=run.prompt,
        extra_stop=tuple(s for s in template_stops(engine, run.chat_format) if s not in values.stop),
        tokens=[*ids[:position], chosen],
        entries=[*entries[:position], _forced_entry(engine, at, chosen)],
        special=options["special"],
        add_bos=options["add_bos"],
    )
    (child,) = generate_many(engine, [job], Recorder(target))
    return child


def _chosen_token(engine: Engine, entry: dict[str, Any] | None, token: int | str) -> int:
    if isinstance(token, str):
        found = [int(t["id"]) for t in (entry or {}).get("top") or [] if t["token"] == token]
        if not found:
            shown = ", ".join(repr(t["token"]) for t in (entry or {}).get("top") or [])
            raise ParameterError(
                f"{token!r} is not among the alternatives recorded there ({shown or 'none'}); give its token id",
                name="token",
                value=token,
            )
        return found[0]
    if isinstance(token, bool) or not isinstance(token, int) or not 0 <= token < engine.n_vocab:
        raise ParameterError(
            f"token must be an id from 0 to {engine.n_vocab - 1} or an alternative's text", name="token", value=token
        )
    return token


def _forced_entry(engine: Engine, entry: dict[str, Any] | None, token: int) -> dict[str, Any]:
    """The token record of the chosen token: the parent's log-probability of it when known, marked forced."""
    return {
        "id": token,
        "token": engine.piece(token).decode("utf-8", errors="replace"),
        "logprob": _logprob_of(entry, token),
        "entropy": (entry or {}).get("entropy", math.nan),
        "forced": True,
    }


# The determinism audit ---------------------------------------------------------------------------------


def audit(
    prompt: str,
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    seed: int = 0,
    runs: int = 2,
    conditions: Sequence[str] = CONDITIONS,
    other_prompt: str = OTHER_PROMPT,
    special: bool = False,
    experiment: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    **params: Any,
) -> pd.DataFrame:
    """Generate ``prompt`` ``runs`` times under each condition and compare every text with the first run's.

    One row per condition: ``identical_rate`` (share of its runs with exactly the reference
    tokens), and for the first divergent run the position, both tokens, both top-5 distributions
    and ``near_tie`` (the reference's best two within ``NEAR_TIE`` nats: float noise can swap
    them). Every audit run is recorded (``source="audit"``, tagged ``audit:<id>`` and
    ``condition:<name>``). Temperature 0 (greedy) by default; with sampling the seed is fixed.
    ``special`` parses special-token text in ``prompt`` (a prompt a chat template wrote).
    """
    check_text("prompt", prompt)
    check_text("other_prompt", other_prompt)
    if isinstance(runs, bool) or not isinstance(runs, int) or not 1 <= runs <= 100:
        raise ParameterError(f"runs must be a whole number from 1 to 100, not {runs!r}", name="runs", value=runs)
    chosen = [conditions] if isinstance(conditions, str) else list(conditions)
    unknown = [c for c in chosen if c not in CONDITIONS]
    if unknown or not chosen:
        raise ParameterError(
            f"unknown condition {unknown[0] if unknown else None!r}; conditions: {', '.join(CONDITIONS)}",
            name="conditions",
        )
    values = validate_params({"temperature": 0.0, "max_tokens": 32, **params, "seed": seed, "logprobs": TOP})
    engine = load_engine(model)
    audit_id = uuid.uuid4().hex[:12]
    record = Recorder(get_store(store))

    def job(condition: str, text: str = prompt, job_seed: int = seed) -> Job:
        labels = Labels(experiment, ("audit:" + audit_id, "condition:" + condition), "audit", uuid.uuid4().hex)
        return Job(text, values.model_copy(update={"seed": job_seed}), labels, special=special)

    def once(target: Engine, condition: str, slots: int = 1, before: str | None = None, fresh: bool = True) -> Run:
        if fresh:
            target.scheduler.forget()
        if before is not None:
            generate_many(target, [job(condition + " (other)", before)], record, slots=1)
        fillers = [job(condition + " (filler)", other_prompt, seed + 1 + i) for i in range(slots - 1)]
        return generate_many(target, [job(condition), *fillers], record, slots=slots)[0]

    reference = once(engine, "reference")
    rows = []
    for condition in chosen:
        results = [_under(condition, engine, once, other_prompt) for _ in range(runs)]
        first = next((r for r in results if _first_divergence(_ids(reference), _ids(r)) is not None), None)
        row: dict[str, Any] = {
            "condition": condition,
            "runs": runs,
            "identical_rate": sum(_ids(r) == _ids(reference) for r in results) / runs,
        }
        split = diff(reference, first, store=record.store).fork if first is not None else {}
        row.update(
            {
                "first_divergence": split.get("position"),
                "reference_token": split.get("token_a"),
                "token": split.get("token_b"),
                "reference_top": split.get("top_a"),
                "top": split.get("top_b"),
                "near_tie": split.get("near_tie"),
                "run_id": (first or results[0]).id,
            }
        )
        rows.append(row)
    frame = pd.DataFrame(rows)
    frame.attrs.update({"audit_id": audit_id, "reference_id": reference.id, "prompt": prompt})
    return frame


def _under(condition: str, engine: Engine, once: Callable[..., Run], other_prompt: str) -> Run:
    """One run of the audited request under ``condition`` (the scheduler's settings put back after)."""
    if condition == "alone":
        return once(engine, condition)
    if condition == "prompt cached":
        once(engine, condition + " (warm-up)")
        return once(engine, condition, fresh=False)
    if condition.startswith("batch "):
        return once(engine, condition, slots=int(condition.split()[1]))
    if condition == "no prefix cache":
        sharing, engine.scheduler.share_prefixes = engine.scheduler.share_prefixes, False
        try:
            return once(engine, condition, fresh=False)
        finally:
            engine.scheduler.share_prefixes = sharing
    if condition == "after another prompt":
        return once(engine, condition, before=other_prompt)
    threads = engine.n_threads
    if condition == "other threads":
        threads = 1 if engine.n_threads > 1 else 2
    other = Engine(engine.path, **{**engine.load_args, "n_threads": threads})
    try:
        return once(other, condition)
    finally:
        other.close()
