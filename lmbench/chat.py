"""Chat: OpenAI-style messages through the model's own chat template, recorded like any run.

The template is the GGUF file's ``tokenizer.chat_template``, rendered in lmbench's Jinja sandbox
with limits on work and size (``lmbench._template``): a template is code from the model file.
A model without one (such as the stories260K test model) gets the ``plain`` fallback, a
transcript any base model can continue::

    <system message>

    User: <message>
    Assistant: <message>
    User: <message>
    Assistant:

with ``"\\nUser:"`` added to the stop strings. ``Run.chat_format`` records which was used.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _template, models
from . import tools as tools_mod
from .engine._engine import Engine, load_engine
from .errors import ParameterError
from .generation import Cancel, Recorder, complete, generate
from .params import GenerationParams, check_text, validate_params
from .presets import resolve_preset
from .run import Labels, Run
from .store._store import Store

ROLES = ("system", "user", "assistant")
PLAIN = "plain"
PLAIN_STOP = "\nUser:"


@dataclass(frozen=True)
class ChatPrompt:
    """A conversation rendered to the text the model continues."""

    prompt: str
    stop: tuple[str, ...]
    chat_format: str
    added_special: bool

    @property
    def tokenize_options(self) -> dict[str, bool]:
        """How to tokenize ``prompt``: a template writes special tokens (and often its BOS) as text."""
        return {"special": self.chat_format != PLAIN, "add_bos": not self.added_special}

    def with_stops(self, params: GenerationParams) -> GenerationParams:
        """``params`` with the template's stop strings added."""
        extra = tuple(s for s in self.stop if s and s not in params.stop)
        return params.model_copy(update={"stop": (*params.stop, *extra)}) if extra else params


def has_template(engine: Engine) -> bool:
    """Whether the model carries a chat template (an instruct or chat model)."""
    return bool(engine.metadata.get("tokenizer.chat_template"))


def uses_template(model: str | os.PathLike[str] | Engine | None) -> bool:
    """Whether a model (loaded or not: read from its file's metadata) carries a chat template."""
    if isinstance(model, Engine) and not model.closed:
        return has_template(model)
    path = model.path if isinstance(model, Engine) else models.resolve(model)
    return bool(models.metadata(path).get("has_chat_template"))


def ask(prompt: str, *, model: str | os.PathLike[str] | Engine | None = None, raw: bool = False, **options: Any) -> Run:
    """Answer a prompt the way its model expects: an instruct model (one with a chat template) gets it
    as a user message through the template, a base model (or ``raw=True``) completes it as it is."""
    if raw or not uses_template(model):
        return generate(prompt, model=model, **options)
    return chat([{"role": "user", "content": prompt}], model=model, **options)


def user_turn(engine: Engine, prompt: str) -> ChatPrompt:
    """``prompt`` as one user message in the model's chat template (``plain`` for a model without one)."""
    return render(engine, [{"role": "user", "content": prompt}])


def check_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """The messages as plain ``{"role", "content"}`` dicts, or ``ParameterError`` naming what is wrong.

    Consecutive messages of one role are merged (their texts joined by a blank line), so every
    template sees alternating turns.
    """
    if isinstance(messages, str) or not isinstance(messages, Sequence) or not messages:
        raise ParameterError(
            'messages must be a non-empty list of {"role": ..., "content": ...} dicts', name="messages", value=messages
        )
    checked: list[dict[str, str]] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content", "name"}:
            raise ParameterError(
                f'messages[{i}] must be a dict with "role" and "content", got {message!r}',
                name="messages",
                value=message,
            )
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise ParameterError(
                f"messages[{i}] has role {role!r}; roles are: {', '.join(ROLES)}", name="messages", value=message
            )
        text = _text_of(content, i, message)
        if checked and checked[-1]["role"] == role:  # one turn per role change, whatever the template expects
            checked[-1]["content"] += f"\n\n{text}"
        else:
            checked.append({"role": role, "content": text})
    return checked


def _text_of(content: Any, i: int, message: Any) -> str:
    """A message's text: a string, or OpenAI-style content parts of type "text" (joined)."""
    if isinstance(content, str):
        return check_text(f"messages[{i}] content", content)
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content
    ):
        return check_text(f"messages[{i}] content", "".join(p["text"] for p in content))
    raise ParameterError(
        f'messages[{i}] content must be a string or a list of {{"type": "text", "text": ...}} parts',
        name="messages",
        value=message,
    )


def with_tools(
    messages: Sequence[dict[str, Any]],
    params: GenerationParams,
    tools: Sequence[dict[str, Any]] | None,
    tool_choice: tools_mod.ToolChoice = "auto",
    parallel: bool = True,
) -> tuple[list[dict[str, str]], GenerationParams, list[dict[str, Any]]]:
    """The checked turns and parameters of a chat that may offer tools (their output schema constrains it),
    and the tools offered."""
    if isinstance(messages, str) or not isinstance(messages, Sequence):
        check_messages(messages)  # says what is wrong before the tool turns are looked at
    folded, schema, offered = tools_mod.prepare(messages, tools, tool_choice, parallel=parallel)
    if schema is not None:
        if params.json_schema is not None or params.grammar is not None:
            raise ParameterError("tools constrain the output themselves: give tools or json_schema/grammar, not both")
        params = params.model_copy(update={"json_schema": schema})
    return check_messages(folded), params, offered


def render(engine: Engine, messages: list[dict[str, str]]) -> ChatPrompt:
    """The prompt for ``messages`` in the model's chat template (rendered in a sandbox), or the plain fallback."""
    template = engine.metadata.get("tokenizer.chat_template")
    if not template:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages if m["role"] != "system"]
        prompt = (f"{system}\n\n" if system else "") + "\n".join([*turns, "Assistant:"])
        return ChatPrompt(prompt, (PLAIN_STOP,), PLAIN, added_special=False)
    eos_text = engine.model.eos_text
    prompt = _template.render(
        template,
        messages=messages,
        eos_token=eos_text,
        bos_token=engine.model.bos_text,
        add_generation_prompt=True,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
    )
    return ChatPrompt(prompt, (eos_text,) if eos_text else (), "gguf", added_special=True)


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
    tools: Sequence[dict[str, Any]] | None = None,
    tool_choice: tools_mod.ToolChoice = "auto",
    parallel_tool_calls: bool = True,
    **params: Any,
) -> Run:
    """Reply to a conversation (OpenAI-style messages); the reply is ``run.text``, the messages are recorded.

    Takes the same parameters as ``generate``; the template's stop strings are added to ``stop``.
    ``run_id`` records the run under a fixed id (recording it again replaces it). ``tools``
    (OpenAI-style function tools) are offered as ``lmbench.tools`` describes; the calls the model
    made are ``run.tool_calls``.
    """
    labels = Labels.checked(experiment, tags, source, run_id)
    turns, values, offered = with_tools(
        messages, validate_params({**resolve_preset(preset), **params}), tools, tool_choice, parallel_tool_calls
    )
    labels = dataclasses.replace(labels, tools=offered or None)
    engine, loaded_now = load_engine(model)
    rendered = render(engine, turns)
    return complete(
        engine,
        rendered.prompt,
        rendered.with_stops(values),
        loaded_now=loaded_now,
        recorder=Recorder.to(store),
        labels=dataclasses.replace(labels, messages=turns, chat_format=rendered.chat_format),
        on_token=on_token,
        cancel=cancel,
        **rendered.tokenize_options,
    )
