"""Loaded models: one ``Engine`` per model file, cached, each decoding through its batched scheduler."""

from ._engine import Engine, detokenize, embed, load, loaded, set_max_models, tokenize, unload

__all__ = ["Engine", "detokenize", "embed", "load", "loaded", "set_max_models", "tokenize", "unload"]
