"""One decoder per loaded model: every generation is a request to its scheduler, decoded in batches.

The scheduler owns a llama.cpp context with a number of sequence slots, each with its own KV
stream. Requests (a prompt's tokens, parameters and seed, a streaming callback, a cancel) wait in
a queue and join the running batch at every step (continuous batching): one ``llama_decode``
carries the next token of every generating sequence plus chunks of newly admitted prompts, so a
long prompt does not freeze the other streams. A prompt that starts with tokens already in a
slot's cache (the same prompt again, a shared instruction or system prompt) reuses them: in place
when that slot is free, else copied from the slot that holds them; ``cached`` says how many.

Speculative decoding happens in the same batch: a sequence that asks for it (``draft``) adds the
tokens its drafter proposes after its next token, and the decode that carries the other sequences'
tokens verifies them. Its sampler then samples at each position in turn, as plain decoding would,
and the run keeps drafted tokens only while they equal what was sampled (llama.cpp's
``common_sampler_sample_and_accept_n``); the first that differs is replaced by the sampled token and
the cells after it are dropped. A draft (prompt lookup, or a draft model's greedy tokens) is a
function of the tokens before it, so this is exactly speculative sampling with rejection: at temperature 0 the text is
the plain one, above it the distribution is (and with the same seed, the same random draws are used).

Scored sequences (teacher-forced, no sampling) alone in a decode are fed in lockstep: llama.cpp
splits a batch over separate KV streams into ubatches of equal tokens per consecutive slot, so
short sequences are padded past their end and idle slots filled, and the decode stays one ubatch
(a multiple-choice batch 1.7x faster; every sequence's scores are those it gets alone).

Whoever waits for a request drives the decoding (one thread at a time, no scheduler thread of
its own): concurrent callers (API requests) share one batch. Each ``llama_decode`` itself runs on
the context's decode thread, so llama.cpp's helper threads stay the same whoever drives
(``_native.Context``). The layout (slots x cells per slot) is chosen when the scheduler is idle: the
engine's ``parallel`` slots of its full context, or what a sweep asks for.

The texts of a sweep are a function of the sweep (its requests are queued at once, in its
order); with concurrent callers, the batch a request shares depends on arrival times, and batched
logits can differ from one-at-a-time ones in the last bits, so a seed's text can differ too.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

import llama_cpp
import numpy as np

from ..errors import ContextOverflowError, GenerationError, ParameterError
from . import _sequence
from ._drafting import DecodeCosts, DraftModel, ModelDrafter, NgramDrafter, draft_length
from ._native import Context, Entry
from ._sampling import SamplerChain
from ._scoring import Scoring
from ._sequence import log_softmax
from ._threads import Threads

# Tokens per llama_decode: generating sequences first, then prompt chunks.
N_BATCH = 512
# Shared tokens always worth copying another slot's cells for (a copy moves the whole stream); fewer
# are worth it only when they are the whole prompt.
MIN_SHARED = 8
# Rows of logits scored at once (a row is n_vocab floats).
SCORE_ROWS = 64
# What one llama.cpp ubatch costs beyond its tokens, in tokens' worth (reading every weight once): the
# exchange rate for padding scored sequences to one shape (see ``_lockstep``).
UBATCH_TOKENS = 32
# How long a thread waiting for its turn to drive sleeps between looks, in seconds: a safety net only,
# since every hand-over and finished request wakes the waiters (a short one woke up to --parallel
# threads many times a second, taking CPU from llama.cpp's).
_WAKE_S = 1.0
# How much more a lockstep decode must score per cost than feeding sequences as they come.
LOCKSTEP_GAIN = 1.1
# Logits a step's sampling must cover (sequences x vocabulary) before half of it goes to the decode thread:
# a hand-over costs tens of microseconds, one sequence over a 49,152-token vocabulary about 0.4 ms.
SPLIT_SAMPLING = 200_000


@dataclass(eq=False)
class Request:
    """One generation asked of the scheduler, and (once ``done``) what came of it.

    With ``scoring`` it is a teacher-forced sequence instead: ``tokens`` are fed (all but the
    sequence's last), nothing is sampled, and the logits from ``scoring.first`` on go to ``scoring``;
    ``sequence`` then only keeps the clock and how the request ended.
    """

    tokens: list[int]
    sequence: _sequence.Sequence
    sampler_args: tuple[Any, ...]  # SamplerChain(*sampler_args), made when the request is admitted
    cancel: Callable[[], bool] = lambda: False
    on_done: Callable[[Request], Any] | None = None
    layout: tuple[int, int] | None = None  # (slots, cells per slot) a batch of requests would like
    admitted: bool = False
    done: bool = False
    cached: int = 0  # prompt tokens that came from the KV cache
    batch_size: int = 0  # the most sequences that shared a decode with this one
    context: tuple[int, int, str] | None = None  # the slots, tokens per decode and KV cache type it ran with
    failure: BaseException | None = None
    scoring: Scoring | None = None
    drafted: int = 0  # tokens drafted for speculative decoding
    accepted: int = 0  # drafted tokens that were kept

    @property
    def reusable(self) -> int:
        """How many leading tokens may come from a cache: all but the last (decoded for its logits), and
        for a scored sequence none from the position whose logits predict its first scored token."""
        last = len(self.tokens) - 1
        return last if self.scoring is None else min(last, self.scoring.first)


@dataclass(eq=False)
class _Slot:
    index: int
    cells: list[int] = field(default_factory=list)  # the tokens whose KV cells this slot holds, from position 0
    request: Request | None = None
    sampler: SamplerChain | None = None
    fed: int = 0  # prompt tokens in the cache so far
    next_token: int = -1  # the sampled token to decode next (once the prompt is in)
    drafter: NgramDrafter | None = None  # speculative decoding's drafts, for a request that asks for them
    unverified: int = -1  # the first token of a draft not worth verifying this decode (checked when sampled)


class Scheduler:
    """Batched decoding for one loaded model (see the module's text)."""

    def __init__(
        self,
        model: llama_cpp.llama_model_p,
        *,
        n_ctx: int,
        threads: Threads,
        n_vocab: int,
        end_tokens: Collection[int],
        kv_bytes_per_cell: int,
        logs: collections.deque[str],
        parallel: int = 1,
        adapters: Sequence[tuple[llama_cpp.llama_adapter_lora_p, float]] = (),
    ) -> None:
        self.adapters = adapters  # LoRA adapters and scales, set on each context made
        self._model, self.n_ctx, self.threads, self.n_vocab = model, n_ctx, threads, n_vocab
        self.end_tokens, self.kv_bytes_per_cell, self.logs = end_tokens, kv_bytes_per_cell, logs
        self.parallel = parallel
        self.share_prefixes = True  # off: every prompt is evaluated whole (for comparisons)
        self.draft_models: dict[str, DraftModel] = {}  # by the ``draft`` value that names them (the engine loads them)
        self._context: Context | None = None
        self._costs = DecodeCosts()  # the context's decode times by size, for sizing drafts
        self._slots: list[_Slot] = []
        self._queue: collections.deque[Request] = collections.deque()
        self._cond = threading.Condition()
        self._driver: int | None = None
        self._in_step = False

    # Asking ------------------------------------------------------------------------------------

    def submit(self, requests: Sequence[Request]) -> None:
        """Queue ``requests`` together, in order; raises before queueing any that cannot fit."""
        for request in requests:
            if len(request.tokens) >= self.n_ctx:
                raise ContextOverflowError(len(request.tokens), self.n_ctx)
            if not request.tokens:
                raise ParameterError("a prompt must have at least one token", name="prompt")
        with self._cond:
            self._queue.extend(requests)

    def run(self, requests: Sequence[Request]) -> None:
        """Decode until every one of ``requests`` is done (driving the batch while it is this thread's turn).

        On KeyboardInterrupt the requests end as cancelled (with what they had), then it is re-raised.
        """
        try:
            self._drive_until(requests)
        except KeyboardInterrupt:
            for request in requests:
                request.cancel = _yes
            self._drive_until(requests)
            raise

    @property
    def queued(self) -> int:
        return len(self._queue)

    def status(self) -> dict[str, Any]:
        """Slots, how many are busy, requests waiting, and the KV cache's size."""
        context = self._context
        slots = context.slots if context else 0
        per_slot = context.per_slot if context else 0
        return {
            "parallel": self.parallel,
            "slots": slots,
            "cells_per_slot": per_slot,
            "busy": sum(s.request is not None for s in self._slots),
            "queued": len(self._queue),
            "kv_cache_bytes": slots * per_slot * self.kv_bytes_per_cell,
        }

    # Driving -----------------------------------------------------------------------------------

    def _drive_until(self, requests: Sequence[Request]) -> None:
        while True:
            with self._cond:
                while self._driver is not None and not all(r.done for r in requests):
                    self._cond.wait(_WAKE_S)
                if all(r.done for r in requests):
                    return
                self._driver = threading.get_ident()
            try:
                while not all(r.done for r in requests):
                    if not self._step():
                        raise GenerationError("the scheduler stalled with requests waiting")
            finally:
                if self._in_step:  # a step was interrupted half-way: no running sequence's state can be trusted
                    self._in_step = False
                    self._end_all("cancelled")
                with self._cond:
                    self._driver = None
                    self._cond.notify_all()

    def _step(self) -> bool:
        """Admit what fits, decode one batch, sample, and hand over finished requests. False if nothing moved."""
        self._in_step = True
        finished: list[Request] = []
        moved = self._admit(finished)
        context = self._context
        active = [s for s in self._slots if s.request is not None]
        if context is None or not active:
            self._in_step = False
            self._hand_over(finished)
            return moved or bool(finished)
        entries: list[Entry] = []
        sampled: list[tuple[_Slot, int, list[int]]] = []  # a slot, its first entry with logits, its draft
        budget = context.n_batch - sum(s.next_token >= 0 for s in active)
        for slot in active:
            if slot.next_token >= 0:
                draft = self._draft(slot, context, budget, context.n_batch - budget)
                budget -= len(draft)
                sampled.append((slot, len(entries), draft))
                at = len(slot.cells)
                entries.append((slot.next_token, at, slot.index, True))
                entries.extend((t, at + 1 + i, slot.index, True) for i, t in enumerate(draft))
        feeding: list[tuple[_Slot, list[int]]] = []
        scored: list[tuple[_Slot, range, bool]] = []  # scoring slots: the entries whose logits they take
        padded: list[_Slot] = []  # slots given cells past their tokens, dropped after the decode
        width = 0 if sampled else self._lockstep(active, context, budget)
        for slot in self._slots[active[0].index : active[-1].index + 1] if width else ():
            if slot.request is None:  # an idle slot between scored ones: filler, so the ubatch stays whole
                entries.extend((0, len(slot.cells) + i, slot.index, False) for i in range(width))
                padded.append(slot)
                continue
            scoring, tokens, start = slot.request.scoring, slot.request.tokens, slot.fed
            assert scoring is not None
            chunk = tokens[start : start + width]
            last = start + len(chunk) == len(tokens)
            base = len(entries)
            entries.extend((t, start + i, slot.index, start + i >= scoring.first) for i, t in enumerate(chunk))
            scored.append((slot, range(base + max(scoring.first - start, 0), len(entries)), last))
            if len(chunk) < width:
                entries.extend((chunk[-1], start + i, slot.index, False) for i in range(len(chunk), width))
                padded.append(slot)
            feeding.append((slot, chunk))
        for slot in () if width else active:
            assert slot.request is not None
            if slot.next_token >= 0 or budget <= 0:
                continue
            tokens = slot.request.tokens
            if slot.request.scoring is not None and entries and not sampled and len(tokens) - slot.fed > budget:
                continue  # a piece of it would make llama.cpp split the batch into short ubatches: next decode
            chunk = tokens[slot.fed : slot.fed + budget]
            last = slot.fed + len(chunk) == len(tokens)
            start = slot.fed
            scoring = slot.request.scoring
            if scoring is None:
                entries.extend((t, start + i, slot.index, last and i == len(chunk) - 1) for i, t in enumerate(chunk))
                if last:
                    sampled.append((slot, len(entries) - 1, []))
            else:
                base = len(entries)
                entries.extend((t, start + i, slot.index, start + i >= scoring.first) for i, t in enumerate(chunk))
                scored.append((slot, range(base + max(scoring.first - start, 0), len(entries)), last))
            feeding.append((slot, chunk))
            budget -= len(chunk)
        try:
            started = time.perf_counter()
            context.decode(entries)
            self._costs.add(len(entries), time.perf_counter() - started)
        except GenerationError as exc:
            self._in_step = False
            self._end_all("error", exc)
            return True
        for slot, chunk in feeding:
            slot.cells.extend(chunk)
            slot.fed += len(chunk)
        for slot in padded:
            context.forget(slot.index, len(slot.cells))
        for slot, wanted, last in scored:
            request = slot.request
            assert request is not None and request.scoring is not None
            request.batch_size = max(request.batch_size, len(active))
            for at in range(0, len(wanted), SCORE_ROWS):
                rows = wanted[at : at + SCORE_ROWS]
                request.scoring.add(context.logit_rows(rows, self.n_vocab))
            if last:
                request.sequence.end("stop")
                finished.append(self._release(slot))
        scores = self._scores(context, sampled)
        firsts = self._first_tokens(context, sampled)
        for n, (slot, index, draft) in enumerate(sampled):
            request = slot.request
            assert request is not None and slot.sampler is not None
            if slot.next_token >= 0:
                slot.cells.append(slot.next_token)
            request.batch_size = max(request.batch_size, len(active))
            kept, ended = self._verify(slot, context, index, draft, scores, firsts[n] if firsts else None)
            if draft:
                request.drafted += len(draft)
                request.accepted += kept
                if slot.drafter is not None:
                    slot.drafter.kept(len(draft), kept)
                slot.cells.extend(draft[:kept])
                context.forget(slot.index, len(slot.cells))  # the cells of the drafted tokens not kept
            if ended:
                finished.append(self._release(slot))
        for slot in active:
            if slot.request is not None and slot.request.cancel():
                slot.request.sequence.end("cancelled")
                finished.append(self._release(slot))
        self._in_step = False
        self._hand_over(finished)
        return True

    def _lockstep(self, active: list[_Slot], context: Context, budget: int) -> int:
        """Tokens per slot for a decode of scored sequences only, fed in lockstep (0: feed them as they come).

        With a KV stream per slot, llama.cpp splits a batch into ubatches of consecutive slots with equal
        tokens each, and every ubatch reads all the weights: a multiple-choice batch (contexts and one-token
        continuations of every length) would be many ubatches. So each slot from the first active one to the
        last gets exactly ``width`` entries: its next tokens, padded past its end (and idle slots filled) with
        cells that nothing attends to and that are dropped after. ``width`` is the one that scores the most
        tokens per cost, a ubatch costing ``UBATCH_TOKENS`` beyond its entries; 0 when feeding the sequences
        as they come costs less (long windows of a perplexity, two a decode, are one ubatch already).
        """
        if len(active) < 2 or any(s.request is None or s.request.scoring is None for s in active):
            return 0
        span = self._slots[active[0].index : active[-1].index + 1]
        left = {s.index: len(s.request.tokens) - s.fed for s in active if s.request is not None}
        if min(left.values()) < 1:
            return 0
        natural = self._natural(active, left, budget)
        tokens = sum(n for _, n in natural)
        # Lockstep must win clearly: at equal cost, fewer streams a ubatch are faster (two whole windows beat
        # sixteen pieces of them).
        best, width = LOCKSTEP_GAIN * tokens / (UBATCH_TOKENS * _ubatches(natural) + tokens), 0
        for w in sorted({min(n, budget // len(span)) for n in left.values()}):
            padded = [s for s in span if left.get(s.index, 0) < w]  # idle slots and the shorter sequences
            if w < 1 or any(len(s.cells) + w > context.per_slot for s in padded):
                continue
            value = sum(min(n, w) for n in left.values()) / (UBATCH_TOKENS + w * len(span))
            if value > best:
                best, width = value, w
        return width

    @staticmethod
    def _natural(active: list[_Slot], left: dict[int, int], budget: int) -> list[tuple[int, int]]:
        """The (slot, tokens) a decode feeds scored sequences as they come: whole, while the batch has room."""
        fed: list[tuple[int, int]] = []
        for slot in active:
            n = left[slot.index]
            if budget <= 0 or (fed and n > budget):
                continue
            fed.append((slot.index, min(n, budget)))
            budget -= fed[-1][1]
        return fed

    def _draft(self, slot: _Slot, context: Context, budget: int, carried: int) -> list[int]:
        """The tokens to try after ``slot``'s next one: at most ``draft_max``, the tokens the run may still
        make less one, the cells left and the batch's ``budget``; none when fewer than ``draft_min``.

        Unless ``draft_min`` is set, a prompt-lookup draft is cut to the length worth verifying in a
        decode that already carries ``carried`` entries (``_drafting.draft_length``); one not tried
        leaves its first token in ``slot.unverified``, checked against the token sampled.
        """
        request, drafter = slot.request, slot.drafter
        slot.unverified = -1
        if drafter is None or request is None:
            return []
        sequence = request.sequence
        params = sequence.params
        limit = min(
            params.draft_max,
            params.max_tokens - sequence.n_generated - 1,
            sequence.n_ctx - sequence.n_prompt - sequence.n_generated - 1,
            context.per_slot - len(slot.cells) - 1,
            budget,
        )
        priced = params.draft_min == 0 and not isinstance(drafter, ModelDrafter)
        draft = drafter.draft(limit, max(params.draft_min, 1), spanned=not priced)
        if draft and priced:
            length = draft_length(self._costs, carried, drafter.rate, len(draft))
            if length == 0:
                slot.unverified = draft[0]
            draft = draft[:length]
        return draft

    def _first_tokens(self, context: Context, sampled: list[tuple[_Slot, int, list[int]]]) -> list[int]:
        """The token each sampled sequence takes at its first entry, when the batch is large enough to sample
        half of them on the context's decode thread (llama.cpp's samplers let go of the GIL, and the decode
        thread and a second core sit idle between decodes); else none, and ``_verify`` samples them."""
        if len(sampled) < 2 or len(sampled) * self.n_vocab < SPLIT_SAMPLING or context.threads.current < 2:
            return []
        jobs = [(slot.sampler, index) for slot, index, _ in sampled if slot.sampler is not None]
        if len(jobs) < len(sampled):
            return []
        half = len(jobs) // 2
        theirs = context.beside(_sample_each, context.pointer, jobs[half:])
        try:
            mine = _sample_each(context.pointer, jobs[:half])
        finally:
            rest = theirs()
        return mine + rest

    def _verify(
        self,
        slot: _Slot,
        context: Context,
        index: int,
        draft: list[int],
        scores: dict[int, tuple[np.ndarray, float]],
        first: int | None = None,
    ) -> tuple[int, bool]:
        """Sample at ``index`` (unless ``first`` was sampled there already) and on through the draft while the
        sampled token is the drafted one; the run takes every sampled token. Returns how many drafted tokens
        were kept and whether the run ended."""
        request, sampler = slot.request, slot.sampler
        assert request is not None and sampler is not None
        for k in range(len(draft) + 1):
            token = first if k == 0 and first is not None else sampler.sample(context.pointer, index + k)
            if slot.unverified >= 0 and slot.drafter is not None:  # the draft not tried: was it right?
                slot.drafter.kept(1, int(token == slot.unverified))
                slot.unverified = -1
            try:
                ended = request.sequence.accept(token, scores.get(index + k))
            except Exception as exc:  # noqa: BLE001 - a callback failed: that run ends, the others go on
                request.failure = exc
                ended = request.sequence.end("error", f"{type(exc).__name__}: {exc}")
            if ended:
                return k, True
            if slot.drafter is not None:
                slot.drafter.add(token)
            if k == len(draft) or token != draft[k]:
                slot.next_token = token
                return k, False
        raise AssertionError("unreachable: the loop returns at its last position")

    def _scores(
        self, context: Context, sampled: list[tuple[_Slot, int, list[int]]]
    ) -> dict[int, tuple[np.ndarray, float]]:
        """Log-probabilities and entropies at every sampled entry of the sequences that record them (one
        vectorised pass), by entry."""
        wanted = [
            i + k
            for s, i, draft in sampled
            if s.request is not None and s.request.sequence.wants_logits
            for k in range(len(draft) + 1)
        ]
        if not wanted:
            return {}
        lp, entropy = log_softmax(np.stack([context.logits(i, self.n_vocab) for i in wanted]))
        return {i: (lp[k], float(entropy[k])) for k, i in enumerate(wanted)}

    def _hand_over(self, finished: list[Request]) -> None:
        """Mark requests done and pass them on, after the step: recording one must not stretch the next's clock."""
        for request in finished:
            request.done = True
            if request.on_done is not None:
                try:
                    request.on_done(request)
                except Exception as exc:  # noqa: BLE001 - the caller re-raises it
                    request.failure = request.failure or exc
        if finished:
            with self._cond:
                self._cond.notify_all()

    # Slots -------------------------------------------------------------------------------------

    def _admit(self, finished: list[Request]) -> bool:
        """Move waiting requests into free slots (rebuilding the context when idle and it does not fit)."""
        moved = False
        with self._cond:
            gone = [r for r in self._queue if r.cancel()]
            for request in gone:  # waiting requests whose caller went away
                self._queue.remove(request)
                request.sequence.end("cancelled")
                finished.append(request)
        while True:
            with self._cond:
                if not self._queue:
                    return moved or bool(gone)
                request = self._queue[0]
                need = min(len(request.tokens) + request.sequence.params.max_tokens, self.n_ctx)
                slots, per_slot = request.layout or (self.parallel, self.n_ctx)
                layout = (slots, min(max(per_slot, need), self.n_ctx))
                context = self._context
                if not any(s.request is not None for s in self._slots):
                    if context is None or (context.slots, context.per_slot) != layout:
                        self._rebuild(layout)
                elif context is None or context.per_slot < need:
                    return moved or bool(gone)
                free = [s for s in self._slots if s.request is None]
                if not free or self._sharing_soon(request):
                    return moved
                self._queue.popleft()
            self._place(request, free)
            moved = True
            if request.done:
                finished.append(request)

    def _sharing_soon(self, request: Request) -> bool:
        """Whether a prompt being evaluated now will give ``request`` more to share than the cache holds:
        then it waits a step, and the prompt is evaluated once for both."""
        if not self.share_prefixes:
            return False
        tokens = request.tokens
        limit = request.reusable
        now = max((_shared(s.cells, tokens, limit) for s in self._slots), default=0)
        coming = max(
            (
                _shared(s.request.tokens, tokens, limit)
                for s in self._slots
                if s.request is not None and s.next_token < 0
            ),
            default=0,
        )
        return coming > now and _worth_sharing(coming, limit)

    def _rebuild(self, layout: tuple[int, int]) -> None:
        slots, per_slot = layout
        if self._context is not None:
            self._context.close()
            self._context = None
        self._slots = []
        self._context = Context(
            self._model,
            slots=slots,
            per_slot=per_slot,
            n_batch=max(N_BATCH, slots),
            threads=self.threads,
            logs=self.logs,
            adapters=self.adapters,
        )
        self._slots = [_Slot(i) for i in range(slots)]
        self._costs = DecodeCosts()

    def _place(self, request: Request, free: list[_Slot]) -> None:
        """Put ``request`` in a free slot, reusing the longest cached prefix of its prompt."""
        context = self._context
        assert context is not None
        tokens = request.tokens

        lengths = {
            s.index: _shared(s.cells, tokens, request.reusable) if self.share_prefixes else 0 for s in self._slots
        }

        def shared(slot: _Slot) -> int:
            return lengths[slot.index]

        best_free = max(free, key=shared)
        source = max(self._slots, key=shared)
        slot, keep = best_free, shared(best_free)
        if source is not best_free and shared(source) > keep and _worth_sharing(shared(source), request.reusable):
            slot = min(free, key=lambda s: len(s.cells))
            keep = shared(source)
            context.copy_sequence(source.index, slot.index, keep)
            slot.cells = source.cells[:keep]
        else:
            context.forget(slot.index, keep)
            del slot.cells[keep:]
        try:
            sampler = None if request.scoring is not None else SamplerChain(*request.sampler_args)
        except ParameterError as exc:
            request.failure = exc
            request.sequence.end("error", str(exc))
            request.done = True
            with self._cond:  # its caller may be waiting for another thread's turn to drive
                self._cond.notify_all()
            return
        request.admitted, request.cached = True, keep
        request.sequence.cached = keep
        request.context = (context.slots, context.n_batch, context.kv_cache_type)
        request.sequence.restart_clock()
        slot.request, slot.sampler, slot.fed, slot.next_token = request, sampler, keep, -1
        draft = None if request.scoring is not None else request.sequence.params.draft
        slot.drafter = None
        if draft == "ngram":
            slot.drafter = NgramDrafter(tokens)
        elif draft is not None:
            drafting = self.draft_models[draft]
            drafting.fit(context.slots, context.per_slot, context.n_batch)
            slot.drafter = ModelDrafter(drafting, slot.index, tokens)

    def _release(self, slot: _Slot) -> Request:
        request = slot.request
        assert request is not None
        if slot.sampler is not None:
            slot.sampler.close()
        slot.request, slot.sampler, slot.next_token, slot.drafter, slot.unverified = None, None, -1, None, -1
        return request

    def _end_all(self, reason: str, failure: BaseException | None = None) -> None:
        """End every running sequence (after a failed or interrupted step) and empty the cache."""
        finished = []
        for slot in self._slots:
            if slot.request is not None:
                slot.request.failure = slot.request.failure or failure
                slot.request.sequence.end(reason, None if failure is None else str(failure))
                finished.append(self._release(slot))
            slot.cells = []
        if self._context is not None:
            self._context.clear()
        self._hand_over(finished)

    def forget(self) -> None:
        """Empty the KV cache of the idle slots (the next prompts are evaluated whole)."""
        with self._cond:
            for slot in self._slots:
                if slot.request is None and self._context is not None:
                    self._context.forget(slot.index)
                    slot.cells = []

    def close(self) -> None:
        """Free the context once no step is running; requests still running or queued end as errors."""
        with self._cond:
            while self._driver is not None:
                self._cond.wait(0.05)
            self._driver = threading.get_ident()
            waiting = [*self._queue]
            self._queue.clear()
        try:
            closed = GenerationError("the engine was closed")
            self._end_all("error", closed)
            for request in waiting:
                request.failure = closed
                request.sequence.end("error", str(closed))
            self._hand_over(waiting)
            if self._context is not None:
                self._context.close()
                self._context = None
            self._slots = []
            for draft in self.draft_models.values():
                draft.close()
            self.draft_models.clear()
        finally:
            with self._cond:
                self._driver = None
                self._cond.notify_all()


def _sample_each(ctx: llama_cpp.llama_context_p, jobs: list[tuple[SamplerChain, int]]) -> list[int]:
    """Each sampler's token from the logits at its entry of the last decode."""
    return [sampler.sample(ctx, index) for sampler, index in jobs]


def _shared(cells: list[int], tokens: list[int], limit: int) -> int:
    """How many leading ``tokens`` (at most ``limit``: see ``Request.reusable``) are in ``cells``.

    Slices compared in C, bisecting on the first difference: admission asks this of every slot for
    every request, and a token-by-token loop in Python was a large part of scoring's time.
    """
    top = min(len(cells), len(tokens), limit)
    if top == 0 or cells[0] != tokens[0]:
        return 0
    if cells[:top] == tokens[:top]:
        return top
    same, differs = 1, top  # cells[:same] matches, cells[:differs] does not
    while differs - same > 1:
        middle = (same + differs) // 2
        if cells[:middle] == tokens[:middle]:
            same = middle
        else:
            differs = middle
    return same


def _ubatches(fed: list[tuple[int, int]]) -> int:
    """The ubatches llama.cpp splits a batch of (slot, tokens) in slot order into over separate KV streams: each
    takes the same tokens from every slot of a run of consecutive slots, as many as the shortest has left."""
    remaining = dict(fed)
    count = 0
    while remaining:
        run = [min(remaining)]
        while run[-1] + 1 in remaining:
            run.append(run[-1] + 1)
        take = min(remaining[i] for i in run)
        for i in run:
            remaining[i] -= take
            if not remaining[i]:
                del remaining[i]
        count += 1
    return count


def _worth_sharing(shared: int, limit: int) -> bool:
    """Whether copying ``shared`` of at most ``limit`` reusable cells from another slot beats evaluating them
    (a BOS token alone does not)."""
    return shared >= 2 and shared >= min(MIN_SHARED, limit)


def _yes() -> bool:
    return True
