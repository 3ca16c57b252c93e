"""Build llama.cpp sampler chains from ``GenerationParams`` (one chain per sequence)."""

from __future__ import annotations

import collections
import math
from collections.abc import Collection, Sequence

import llama_cpp

from ..errors import ParameterError
from ..params import MAX_BIAS, GenerationParams
from . import _llama_log

PENALTY_LAST_N = 64


class SamplerChain:
    """A llama.cpp sampler chain owning its native memory; call ``close()`` when done."""

    def __init__(
        self,
        params: GenerationParams,
        seed: int,
        n_vocab: int,
        eog_tokens: Collection[int] = (),
        vocab: llama_cpp.llama_vocab_p | None = None,
        history: Sequence[int] = (),
    ) -> None:
        """``eog_tokens`` are banned when ``params.ignore_eos`` is set; ``vocab`` is needed for a grammar;
        ``history`` are tokens already generated (a fork's), accepted so repetition penalties count them."""
        chain_params = llama_cpp.llama_sampler_chain_default_params()
        chain_params.no_perf = True
        self.ptr = llama_cpp.llama_sampler_chain_init(chain_params)
        add = llama_cpp.llama_sampler_chain_add
        grammar = params.constraint()
        if grammar is not None:  # first, so every later sampler only sees tokens the grammar allows
            said: collections.deque[str] = collections.deque(maxlen=3)
            with _llama_log.capture(said):
                constrained = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
            if not constrained:
                self.close()
                where = " ".join(line.strip() for line in said)
                raise ParameterError(f"the grammar does not parse: {where or 'llama.cpp refused it'}", name="grammar")
            add(self.ptr, constrained)
        biases = logit_biases(params, eog_tokens)
        if biases:
            native = (llama_cpp.llama_logit_bias * len(biases))(
                *(llama_cpp.llama_logit_bias(token, bias) for token, bias in biases.items())
            )
            add(self.ptr, llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), native))
        add(
            self.ptr,
            llama_cpp.llama_sampler_init_penalties(
                n_vocab, PENALTY_LAST_N, params.repeat_penalty, params.frequency_penalty, params.presence_penalty
            ),
        )
        if params.temperature == 0:
            add(self.ptr, llama_cpp.llama_sampler_init_greedy())
        else:
            add(self.ptr, llama_cpp.llama_sampler_init_top_k(params.top_k))
            add(self.ptr, llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
            add(self.ptr, llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
            add(self.ptr, llama_cpp.llama_sampler_init_temp(params.temperature))
            add(self.ptr, llama_cpp.llama_sampler_init_dist(seed))
        for token in history:
            llama_cpp.llama_sampler_accept(self.ptr, token)

    def sample(self, ctx: llama_cpp.llama_context_p, index: int = -1) -> int:
        """Sample (and accept) the next token from the logits at ``index`` of the last batch."""
        return int(llama_cpp.llama_sampler_sample(self.ptr, ctx, index))

    def close(self) -> None:
        if self.ptr is not None:
            llama_cpp.llama_sampler_free(self.ptr)
            self.ptr = None


def logit_biases(params: GenerationParams, eog_tokens: Collection[int] = ()) -> dict[int, float]:
    """What llama.cpp's logit-bias sampler adds to each token: ``params.logit_bias`` (-100 as minus infinity,
    a ban, as OpenAI documents it) and, with ``ignore_eos``, minus infinity for the end-of-generation tokens."""
    biases = {token: -math.inf if bias <= -MAX_BIAS else bias for token, bias in (params.logit_bias or {}).items()}
    if params.ignore_eos:
        biases.update(dict.fromkeys(eog_tokens, -math.inf))
    return biases
