"""Draft tokens for speculative decoding: from a sequence's own tokens (prompt lookup), or from a draft model.

Like llama.cpp's ``ngram-simple`` speculative type (and its ``lookup`` example, after
prompt-lookup decoding): the last few tokens of the sequence are looked up in everything before
them, and the tokens that followed their latest earlier occurrence are the draft. A summary or an
extraction copies spans of its prompt, so those drafts are often right. The longest n-gram that
matches wins; an index of every n-gram's latest end keeps each lookup O(1).

A wrong draft costs its share of a decode, so the length tried adapts: it doubles (up to the
limit asked for) after a draft kept whole, and falls to one more than was kept after one that was
not; copying runs long and paraphrase fails early.

Whether a prompt-lookup draft is worth verifying at all depends on the machine and the model: where
llama.cpp has no batched kernel for the weights' type (Q4_1 on a CPU), a decode of two tokens costs
what two decodes do, and a draft only pays when nearly all of it is kept. So the scheduler times its
decodes by size (``DecodeCosts``) and tries a draft only at the length that most raises the decode's
tokens per second, given how often this sequence's drafts have been right (``draft_length``); when
it tries none, the draft is still checked against the token sampled, so the rate stays current.

The scheduler verifies a draft in the same batched decode as the other sequences' tokens and
keeps the tokens the target model samples itself (see ``lmbench.engine._scheduler``); a draft
only changes how many tokens one decode yields, never which.

A draft model (``draft`` naming a model with the target's vocabulary, as llama-server's
``--model-draft``) drafts greedily, so its draft too is a function of the tokens before it.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable

import llama_cpp
import numpy as np

from ..params import MAX_DRAFT
from ._native import Context, Model
from ._threads import Threads

# The n-gram sizes looked up, longest first (a single token matches too often to be worth a draft).
NGRAM_SIZES = (4, 3, 2)
# A sequence's draft record before it has one: as if 4 of 5 drafted tokens had been right (worth trying).
PRIOR_RIGHT, PRIOR_WRONG = 4.0, 1.0
# How much of its draft record a sequence keeps at each new outcome (the recent ~20 count most).
RECORD_DECAY = 0.95
# How fast a decode size's time follows new measurements (threads and machine load change).
COST_ALPHA = 0.2
# How much more tokens per second a draft must promise than no draft (decode times are noisy).
DRAFT_GAIN = 1.05


class DecodeCosts:
    """Seconds a decode of ``n`` entries takes on one context, as measured (moving averages by size)."""

    def __init__(self) -> None:
        self._seconds: dict[int, float] = {}

    def add(self, n: int, seconds: float) -> None:
        old = self._seconds.get(n)
        self._seconds[n] = seconds if old is None else old + COST_ALPHA * (seconds - old)

    def estimate(self, n: int) -> float | None:
        """The time of a decode of ``n`` entries: measured, else read off the nearest measured sizes on either
        side; None above the largest size measured (unknown until tried)."""
        if (exact := self._seconds.get(n)) is not None:
            return exact
        below = max((m for m in self._seconds if m < n), default=None)
        above = min((m for m in self._seconds if m > n), default=None)
        if above is None:
            return None
        if below is None:
            return self._seconds[above] * n / above
        low, high = self._seconds[below], self._seconds[above]
        return low + (high - low) * (n - below) / (above - below)


def draft_length(costs: DecodeCosts, n: int, right: float, longest: int) -> int:
    """How many of ``longest`` drafted tokens to verify in a decode that carries ``n`` entries without them.

    Each drafted token is kept with probability ``right`` if the ones before it were, so k of them
    add ``right + right**2 + ... + right**k`` tokens; the length that makes the most tokens per
    second wins, if it beats no draft by ``DRAFT_GAIN``. Where no timed size pays and a longer one
    was never timed, the whole draft is tried (that times it).
    """
    base = costs.estimate(n)
    if base is None or longest <= 0:
        return longest
    best, length = DRAFT_GAIN * n / base, 0
    expected, chance = 0.0, 1.0
    for k in range(1, longest + 1):
        chance *= right
        expected += chance
        seconds = costs.estimate(n + k)
        if seconds is None:  # try it all: the largest size timed, the ones between are read off the line
            return longest if length == 0 else length
        if (n + expected) / seconds > best:
            best, length = (n + expected) / seconds, k
    return length


class NgramDrafter:
    """Prompt-lookup drafts for one sequence: ``add`` every token it gets, ``draft`` before each decode."""

    def __init__(self, tokens: Iterable[int] = (), span: int = 1) -> None:
        self.tokens: list[int] = []
        self.span = span  # the length the next draft may have (see the module's text)
        self.right, self.wrong = PRIOR_RIGHT, PRIOR_WRONG  # drafted tokens kept and drafts cut short, decayed
        # n -> the n-gram -> where the token after its latest occurrence is (always an existing token)
        self._ends: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in NGRAM_SIZES}
        for token in tokens:
            self.add(token)

    def add(self, token: int) -> None:
        """Append ``token`` to the sequence (a prompt token, or one sampled)."""
        tokens = self.tokens
        end = len(tokens)  # the n-grams that end just before ``token`` now have a continuation: it
        for n, ends in self._ends.items():
            if end >= n:
                ends[tuple(tokens[end - n : end])] = end
        tokens.append(token)

    def kept(self, drafted: int, kept: int) -> None:
        """Hear how a draft of ``drafted`` tokens went (``kept`` of them were right), to size the next."""
        if drafted:
            self.span = min(2 * self.span, MAX_DRAFT) if kept == drafted else kept + 1
            for right in [True] * kept + [False] * (kept < drafted):
                self.right = RECORD_DECAY * self.right + right
                self.wrong = RECORD_DECAY * self.wrong + (not right)

    @property
    def rate(self) -> float:
        """The chance that a drafted token is right when the ones before it were (from this sequence's record)."""
        return self.right / (self.right + self.wrong)

    def draft(self, limit: int, minimum: int = 1, *, spanned: bool = True) -> list[int]:
        """Up to ``limit`` tokens (at most the span, unless ``minimum`` asks for more or ``spanned`` is off) that
        followed the latest earlier occurrence of the longest matching tail; none when no tail of
        ``NGRAM_SIZES`` occurred before or fewer than ``minimum`` tokens followed it."""
        tokens = self.tokens
        limit = min(limit, max(self.span, minimum)) if spanned else limit
        if limit <= 0 or limit < minimum:
            return []
        for n in NGRAM_SIZES:
            if len(tokens) <= n:
                continue
            start = self._ends[n].get(tuple(tokens[-n:]))
            if start is not None:
                draft = tokens[start : start + limit]
                return draft if len(draft) >= minimum else []
        return []


class DraftModel:
    """A smaller model with the target's vocabulary that drafts greedily, one KV stream per sequence slot.

    Its context follows the scheduler's layout (``fit``); ``cells[slot]`` are the tokens whose KV the
    slot's stream holds, so a rejected draft is dropped by keeping the prefix the sequence still has.
    """

    def __init__(self, model: Model, threads: Threads, logs: collections.deque[str]) -> None:
        self.model, self.threads, self.logs = model, threads, logs
        self.n_vocab = llama_cpp.llama_vocab_n_tokens(model.vocab)
        self.context: Context | None = None
        self.cells: list[list[int]] = []

    def fit(self, slots: int, per_slot: int, n_batch: int) -> None:
        """Make the context match the target's layout (its streams start empty)."""
        if self.context is not None and (self.context.slots, self.context.per_slot) == (slots, per_slot):
            return
        self.close_context()
        self.context = Context(
            self.model.pointer, slots=slots, per_slot=per_slot, n_batch=n_batch, threads=self.threads, logs=self.logs
        )
        self.cells = [[] for _ in range(slots)]

    def draft(self, slot: int, tokens: list[int], limit: int) -> list[int]:
        """Up to ``limit`` greedy tokens after ``tokens`` (which end with the sequence's next token)."""
        context = self.context
        if context is None or limit <= 0:
            return []
        cells = self.cells[slot]
        keep = 0
        top = min(len(cells), len(tokens) - 1)  # the last token is always decoded, for its logits
        while keep < top and cells[keep] == tokens[keep]:
            keep += 1
        context.forget(slot, keep)
        del cells[keep:]
        drafted: list[int] = []
        pending = tokens[keep:]  # never empty: the last token is not kept
        while True:
            index = 0
            for at in range(0, len(pending), context.n_batch):
                chunk = pending[at : at + context.n_batch]
                last = at + len(chunk) == len(pending)
                start = len(cells)
                context.decode([(t, start + i, slot, last and i == len(chunk) - 1) for i, t in enumerate(chunk)])
                cells.extend(chunk)
                index = len(chunk) - 1
            token = int(np.argmax(context.logits(index, self.n_vocab)))
            drafted.append(token)
            if len(drafted) == limit or len(cells) + 1 >= context.per_slot:
                return drafted
            pending = [token]

    def close_context(self) -> None:
        if self.context is not None:
            self.context.close()
            self.context = None
        self.cells = []

    def close(self) -> None:
        self.close_context()
        self.model.close()


class ModelDrafter(NgramDrafter):
    """A sequence's drafts from a ``DraftModel`` (the tokens are kept as the n-gram drafter keeps them)."""

    def __init__(self, shared: DraftModel, slot: int, tokens: Iterable[int] = (), span: int = 1) -> None:
        super().__init__(tokens, span)
        self.shared, self.slot = shared, slot

    def add(self, token: int) -> None:
        self.tokens.append(token)

    def draft(self, limit: int, minimum: int = 1, *, spanned: bool = True) -> list[int]:
        limit = min(limit, max(self.span, minimum)) if spanned else limit
        if limit < max(minimum, 1):
            return []
        return self.shared.draft(self.slot, self.tokens, limit)


def same_vocabulary(target: Model, draft: Model) -> str | None:
    """Why ``draft`` cannot draft for ``target`` (another vocabulary), or None when every token is the same."""
    n_target, n_draft = (llama_cpp.llama_vocab_n_tokens(m.vocab) for m in (target, draft))
    if n_target != n_draft:
        return f"{n_draft:,} tokens, not {n_target:,}"
    for token in range(n_target):
        if target.token_text(token) != draft.token_text(token):
            return f"token {token} is {draft.token_text(token)!r}, not {target.token_text(token)!r}"
    return None
