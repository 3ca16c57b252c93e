"""Teacher-forced scoring: what a model thinks of each token of a sequence it is given, not one it samples.

A sequence is fed to the model whole; the logits at position ``p`` are the model's distribution for
the token at ``p + 1``. ``Scoring`` collects, for every token from ``start`` on, its log-probability,
whether it was the model's most likely token (greedy), the ``top`` most likely tokens, and (when
asked for) the whole distribution, so two models' distributions over the same tokens can be
compared. The scheduler decodes scoring requests in the same batches as generations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass
class TokenScores:
    """One sequence, teacher-forced: the model's view of each token from ``start`` on.

    ``logprobs[i]`` is the log-probability (nats) of ``tokens[i]`` given everything before it;
    ``greedy[i]`` whether it was the most likely token there; ``top_ids`` / ``top_logprobs`` the
    most likely tokens at each position, best first; ``distributions`` every token's
    log-probability at each position (only when asked for: ``n_vocab`` floats a token).
    """

    tokens: list[int]
    start: int
    logprobs: np.ndarray
    greedy: np.ndarray
    top_ids: np.ndarray
    top_logprobs: np.ndarray
    distributions: np.ndarray | None = None
    cached: int = 0  # tokens whose KV cells came from the cache (not evaluated again)
    total_s: float = 0.0  # from joining the batch to the last scored row
    batch_size: int = 1  # the most sequences that shared a decode with this one

    @property
    def total(self) -> float:
        """The summed log-probability of the scored tokens."""
        return float(self.logprobs.sum(dtype=np.float64))

    @property
    def is_greedy(self) -> bool:
        """Whether greedy decoding from the context would have produced exactly these tokens."""
        return bool(self.greedy.all())


class Scoring:
    """The scores of one sequence being fed: rows of logits arrive in position order, from ``first`` on."""

    def __init__(self, tokens: Sequence[int], start: int, *, top: int, distributions: bool, n_vocab: int) -> None:
        self.tokens = list(tokens)
        self.start = start
        self.first = start - 1  # the position whose logits predict the first scored token
        n = len(self.tokens) - start
        self._targets = np.asarray(self.tokens[start:], dtype=np.int64)
        self._filled = 0
        self.logprobs = np.zeros(n, dtype=np.float64)
        self.greedy = np.zeros(n, dtype=bool)
        self.top = min(top, n_vocab)
        self.top_ids = np.zeros((n, self.top), dtype=np.int64)
        self.top_logprobs = np.zeros((n, self.top), dtype=np.float64)
        self.distributions = np.zeros((n, n_vocab), dtype=np.float32) if distributions else None

    @property
    def complete(self) -> bool:
        return self._filled == len(self._targets)

    def add(self, logits: np.ndarray) -> None:
        """Take the next rows of logits (one per position, in order): log-softmax, target, greedy and top-k."""
        k = len(logits)
        rows = slice(self._filled, self._filled + k)
        targets = self._targets[rows]
        peak = logits.max(axis=1)
        lse = peak + np.log(np.exp(logits - peak[:, None]).sum(axis=1, dtype=np.float64))
        picked = logits[np.arange(k), targets].astype(np.float64)
        self.logprobs[rows] = picked - lse
        self.greedy[rows] = logits.argmax(axis=1) == targets
        if self.top:
            best = np.argpartition(logits, -self.top, axis=1)[:, -self.top :]
            values = np.take_along_axis(logits, best, axis=1)
            order = np.argsort(-values, axis=1, kind="stable")
            self.top_ids[rows] = np.take_along_axis(best, order, axis=1)
            self.top_logprobs[rows] = np.take_along_axis(values, order, axis=1) - lse[:, None]
        if self.distributions is not None:
            self.distributions[rows] = logits - lse[:, None].astype(np.float32)
        self._filled += k

    def result(self, *, cached: int, total_s: float, batch_size: int) -> TokenScores:
        return TokenScores(
            tokens=self.tokens[self.start :],
            start=self.start,
            logprobs=self.logprobs,
            greedy=self.greedy,
            top_ids=self.top_ids,
            top_logprobs=self.top_logprobs,
            distributions=self.distributions,
            cached=cached,
            total_s=total_s,
            batch_size=batch_size,
        )
