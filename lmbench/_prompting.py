"""What a prompt becomes before the model sees it: the one rule for chat template vs raw text.

The rule, applied by every door (``generate``, ``chat``, sweeps, the panel and its Compare tab, the
magics, the CLI and ``/api/generate``): a model with a chat template (an instruct or chat model) gets
the prompt as one user message (after an optional system message) through its template; a model
without one, or a call that asks for ``raw=True``, gets the text as it is. A ``Turn`` keeps both
what was asked (the person's text, recorded as ``Run.prompt``) and what was sent (the rendered text,
``Run.prompt_sent``); the template's stop strings are added at decoding and implied by
``Run.chat_format``, so a run's parameters are the ones the person chose.

The template is the GGUF file's ``tokenizer.chat_template``, rendered in lmbench's Jinja sandbox
with limits on work and size (``lmbench._template``): a template is code from the model file.
A conversation on a model without one (such as the stories260K test model) gets the ``plain``
fallback, a transcript any base model can continue::

    <system message>

    User: <message>
    Assistant: <message>
    User: <message>
    Assistant:

with ``"\\nUser:"`` added to the stop strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import _template, tools
from .engine._engine import Engine
from .errors import ParameterError
from .params import check_text
from .run import describe_mode

ROLES = ("system", "user", "assistant")
PLAIN = "plain"
PLAIN_STOP = "\nUser:"


@dataclass(frozen=True)
class Turn:
    """A prompt as asked and as sent: the text the model continues, how to tokenize it, what the
    template adds to the stop strings, and what is recorded of it."""

    asked: str  # the person's text (a conversation's last user message)
    sent: str  # the text the model continues
    stop: tuple[str, ...] = ()  # stop strings the template adds
    chat_format: str | None = None  # "gguf" (the model's template), "plain" (the fallback), None: raw text
    messages: list[dict[str, str]] | None = None  # the conversation, for a templated turn

    @property
    def tokenize_options(self) -> dict[str, bool]:
        """How to tokenize ``sent`` (see ``tokenize_options``)."""
        return tokenize_options(self.chat_format)

    @property
    def mode(self) -> str:
        """Which way the prompt went, in words: what every view shows."""
        return describe_mode(self.chat_format)


def tokenize_options(chat_format: str | None) -> dict[str, bool]:
    """How the text sent in a chat format is tokenized: a model's template writes its special tokens (and
    its BOS, when it has one) as text; the plain transcript and raw text are plain text after a BOS."""
    templated = chat_format == "gguf"
    return {"special": templated, "add_bos": not templated}


def template_stops(engine: Engine, chat_format: str | None) -> tuple[str, ...]:
    """The stop strings a chat format adds: ``"\\nUser:"`` for the plain transcript, the model's end-of-turn
    text for its own template, none for raw text (a run's ``stop`` leaves them out: its format implies them)."""
    if chat_format == PLAIN:
        return (PLAIN_STOP,)
    if chat_format is not None and engine.model.eos_text:
        return (engine.model.eos_text,)
    return ()


def has_template(engine: Engine) -> bool:
    """Whether the model carries a chat template (an instruct or chat model)."""
    return bool(engine.metadata.get("tokenizer.chat_template"))


def prepare(engine: Engine, prompt: str, *, raw: bool = False, system: str | None = None) -> Turn:
    """The rule: ``prompt`` (and ``system``) through the model's chat template when it has one and
    ``raw`` is not asked for; else the text as it is (a system prompt needs a template)."""
    check_text("prompt", prompt)
    if system is not None and not isinstance(system, str):
        raise ParameterError(f"system must be text, got {type(system).__name__}", name="system", value=system)
    system = system or None
    if raw or not has_template(engine):
        if system is not None:
            why = "raw=True" if raw else f"{engine.name} has no chat template"
            raise ParameterError(
                f"a system prompt goes through a chat template, and {why}: put it in the prompt or leave it out",
                name="system",
                value=system,
            )
        return Turn(prompt, prompt)
    messages = [*([{"role": "system", "content": system}] if system else []), {"role": "user", "content": prompt}]
    return render(engine, messages)


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


def asked_text(messages: Sequence[dict[str, Any]]) -> str:
    """What a person asked in a conversation: its last user message (else its last message)."""
    users = [m for m in messages if m.get("role") == "user"]
    return str((users or list(messages))[-1].get("content", "")) if messages else ""


def render(engine: Engine, messages: list[dict[str, str]], offer: tools.Offer | None = None) -> Turn:
    """The prompt for ``messages`` in the model's chat template (rendered in a sandbox), or the plain fallback.

    ``offer`` (tools offered) goes through the template's ``tools`` variable when it has a tools section, else
    as lmbench's instruction, a system message before the others (see ``lmbench.tools``).
    """
    template = engine.metadata.get("tokenizer.chat_template")
    asked = asked_text(messages)
    variables: dict[str, Any] = {}
    if offer is not None and template and _template.reads(template, "tools"):
        variables["tools"] = offer.for_template()
    elif offer is not None:
        messages = check_messages([offer.instruction(), *messages])
    if not template:
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        turns = [f"{m['role'].capitalize()}: {m['content']}" for m in messages if m["role"] != "system"]
        prompt = (f"{system}\n\n" if system else "") + "\n".join([*turns, "Assistant:"])
        return Turn(asked, prompt, template_stops(engine, PLAIN), PLAIN, messages)
    prompt = _template.render(
        template,
        messages=messages,
        eos_token=engine.model.eos_text,
        bos_token=engine.model.bos_text,
        add_generation_prompt=True,
        strftime_now=lambda fmt: datetime.now().strftime(fmt),
        **variables,
    )
    return Turn(asked, prompt, template_stops(engine, "gguf"), "gguf", messages)
