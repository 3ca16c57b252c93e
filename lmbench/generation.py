"""``generate``: prompts through the engine's scheduler into recorded ``Run``s."""

from __future__ import annotations

import os
import random
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import llama_cpp

from . import metrics as metrics_mod
from . import tools
from ._prompting import Turn, prepare
from ._version import __version__
from .engine import _environment, _sequence
from .engine._engine import Engine, load_engine
from .engine._scheduler import Request
from .errors import GenerationError, LmbenchError, ParameterError
from .params import MAX_SEED, GenerationParams, check_text, describe_params, validate_params
from .presets import resolve_preset
from .run import Labels, Run
from .store._store import Store, get_store

Cancel = threading.Event | Callable[[], bool] | None


def random_seed() -> int:
    """A fresh seed that llama.cpp will take literally."""
    return random.SystemRandom().randint(0, MAX_SEED)


def build_run(
    engine: Engine,
    prompt: str,
    params: GenerationParams,
    *,
    text: str,
    finish: str,
    prompt_tokens: int,
    n_generated: int,
    ttft: float | None,
    total: float,
    labels: Labels,
    asked: str | None = None,
    resumed: int = 0,
    **measured: Any,
) -> Run:
    """A ``Run`` from what one generation produced (``prompt`` as sent, ``asked`` as typed when it differs),
    with its labels, the engine's facts, library versions and environment (``resumed``: tokens of
    ``n_generated`` that a fork started with, not decoded here)."""
    new = n_generated - resumed
    run_id = labels.run_id or uuid.uuid4().hex
    return Run(
        id=run_id,
        created_at=datetime.now(timezone.utc),
        prompt=prompt if asked is None else asked,
        prompt_sent=prompt,
        text=text,
        params=params,
        model_path=str(engine.path),
        model_name=engine.name,
        model_size=engine.size,
        model_sha256=engine.sha256,
        finish_reason=finish,
        prompt_tokens=prompt_tokens,
        completion_tokens=n_generated,
        ttft_s=ttft,
        total_s=total,
        tokens_per_s=(new - 1) / (total - ttft) if ttft is not None and new > 1 else None,
        n_ctx=engine.n_ctx,
        n_threads=engine.n_threads,
        lora=engine.lora or None,
        lora_scale=next(iter(engine.lora.values())) if len(engine.lora) == 1 else None,
        lmbench_version=__version__,
        llama_cpp_version=llama_cpp.__version__,
        environment=_environment.current(),
        environment_facts=_environment.facts(),
        tool_calls=tools.parse_calls(text, run_id) if labels.tools else None,
        **labels.fields(),
        **measured,
    )


def stopper(cancel: Cancel) -> Callable[[], bool]:
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    return cancel


@dataclass
class Job:
    """One run to make: the prompt as sent, its parameters, the fields recorded with it, who hears its text."""

    prompt: str
    params: GenerationParams
    labels: Labels = field(default_factory=Labels)
    on_token: Callable[[str], Any] | None = None
    special: bool = False  # parse special-token text in the prompt (chat templates write them as text)
    add_bos: bool = True
    asked: str | None = None  # the prompt as typed, when the chat template changed it (recorded as the prompt)
    extra_stop: tuple[str, ...] = ()  # the chat template's stop strings: used, not recorded (chat_format implies them)

    @classmethod
    def of(
        cls, turn: Turn, params: GenerationParams, labels: Labels, on_token: Callable[[str], Any] | None = None
    ) -> Job:
        """The job for a prepared turn: its text as sent, its template's stops, what it records."""
        if turn.chat_format is not None:
            labels = replace(labels, messages=turn.messages, chat_format=turn.chat_format)
        extra = tuple(s for s in turn.stop if s and s not in params.stop)
        return cls(turn.sent, params, labels, on_token, asked=turn.asked, extra_stop=extra, **turn.tokenize_options)

    @property
    def decoding_params(self) -> GenerationParams:
        """The parameters the sequence decodes with: the template's stop strings added."""
        if not self.extra_stop:
            return self.params
        return self.params.model_copy(update={"stop": (*self.params.stop, *self.extra_stop)})


@dataclass
class Continuation(Job):
    """A job that goes on from tokens as if it had generated them after its prompt (a fork), with their records."""

    tokens: list[int] = field(default_factory=list)
    entries: list[dict[str, Any]] = field(default_factory=list)


def generate_many(
    engine: Engine,
    jobs: Sequence[Job],
    recorder: Recorder | None = None,
    *,
    cancel: Cancel = None,
    slots: int | None = None,
) -> list[Run]:
    """Generate ``jobs`` together through the engine's scheduler; the one way every door makes runs.

    Each run that started is handed to ``recorder`` (scored and stored) as soon as it ends, and the
    runs are returned in job order; jobs cancelled before they started make no run. ``slots`` asks
    for that many sequence slots, sized for these jobs, when the scheduler is idle (else the
    engine's ``parallel`` slots of its whole context). The first run made after the engine was
    loaded carries the load time. One error policy, after every finished run is recorded: a
    KeyboardInterrupt or an lmbench error is raised as it is, anything else as a ``GenerationError``.
    """
    runs, interruption = _execute(engine, jobs, on_finished=recorder, cancel=cancel, slots=slots)
    if interruption is not None:
        raise _policy(interruption, runs)
    return [run for run in runs if run is not None]


def _policy(interruption: BaseException, runs: Sequence[Run | None]) -> BaseException:
    """What a caller hears of an interruption: the user's Ctrl-C and lmbench's own errors as they are,
    a foreign failure (llama.cpp, a callback) as a ``GenerationError`` that says how far it got."""
    if isinstance(interruption, KeyboardInterrupt | LmbenchError):
        return interruption
    tokens = sum(run.completion_tokens for run in runs if run is not None)
    failure = GenerationError(f"generation failed after {tokens} tokens: {interruption}")
    failure.__cause__ = interruption
    return failure


def _execute(
    engine: Engine,
    jobs: Sequence[Job],
    *,
    on_finished: Callable[[Run], Any] | None = None,
    cancel: Cancel = None,
    slots: int | None = None,
) -> tuple[list[Run | None], BaseException | None]:
    """Generate every job, handing each run that started to ``on_finished`` as it ends: each job's run
    (``None`` for one cancelled before it started) and what interrupted the work, if anything."""
    should_stop = stopper(cancel)
    tokenized: dict[tuple[str, bool, bool], list[int]] = {}
    requests: list[Request] = []
    runs: list[Run | None] = [None] * len(jobs)
    for job in jobs:
        engine.check_constraint(job.params)
    for job in jobs:
        if job.params.seed is None:
            job.params = job.params.model_copy(update={"seed": random_seed()})
        key = (job.prompt, job.special, job.add_bos)
        tokens = tokenized.get(key)
        if tokens is None:
            tokens = tokenized[key] = engine.tokenize(job.prompt, add_bos=job.add_bos, special=job.special)
        sequence = _sequence.Sequence(
            job.decoding_params,
            n_prompt=len(tokens),
            n_ctx=engine.n_ctx,
            piece=engine.piece,
            end_tokens=engine.eog_tokens,
            on_token=job.on_token,
        )
        resumed = job.tokens if isinstance(job, Continuation) else []
        if isinstance(job, Continuation):
            sequence.resume(resumed, job.entries)
        sampler = (job.params, job.params.seed, engine.n_vocab, engine.eog_tokens, engine.vocab, resumed)
        requests.append(Request([*tokens, *resumed], sequence, sampler, should_stop))
    if slots is not None and requests:
        longest = max(len(r.tokens) + r.sequence.params.max_tokens for r in requests)
        for request in requests:
            request.layout = (slots, -(-longest // 256) * 256)
    first = requests[0] if requests else None
    load_s = engine.claim_load_s() if requests else 0.0

    position = {id(r): i for i, r in enumerate(requests)}

    def done(request: Request) -> None:
        if not request.admitted:
            return
        i = position[id(request)]
        run = runs[i] = _finished_run(engine, jobs[i], request, load_s if request is first else 0.0)
        if on_finished is not None:
            on_finished(run)

    for request in requests:
        request.on_done = done
    interruption: BaseException | None = None
    engine.scheduler.submit(requests)
    try:
        engine.scheduler.run(requests)
    except KeyboardInterrupt as exc:
        interruption = exc
    failure = next((r.failure for r in requests if r.failure is not None), None)
    return runs, interruption or failure


def _finished_run(engine: Engine, job: Job, request: Request, load_s: float) -> Run:
    sequence = request.sequence
    resumed = len(job.tokens) if isinstance(job, Continuation) else 0
    slots, n_batch, kv_cache_type = request.context or (None, None, None)
    return build_run(
        engine,
        job.prompt,
        job.params,
        text=sequence.stream.text,
        finish=sequence.finish_reason or "error",
        prompt_tokens=len(request.tokens) - resumed,
        n_generated=sequence.n_generated,
        resumed=resumed,
        slots=slots,
        n_batch=n_batch,
        kv_cache_type=kv_cache_type,
        ttft=sequence.ttft,
        total=sequence.total,
        prompt_cached_tokens=request.cached,
        batch_size=max(request.batch_size, 1),
        labels=job.labels,
        asked=job.asked,
        load_s=load_s,
        error=sequence.error,
        token_logprobs=sequence.logprobs,
        stop_word=sequence.stream.stop_word,
    )


@dataclass
class Recorder:
    """The one place runs are recorded: measured with ``metrics`` (the registered run metrics when
    None), written to ``store``, then handed to ``on_run``."""

    store: Store
    metrics: Sequence[metrics_mod.Metric] | None = None
    on_run: Callable[[Run], Any] | None = None

    @classmethod
    def to(cls, store: str | os.PathLike[str] | Store | None = None) -> Recorder:
        """A recorder into ``store`` (a path, a ``Store``, or None for the current store)."""
        return cls(get_store(store))

    def __call__(self, run: Run) -> Run:
        """Score and record ``run``; a scorer interrupted (Ctrl-C) or failing still leaves the run recorded."""
        try:
            run.metrics = metrics_mod.compute(run, self.metrics)
        except BaseException:
            self.store.record(run)  # the generation is never lost to its scores
            raise
        self.store.record(run)
        if self.on_run is not None:
            self.on_run(run)
        return run


def generate(
    prompt: str,
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    raw: bool = False,
    system: str | None = None,
    experiment: str | None = None,
    tags: list[str] | None = None,
    on_token: Callable[[str], Any] | None = None,
    cancel: Cancel = None,
    preset: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    source: str = "python",
    run_id: str | None = None,
    **params: Any,
) -> Run:
    """Generate a reply to ``prompt``, record it in the run store, and return the ``Run``.

    An instruct model (one with a chat template) gets ``prompt`` as a user message through its
    template, after ``system`` as the system message when given; a base model, or ``raw=True``,
    continues the text as it is (``lmbench._prompting``: one rule for every door). ``run.prompt``
    is the text as given, ``run.prompt_sent`` what the model continued, ``run.chat_format`` which
    way it went. ``on_token(text)`` receives each new piece of text as it is generated; ``cancel``
    (a ``threading.Event`` or a callable returning True) stops between tokens. Cancelled and
    interrupted runs are recorded with ``finish_reason="cancelled"`` and the text so far; a
    KeyboardInterrupt is re-raised after recording. ``preset`` names saved parameter values
    that explicit parameters override. ``run_id`` records the run under a fixed id.

    Generation parameters:
    """
    check_text("prompt", prompt)
    if not isinstance(raw, bool):
        raise ParameterError(f"raw must be True or False, got {raw!r}", name="raw", value=raw)
    labels = Labels.checked(experiment, tags, source, run_id)
    values = validate_params({**resolve_preset(preset), **params})
    engine = load_engine(model)
    turn = prepare(engine, prompt, raw=raw, system=system)
    return complete(engine, Job.of(turn, values, labels, on_token), recorder=Recorder.to(store), cancel=cancel)


def complete(engine: Engine, job: Job, *, recorder: Recorder, cancel: Cancel = None) -> Run:
    """Generate and record one job with ``generate_many``'s error policy; a job cancelled or interrupted
    before it started is recorded too (cancelled, no text), so a single request always leaves its run."""
    (run,), interruption = _execute(engine, [job], on_finished=recorder, cancel=cancel)
    if run is None:
        tokens = engine.tokenize(job.prompt, add_bos=job.add_bos, special=job.special)
        run = recorder(
            build_run(
                engine,
                job.prompt,
                job.params,
                text="",
                finish="cancelled",
                prompt_tokens=len(tokens),
                n_generated=0,
                ttft=None,
                total=0.0,
                labels=job.labels,
                asked=job.asked,
            )
        )
    if interruption is not None:
        raise _policy(interruption, [run])
    return run


generate.__doc__ = (generate.__doc__ or "") + "\n" + describe_params()
