"""Batched decoding for sweeps: the runs of one prompt advance together, one ``llama_decode`` per step.

The prompt is evaluated once into sequence 0; each run gets its own sequence (a copy of the
prompt's KV cells; see ``plan_batch`` for when they are shared) and its own sampler chain, and
joins the batch by decoding the prompt's last token. Finished runs leave at once and waiting ones take
their place (continuous batching), so the batch stays full.

Timings are per run and wall-clock: a run's clock starts when it joins the batch (the first wave
also waits for the prompt), ``ttft_s`` is the time to its first token, ``total_s`` the time to
its last. Several runs share every decode, so a run's ``tokens_per_s`` is lower than the sweep's
throughput; ``batch_size`` records how many runs shared the batch.

The batch is a deterministic function of the jobs (runs finish after a number of tokens, never
on a timer), so the same sweep gives the same texts. Batched logits can differ from one-at-a-time
logits in the last bits (other matrix shapes, other summation order), so a seed can give a
different text in the two modes.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from . import _llama_log
from ._sampling import SamplerChain
from .engine import Engine
from .errors import ContextOverflowError, GenerationError, ParameterError
from .generation import Cancel, TextStream, build_run, log_softmax, logprob_entry, stopper
from .params import GenerationParams
from .run import Run

# The most sequences decoded together; past this a CPU gains little and the KV cache grows.
MAX_BATCH = 32
# Prompt tokens decoded per llama_decode call while evaluating the prompt.
PROMPT_CHUNK = 512


@dataclass
class BatchJob:
    """One run to make: its parameters (seed included), the fields to record with it, and who hears its text."""

    params: GenerationParams
    fields: dict[str, Any] = field(default_factory=dict)
    on_token: Callable[[str], Any] | None = None


class BatchContext:
    """A llama.cpp context on an engine's model with KV room for several sequences."""

    def __init__(self, engine: Engine, *, n_ctx: int, n_seq: int, n_batch: int, unified: bool) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = n_ctx
        params.n_batch = params.n_ubatch = n_batch
        params.n_seq_max = n_seq
        params.n_threads = params.n_threads_batch = engine.n_threads
        params.kv_unified = unified
        params.no_perf = True
        with _llama_log.capture(engine.logs):
            self.ctx = llama_cpp.llama_init_from_model(engine.llama.model, params)
        if not self.ctx:
            raise GenerationError(f"llama.cpp could not make a context of {n_ctx} tokens for {n_seq} sequences")
        self.n_ctx, self.n_seq, self.n_batch, self.unified = llama_cpp.llama_n_ctx(self.ctx), n_seq, n_batch, unified
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(n_batch, 0, 1)

    def fits(self, n_ctx: int, n_seq: int, n_batch: int, unified: bool) -> bool:
        if self.unified != unified or self.n_batch < n_batch:
            return False
        if unified:
            return self.n_ctx >= n_ctx and self.n_seq >= n_seq
        return self.n_seq == n_seq and self.n_ctx >= n_ctx  # split caches give each sequence n_ctx / n_seq

    def decode(self, entries: Sequence[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, sequence, wants logits) entries."""
        batch = self.batch
        for i, (token, pos, seq, logits) in enumerate(entries):
            batch.token[i] = token
            batch.pos[i] = pos
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = seq
            batch.logits[i] = logits
        batch.n_tokens = len(entries)
        status = llama_cpp.llama_decode(self.ctx, batch)
        if status != 0:
            raise GenerationError(f"llama_decode failed with status {status} (batch of {len(entries)} tokens)")

    def close(self) -> None:
        if self.ctx is not None:
            llama_cpp.llama_batch_free(self.batch)
            llama_cpp.llama_free(self.ctx)
            self.ctx = None


@dataclass
class _Sequence:
    slot: int
    job: BatchJob
    sampler: SamplerChain
    stream: TextStream
    logprobs: list[dict[str, Any]] | None
    next_token: int
    pos: int
    started: float
    first: bool
    ttft: float | None = None
    n_generated: int = 0


@dataclass(frozen=True)
class BatchPlan:
    """How a batch is laid out: how many runs at once, and the KV cache that holds them."""

    size: int
    n_ctx: int
    unified: bool

    @property
    def n_seq(self) -> int:
        return self.size + 1  # sequence 0 holds the prompt


def plan_batch(engine: Engine, n_prompt: int, jobs: Sequence[BatchJob], batch_size: int | None) -> BatchPlan:
    """The batch for ``jobs``; raises before anything runs if the prompt cannot fit.

    A long shared prompt goes into a unified KV cache, where every sequence shares the prompt's
    cells; otherwise each sequence gets a cache of its own (a copy of the prompt), so attention
    only looks at that sequence's cells, which is faster.
    """
    if n_prompt >= engine.n_ctx:
        raise ContextOverflowError(n_prompt, engine.n_ctx)
    if batch_size is not None and batch_size < 1:
        raise ParameterError(f"batch_size must be at least 1, not {batch_size}", name="batch_size", value=batch_size)
    size = min(batch_size or MAX_BATCH, len(jobs))
    longest = max(min(job.params.max_tokens, engine.n_ctx - n_prompt) for job in jobs)
    if n_prompt > longest:
        return BatchPlan(size, n_prompt + size * (longest + 1), unified=True)
    per_sequence = -(-(n_prompt + longest + 1) // 256) * 256
    return BatchPlan(size, per_sequence * (size + 1), unified=False)


def run_batched(
    engine: Engine,
    prompt: str,
    jobs: Sequence[BatchJob],
    *,
    on_finished: Callable[[Run], Any],
    batch_size: int | None = None,
    cancel: Cancel = None,
    load_s: float = 0.0,
    special: bool = False,
    add_bos: bool = True,
) -> None:
    """Generate every job's run of ``prompt``; ``on_finished(run)`` gets each run as soon as it is done.

    ``special`` and ``add_bos`` tokenize the prompt as ``generate`` does (a chat template's text
    holds special tokens and its own BOS).

    On cancel, every unfinished run is handed over as ``cancelled`` and waiting jobs are left
    out. A KeyboardInterrupt or a failure does the same (``error`` for a failure), then re-raises.
    """
    if not jobs:
        return
    for job in jobs:
        engine.check_constraint(job.params)
    should_stop = stopper(cancel)
    with engine.lock:
        prompt_tokens = engine.tokenize(prompt, add_bos=add_bos, special=special)
        n_prompt = len(prompt_tokens)
        plan = plan_batch(engine, n_prompt, jobs, batch_size)
        size = plan.size
        context = engine.batch_context(plan, n_batch=max(size, PROMPT_CHUNK))
        llama_cpp.llama_memory_clear(context.memory, True)
        started = time.perf_counter()
        head = prompt_tokens[:-1]
        for at in range(0, len(head), PROMPT_CHUNK):
            chunk = head[at : at + PROMPT_CHUNK]
            context.decode([(token, at + i, 0, False) for i, token in enumerate(chunk)])

        waiting = deque(jobs)
        free = list(range(size, 0, -1))
        active: dict[int, _Sequence] = {}
        done: list[Run] = []

        def join(now: float) -> None:
            while free and waiting and not should_stop():
                slot, job = free.pop(), waiting.popleft()
                if head:
                    llama_cpp.llama_memory_seq_cp(context.memory, 0, slot, -1, -1)
                params = job.params
                assert params.seed is not None
                active[slot] = _Sequence(
                    slot=slot,
                    job=job,
                    sampler=SamplerChain(params, params.seed, engine.n_vocab, engine.eog_tokens, engine.vocab),
                    stream=TextStream(params.stop),
                    logprobs=[] if params.logprobs is not None else None,
                    next_token=prompt_tokens[-1],
                    pos=n_prompt - 1,
                    started=now,
                    first=job is jobs[0],
                )

        def finish(seq: _Sequence, reason: str, error: str | None = None) -> None:
            del active[seq.slot]
            llama_cpp.llama_memory_seq_rm(context.memory, seq.slot, -1, -1)
            seq.sampler.close()
            free.append(seq.slot)
            seq.stream.finish()
            if seq.job.on_token is not None and (rest := seq.stream.take()):
                seq.job.on_token(rest)
            run = build_run(
                engine,
                prompt,
                seq.job.params,
                text=seq.stream.text,
                finish=reason,
                prompt_tokens=n_prompt,
                n_generated=seq.n_generated,
                ttft=seq.ttft,
                total=time.perf_counter() - seq.started,
                prompt_cached_tokens=0 if seq.first else n_prompt - 1,
                load_s=load_s if seq.first else 0.0,
                error=error,
                token_logprobs=seq.logprobs,
                stop_word=seq.stream.stop_word,
                batch_size=size,
                **seq.job.fields,
            )
            done.append(run)

        def hand_over() -> None:
            """Pass on the runs that finished, after the step: recording one must not stretch the next's clock."""
            while done:
                on_finished(done.pop(0))

        join(started)  # the first wave's clocks include the prompt's evaluation
        try:
            with _llama_log.capture(engine.logs):
                while active:
                    if should_stop():
                        waiting.clear()
                        for seq in [*active.values()]:
                            finish(seq, "cancelled")
                        hand_over()
                        break
                    order = [*active.values()]
                    context.decode([(s.next_token, s.pos, s.slot, True) for s in order])
                    scores = None
                    if any(s.logprobs is not None for s in order):  # one vectorised pass for the whole batch
                        rows = llama_cpp.llama_get_logits(context.ctx)
                        scores = log_softmax(np.ctypeslib.as_array(rows, shape=(len(order), engine.n_vocab)))
                    for i, seq in enumerate(order):
                        _step(engine, context, seq, i, n_prompt, finish, scores)
                    hand_over()
                    join(time.perf_counter())
        except KeyboardInterrupt:
            waiting.clear()
            for seq in [*active.values()]:
                finish(seq, "cancelled")
            hand_over()
            raise
        except Exception as exc:
            waiting.clear()
            for seq in [*active.values()]:
                finish(seq, "error", str(exc))
            hand_over()
            raise


def _step(
    engine: Engine,
    context: BatchContext,
    seq: _Sequence,
    index: int,
    n_prompt: int,
    finish: Callable[[_Sequence, str], None],
    scores: tuple[np.ndarray, np.ndarray] | None,
) -> None:
    """Sample one sequence's next token from row ``index`` of the last decode, and end it when it is done."""
    token = seq.sampler.sample(context.ctx, index)
    if seq.ttft is None:
        seq.ttft = time.perf_counter() - seq.started
    if engine.is_end(token):
        finish(seq, "stop")
        return
    seq.n_generated += 1
    params = seq.job.params
    if seq.logprobs is not None and scores is not None:
        lp, entropy = scores
        seq.logprobs.append(logprob_entry(engine, token, lp[index], entropy[index], params.logprobs or 0))
    hit_stop = seq.stream.add(engine.piece(token))
    if seq.job.on_token is not None and (new := seq.stream.take()):
        seq.job.on_token(new)
    if hit_stop:
        finish(seq, "stop")
    elif seq.n_generated >= params.max_tokens or n_prompt + seq.n_generated >= engine.n_ctx:
        finish(seq, "length")
    else:
        seq.next_token = token
        seq.pos += 1
