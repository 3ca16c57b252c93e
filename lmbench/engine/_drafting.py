"""Draft tokens for speculative decoding from a sequence's own tokens (prompt lookup, no second model).

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
"""

from __future__ import annotations

from collections.abc import Iterable

from ..params import MAX_DRAFT

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
