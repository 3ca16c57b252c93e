"""The one exception hierarchy of lmbench: catch ``LmbenchError`` to catch them all."""

from __future__ import annotations


class LmbenchError(Exception):
    """Base class of every error lmbench raises on purpose."""


class ModelLoadError(LmbenchError):
    """A model file is missing, unreadable, not GGUF, corrupt, or llama.cpp refused it."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"cannot load model {self.path!r}: {reason}")


class ModelNotFoundError(ModelLoadError):
    """No model was given, or a name is neither a file nor a known alias."""


class ParameterError(LmbenchError, ValueError):
    """A generation or sweep parameter has an unknown name or an out-of-range value."""

    def __init__(self, message: str, *, name: str | None = None, value: object = None) -> None:
        self.name = name
        self.value = value
        super().__init__(message)


class ContextOverflowError(LmbenchError):
    """The prompt does not fit into the model's context window."""

    def __init__(self, prompt_tokens: int, n_ctx: int) -> None:
        self.prompt_tokens = prompt_tokens
        self.n_ctx = n_ctx
        super().__init__(
            f"the prompt is {prompt_tokens} tokens but the context window holds {n_ctx} tokens "
            f"(at least one must stay free for the answer); shorten the prompt or load the "
            f"model with a larger n_ctx"
        )


class GenerationError(LmbenchError):
    """llama.cpp failed in the middle of a generation (the partial run is still recorded)."""


class EngineClosedError(LmbenchError):
    """An engine was used after ``close()`` or ``lmbench.unload()``."""


class StoreError(LmbenchError):
    """The run store cannot be opened, migrated or written."""


class ChatTemplateError(LmbenchError):
    """A model's chat template does not compile, fails, or breaks a rendering limit (it is untrusted code)."""


class ClusterError(LmbenchError):
    """A sweep's Dask cluster cannot be reached or used, or a task failed on it."""


class MissingExtraError(LmbenchError, ImportError):
    """A feature needs a package from one of lmbench's extras (``pip install 'lmbench[notebook]'``)."""


class SandboxError(LmbenchError):
    """Generated code cannot be run here with the isolation it needs (no network namespace, no mount namespace)."""
