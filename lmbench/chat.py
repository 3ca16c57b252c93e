"""Chat: OpenAI-style messages through the model's own chat template, recorded like any run.

How a conversation becomes the model's prompt (the GGUF template in a sandbox, or the ``plain``
transcript for a model without one) is ``lmbench._prompting``, the one rule every door follows;
``Run.chat_format`` records which was used, ``Run.messages`` the conversation, ``Run.prompt`` its
last user message and ``Run.prompt_sent`` the rendered text.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

from ._prompting import check_messages, render
from .engine._engine import Engine, load_engine
from .generation import Cancel, Job, Recorder, complete
from .params import validate_params
from .presets import resolve_preset
from .run import Labels, Run
from .store._store import Store


def chat(
    messages: Sequence[dict[str, Any]],
    *,
    model: str | os.PathLike[str] | Engine | None = None,
    experiment: str | None = None,
    tags: list[str] | None = None,
    on_token: Callable[[str], Any] | None = None,
    cancel: Cancel = None,
    preset: str | None = None,
    store: str | os.PathLike[str] | Store | None = None,
    source: str = "python",
    run_id: str | None = None,
    **params: Any,
) -> Run:
    """Reply to a conversation (OpenAI-style messages); the reply is ``run.text``, the messages are recorded.

    Takes the same parameters as ``generate``; the template's stop strings are used while decoding
    (``run.stop`` keeps the ones asked for). ``run_id`` records the run under a fixed id (recording
    it again replaces it).
    """
    turns = check_messages(messages)
    labels = Labels.checked(experiment, tags, source, run_id)
    values = validate_params({**resolve_preset(preset), **params})
    engine, loaded_now = load_engine(model)
    return complete(
        engine,
        Job.of(render(engine, turns), values, labels, on_token),
        loaded_now=loaded_now,
        recorder=Recorder.to(store),
        cancel=cancel,
    )
