"""Loaded models: one ``Engine`` per model file, cached, each decoding through its batched scheduler."""

from ._engine import Engine, detokenize, embed, load, loaded, set_max_models, tokenize, unload
from ._scoring import TokenScores

__all__ = ["Engine", "TokenScores", "detokenize", "embed", "load", "loaded", "set_max_models", "tokenize", "unload"]
