"""Draft tokens for speculative decoding: from a sequence's own tokens (prompt lookup), or from a draft model.

Like llama.cpp's ``ngram-simple`` speculative type (and its ``lookup`` example, after
prompt-lookup decoding): the last few tokens of the sequence are looked up in everything before
them, and the tokens that followed their latest earlier occurrence are the draft. A summary or an
extraction copies spans of its prompt, so those drafts are often right. The longest n-gram that
matches wins; an index of every n-gram's latest end keeps each lookup O(1).

A wrong draft costs its share of a decode, so the length tried adapts: it doubles (up to the
limit asked for) after a draft kept whole, and falls to one more than was kept after one that was
not; copying runs long and paraphrase fails early.

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


class NgramDrafter:
    """Prompt-lookup drafts for one sequence: ``add`` every token it gets, ``draft`` before each decode."""

    def __init__(self, tokens: Iterable[int] = (), span: int = 1) -> None:
        self.tokens: list[int] = []
        self.span = span  # the length the next draft may have (see the module's text)
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

    def draft(self, limit: int, minimum: int = 1) -> list[int]:
        """Up to ``limit`` tokens (at most the span, unless ``minimum`` asks for more) that followed the latest
        earlier occurrence of the longest matching tail; none when no tail of ``NGRAM_SIZES`` occurred before
        or fewer than ``minimum`` tokens followed it."""
        tokens = self.tokens
        limit = min(limit, max(self.span, minimum))
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

    def draft(self, limit: int, minimum: int = 1) -> list[int]:
        limit = min(limit, max(self.span, minimum))
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
