"""Generation parameters: the single definition that drives validation, sliders, CLI and API.

Each field carries its name, type, default, allowed range and description; the UI range
(``ui``) says where a slider starts and stops, which can be narrower than what is valid.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import annotated_types
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ._grammar import MAX_GRAMMAR_CHARS, expanded_size, schema_grammar
from .errors import ParameterError

# llama.cpp reads 0xFFFFFFFF as "pick a random seed", so the largest usable seed is one less.
MAX_SEED = 2**32 - 2
# The most tokens one generation may ask for (far beyond any context; generation also ends at the context).
MAX_TOKENS = 1 << 20
# The longest label (experiment, tag, source) kept with a run.
MAX_LABEL_CHARS = 1000
# The most tokens drafted per step (llama-server caps ``speculative.n_max`` likewise).
MAX_DRAFT = 64
# A logit bias runs from -MAX_BIAS to MAX_BIAS (OpenAI's range); -MAX_BIAS bans the token outright.
MAX_BIAS = 100.0


def ensure_text(value: Any, what: str) -> None:
    """Raise ``ValueError`` unless ``value`` is text that can be stored and sent anywhere (valid Unicode)."""
    if not isinstance(value, str):
        raise ValueError(f"{what} must be a string, not {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"{what} is not valid Unicode text (it holds a lone surrogate)") from None


def check_text(name: str, value: Any, *, max_chars: int | None = None) -> str:
    """``value`` if it is valid Unicode text (of at most ``max_chars``), else ``ParameterError`` naming ``name``."""
    try:
        ensure_text(value, name)
    except ValueError as exc:
        raise ParameterError(str(exc), name=name, value=value) from None
    if max_chars is not None and len(value) > max_chars:
        raise ParameterError(f"{name} is {len(value)} characters; the limit is {max_chars}", name=name)
    return value


def check_labels(experiment: Any, tags: Any, source: Any) -> list[str]:
    """Check the labels kept with a run (before anything is generated); returns the tags as a list."""
    if experiment is not None:
        check_text("experiment", experiment, max_chars=MAX_LABEL_CHARS)
    check_text("source", source, max_chars=MAX_LABEL_CHARS)
    if tags is None:
        return []
    if isinstance(tags, str) or not isinstance(tags, list | tuple):
        raise ParameterError(f"tags must be a list of strings, not {type(tags).__name__}", name="tags", value=tags)
    return [check_text("tags", t, max_chars=MAX_LABEL_CHARS) for t in tags]


def _ui(minimum: float, maximum: float, step: float) -> dict[str, Any]:
    return {"ui": {"min": minimum, "max": maximum, "step": step}}


class GenerationParams(BaseModel):
    """Sampling settings for one generation; unknown names are rejected."""

    # Strict: a number is a number ("0.5", True or 3.0 for an integer are refused, never coerced).
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, strict=True, allow_inf_nan=False)

    max_tokens: int = Field(
        100,
        ge=1,
        le=MAX_TOKENS,
        description="Maximum number of tokens to generate.",
        json_schema_extra=_ui(1, 2048, 1),
    )
    temperature: float = Field(
        0.7,
        ge=0.0,
        description="Randomness of sampling: 0 always picks the likeliest token, higher is more varied.",
        json_schema_extra=_ui(0.0, 2.0, 0.05),
    )
    top_p: float = Field(
        0.9,
        gt=0.0,
        le=1.0,
        description="Nucleus sampling: keep the smallest set of tokens whose probability adds up to top_p.",
        json_schema_extra=_ui(0.05, 1.0, 0.05),
    )
    top_k: int = Field(
        40,
        ge=0,
        le=2**31 - 1,
        description="Keep only the k likeliest tokens (0 keeps all).",
        json_schema_extra=_ui(0, 200, 1),
    )
    min_p: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Drop tokens less likely than min_p times the likeliest token.",
        json_schema_extra=_ui(0.0, 1.0, 0.01),
    )
    repeat_penalty: float = Field(
        1.1,
        gt=0.0,
        description="Divide the odds of recently seen tokens by this (1 disables).",
        json_schema_extra=_ui(0.5, 2.0, 0.05),
    )
    presence_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtract this from the logit of every token already generated.",
        json_schema_extra=_ui(-2.0, 2.0, 0.1),
    )
    frequency_penalty: float = Field(
        0.0,
        ge=-2.0,
        le=2.0,
        description="Subtract this times the count of each token already generated.",
        json_schema_extra=_ui(-2.0, 2.0, 0.1),
    )
    seed: int | None = Field(
        None,
        ge=0,
        le=MAX_SEED,
        description="Random seed; None draws a fresh one (the seed used is always recorded).",
    )
    stop: tuple[str, ...] = Field(
        (),
        description="Strings that end the generation when they appear (not included in the text).",
    )
    ignore_eos: bool = Field(
        False,
        description="Never end at the end-of-sequence token: always generate max_tokens (for benchmarks).",
    )
    logprobs: int | None = Field(
        None,
        ge=0,
        le=20,
        description="Record each token's log-probability and this many top alternatives (None: off).",
    )
    json_schema: dict[str, Any] | None = Field(
        None,
        description="Constrain the output to JSON matching this JSON schema (structured output).",
    )
    grammar: str | None = Field(
        None,
        description="Constrain the output to this GBNF grammar (llama.cpp's grammar format; root rule 'root').",
    )
    logit_bias: dict[int, float] | None = Field(
        None,
        description="Add a bias to these tokens' logits (token id -> bias); -100 bans a token, 100 all but forces it.",
    )

    draft: str | None = Field(
        None,
        description="Speculative decoding: 'ngram' drafts tokens from the prompt and text so far (prompt lookup), "
        "a model (path or alias) with the same vocabulary drafts them greedily; they are verified in the same "
        "batch and the output is what plain decoding gives (None: off).",
    )
    draft_max: int = Field(
        16,
        ge=1,
        le=MAX_DRAFT,
        description="Speculative decoding: the most tokens drafted per step (llama-server's speculative.n_max).",
    )
    draft_min: int = Field(
        0,
        ge=0,
        le=MAX_DRAFT,
        description="Speculative decoding: a shorter draft is not tried (llama-server's speculative.n_min), and "
        "every draft from prompt lookup this long is, as llama-server does. 0: a draft is tried only at the length "
        "that raises decoding speed on this machine (its decodes are timed by size).",
    )

    @field_validator(
        "temperature", "top_p", "min_p", "repeat_penalty", "presence_penalty", "frequency_penalty", mode="before"
    )
    @classmethod
    def _plain_number(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"input should be a number (int or float), not {type(value).__name__}")
        return value

    @field_validator("logit_bias", mode="before")
    @classmethod
    def _biases(cls, value: Any) -> Any:
        """Token ids as integers (OpenAI's JSON gives them as strings), biases as numbers in range; {} is None."""
        if value is None:
            return None
        if not isinstance(value, dict):
            raise ValueError(f"input should be a map of token id to bias, not {type(value).__name__}")
        biases: dict[int, float] = {}
        for key, bias in value.items():
            token = key if isinstance(key, int) and not isinstance(key, bool) else _token_id(key)
            if token < 0:
                raise ValueError(f"token id {key!r} is negative")
            if isinstance(bias, bool) or not isinstance(bias, int | float) or not -MAX_BIAS <= bias <= MAX_BIAS:
                raise ValueError(f"the bias of token {token} must be a number from -100 to 100, not {bias!r}")
            biases[token] = float(bias)
        return biases or None

    @field_validator("json_schema")
    @classmethod
    def _schema_converts(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None:
            schema_grammar(value)
        return value

    @field_validator("grammar")
    @classmethod
    def _grammar_text(cls, value: str | None) -> str | None:
        if value is not None:
            ensure_text(value, "grammar")
            if not value.strip() or len(value) > MAX_GRAMMAR_CHARS:
                raise ValueError(f"a grammar must be non-empty GBNF text of at most {MAX_GRAMMAR_CHARS:,} characters")
            expanded_size(value)
        return value

    @field_validator("draft")
    @classmethod
    def _drafter_text(cls, value: str | None) -> str | None:
        if value is not None:
            ensure_text(value, "draft")
            if not value.strip() or len(value) > MAX_LABEL_CHARS:
                raise ValueError(f"draft must be 'ngram' or a model (path or alias), not {_short(value)}")
        return value

    @model_validator(mode="after")
    def _one_constraint(self) -> GenerationParams:
        if self.json_schema is not None and self.grammar is not None:
            raise ValueError("give json_schema or grammar, not both")
        if self.draft_min > self.draft_max:
            raise ValueError(f"draft_min ({self.draft_min}) must not exceed draft_max ({self.draft_max})")
        return self

    def constraint(self) -> str | None:
        """The GBNF grammar the output must follow: ``grammar``, or ``json_schema`` as a grammar, or None."""
        if self.grammar is not None:
            return self.grammar
        return None if self.json_schema is None else schema_grammar(self.json_schema)

    @field_validator("stop", mode="before")
    @classmethod
    def _stop_as_tuple(cls, value: Any) -> Any:
        if value is None:
            return ()
        if isinstance(value, str):
            return (value,)
        return tuple(value) if isinstance(value, list) else value

    @field_validator("stop")
    @classmethod
    def _stop_not_empty(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if any(s == "" for s in value):
            raise ValueError("stop strings must not be empty")
        for s in value:
            ensure_text(s, "stop string")
        return value


def _token_id(key: Any) -> int:
    """A token id written as decimal text (the keys of a JSON object), else ``ValueError``."""
    if isinstance(key, str) and key.strip().lstrip("-").isdecimal() and key.isascii():
        return int(key)
    raise ValueError(f"the keys must be token ids (whole numbers), not {key!r}")


PARAM_NAMES: tuple[str, ...] = tuple(GenerationParams.model_fields)


@dataclass(frozen=True)
class ParamSpec:
    """What a UI, CLI or API schema needs to know about one parameter."""

    name: str
    type: type
    default: Any
    description: str
    minimum: float | None = None
    maximum: float | None = None
    exclusive_minimum: bool = False
    exclusive_maximum: bool = False
    ui_min: float | None = None
    ui_max: float | None = None
    ui_step: float | None = None

    @property
    def label(self) -> str:
        """The name people read in the guides and the panel ("Max Tokens", "Top P")."""
        return _LABELS.get(self.name) or self.name.replace("_", " ").title()

    def range_text(self) -> str:
        """The allowed range as people write it, e.g. ``0 < top_p <= 1`` or ``0 <= seed <= 4294967294``."""
        if self.name in _WORDS:
            return _WORDS[self.name]
        lo = "" if self.minimum is None else f"{_number(self.minimum)} {'<' if self.exclusive_minimum else '<='} "
        hi = "" if self.maximum is None else f" {'<' if self.exclusive_maximum else '<='} {_number(self.maximum)}"
        if lo or hi:
            return f"{lo}{self.name}{hi}"
        words: dict[type, str] = {
            bool: "true or false",
            tuple: "a list of non-empty strings",
            dict: "a JSON schema",
            str: "GBNF grammar text",
        }
        if self.name == "draft":
            return "'ngram' or a model with the same vocabulary (path or alias)"
        return words.get(self.type, f"any {self.type.__name__}")


_WORDS = {"logit_bias": "token id -> bias, -100 to 100 (-100 bans)"}
_LABELS = {"ignore_eos": "Ignore EOS", "json_schema": "JSON Schema", "stop": "Stop Strings"}


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def _spec(name: str) -> ParamSpec:
    field = GenerationParams.model_fields[name]
    bounds: dict[str, Any] = {}
    for meta in field.metadata:
        if isinstance(meta, annotated_types.Ge):
            bounds.update(minimum=meta.ge)
        elif isinstance(meta, annotated_types.Gt):
            bounds.update(minimum=meta.gt, exclusive_minimum=True)
        elif isinstance(meta, annotated_types.Le):
            bounds.update(maximum=meta.le)
        elif isinstance(meta, annotated_types.Lt):
            bounds.update(maximum=meta.lt, exclusive_maximum=True)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    ui = cast("dict[str, float]", extra.get("ui") or {})
    special: dict[str, type] = {"stop": tuple, "json_schema": dict, "grammar": str, "logit_bias": dict, "draft": str}
    kind = special.get(name) or (bool if field.annotation is bool else float if field.annotation is float else int)
    return ParamSpec(
        name=name,
        type=kind,
        default=field.default,
        description=field.description or "",
        ui_min=ui.get("min"),
        ui_max=ui.get("max"),
        ui_step=ui.get("step"),
        **bounds,
    )


PARAM_SPECS: dict[str, ParamSpec] = {name: _spec(name) for name in PARAM_NAMES}


def param_specs() -> list[ParamSpec]:
    """All generation parameters in their canonical order."""
    return list(PARAM_SPECS.values())


def validate_params(values: dict[str, Any] | None = None, /, **kwargs: Any) -> GenerationParams:
    """Check parameter values and return them as ``GenerationParams``.

    Raises ``ParameterError`` naming the first bad parameter, its value and the allowed range.
    """
    merged = {k: v.item() if isinstance(v, np.generic) else v for k, v in {**(values or {}), **kwargs}.items()}
    unknown = sorted(set(merged) - set(PARAM_NAMES))
    if unknown:
        raise ParameterError(
            f"unknown parameter {unknown[0]!r}; valid parameters are: {', '.join(PARAM_NAMES)}",
            name=unknown[0],
            value=merged[unknown[0]],
        )
    try:
        return GenerationParams(**merged)
    except ValidationError as exc:
        err = exc.errors()[0]
        message = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:  # a rule across parameters
            raise ParameterError(message) from None
        name = str(err["loc"][0])
        value = merged.get(name)
        spec = PARAM_SPECS.get(name)
        allowed = f" (allowed: {spec.range_text()})" if spec else ""
        raise ParameterError(
            f"invalid {name}={_short(value)}: {message[0].lower() + message[1:]}{allowed}", name=name, value=value
        ) from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# Short flags for the parameters reached for most, on the command line and in the magics.
SHORT_FLAGS = {"temperature": "-t", "top_p": "-p", "max_tokens": "-n", "top_k": "-k", "seed": "-s"}


def option_specs() -> list[tuple[list[str], dict[str, Any]]]:
    """argparse ``add_argument`` flags and options for every parameter (command line and magics).

    Every option defaults to None, meaning "not given", so only what the user typed is passed on.
    """
    options: list[tuple[list[str], dict[str, Any]]] = []
    for spec in param_specs():
        flags = [f"--{spec.name.replace('_', '-')}", *([SHORT_FLAGS[spec.name]] if spec.name in SHORT_FLAGS else [])]
        text = f"{spec.description} ({spec.range_text()}; default {spec.default!r})"
        kwargs: dict[str, Any]
        if spec.name == "stop":
            kwargs = {"action": "append", "metavar": "TEXT", "help": text + "; repeatable"}
        elif spec.type is bool:
            kwargs = {"action": "store_const", "const": True, "help": spec.description}
        elif spec.type is dict:
            kwargs = {"type": json_argument, "metavar": "JSON|@FILE", "help": spec.description}
        elif spec.name == "draft":
            kwargs = {"metavar": "ngram|MODEL", "help": spec.description}
        elif spec.type is str:
            kwargs = {"type": text_argument, "metavar": "TEXT|@FILE", "help": spec.description}
        else:
            kwargs = {"type": spec.type, "metavar": spec.type.__name__.upper(), "help": text}
        options.append((flags, {"dest": spec.name, "default": None, **kwargs}))
    return options


def text_argument(value: str) -> str:
    """A command-line value given inline or as ``@path`` (read from that file)."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).expanduser().read_text(encoding="utf-8")
        except OSError as exc:
            raise argparse.ArgumentTypeError(f"cannot read {value[1:]}: {exc.strerror or exc}") from None
    return value


def json_argument(value: str) -> Any:
    """A command-line JSON value given inline or as ``@path``."""
    try:
        return json.loads(text_argument(value))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def given_params(namespace: Any) -> dict[str, Any]:
    """The parameters an argparse namespace built from ``option_specs`` was given."""
    return {name: getattr(namespace, name) for name in PARAM_NAMES if getattr(namespace, name, None) is not None}


def describe_params() -> str:
    """One line per parameter, for docstrings and help texts."""
    return "\n".join(f"    {s.name} (default {s.default!r}; {s.range_text()}): {s.description}" for s in param_specs())
