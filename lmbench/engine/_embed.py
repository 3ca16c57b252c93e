"""Embeddings from a loaded model: a llama.cpp context of its own with embeddings on, next to the scheduler's.

A model with a pooling layer (an embedding model) gives one vector per text; a generative model
gives one per token, averaged here (mean pooling). Vectors are L2-normalised, so a dot product is
the cosine similarity.
"""

from __future__ import annotations

import llama_cpp
import numpy as np

from ..errors import GenerationError, ParameterError


class Embedder:
    """An embeddings context on ``model`` (a ``llama_model`` pointer) holding up to ``n_ctx`` tokens per text."""

    def __init__(self, model: llama_cpp.llama_model_p, *, n_ctx: int, n_threads: int) -> None:
        params = llama_cpp.llama_context_default_params()
        params.n_ctx = params.n_batch = params.n_ubatch = n_ctx
        params.n_seq_max = 1
        params.n_threads = params.n_threads_batch = n_threads
        params.embeddings = True
        self.ctx = llama_cpp.llama_init_from_model(model, params)
        if not self.ctx:
            raise GenerationError("llama.cpp could not make an embeddings context for this model")
        self.n_ctx = n_ctx
        self.n_embd = llama_cpp.llama_model_n_embd(model)
        self.pooled = llama_cpp.llama_pooling_type(self.ctx) != llama_cpp.LLAMA_POOLING_TYPE_NONE

    def embed(self, tokens: list[int]) -> np.ndarray:
        """The normalised embedding of one text's tokens."""
        if not tokens:
            raise ParameterError("cannot embed an empty text", name="input")
        if len(tokens) > self.n_ctx:
            raise ParameterError(f"a text is {len(tokens)} tokens; embeddings take at most {self.n_ctx}", name="input")
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.ctx), True)
        batch = llama_cpp.llama_batch_init(len(tokens), 0, 1)
        try:
            for i, token in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = True
            batch.n_tokens = len(tokens)
            if llama_cpp.llama_decode(self.ctx, batch) != 0:
                raise GenerationError("llama.cpp failed to compute the embeddings")
            if self.pooled:
                vector = np.ctypeslib.as_array(llama_cpp.llama_get_embeddings_seq(self.ctx, 0), (self.n_embd,)).copy()
            else:
                rows = [llama_cpp.llama_get_embeddings_ith(self.ctx, i) for i in range(len(tokens))]
                vector = np.mean([np.ctypeslib.as_array(row, (self.n_embd,)) for row in rows], axis=0)
        finally:
            llama_cpp.llama_batch_free(batch)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def close(self) -> None:
        if self.ctx:
            llama_cpp.llama_free(self.ctx)
            self.ctx = None
