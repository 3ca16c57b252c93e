"""llama.cpp's ``llama-server`` dialect: ``/completion``, ``/tokenize``, ``/detokenize``, ``/health``, ``/props``."""

from __future__ import annotations

from typing import Any, ClassVar

import llama_cpp
from pydantic import Field, field_validator, model_validator

from .. import models
from .._version import __version__
from ..engine._engine import Engine
from ..engine._sequence import Streamed
from ..errors import ParameterError
from ..generation import Cancel
from ..params import MAX_BIAS, MAX_TOKENS, GenerationParams, validate_params
from ..run import Run
from ._errors import ApiError, api_error
from ._requests import MAX_CHOICES, Generating, NoQuery, UsesModel
from ._service import Emit, Jobs, Service, finite

# llama-server fields lmbench accepts and ignores (its own prompt cache and scheduling do their job).
IGNORED = frozenset(
    {
        "cache_prompt",
        "id_slot",
        "n_keep",
        "samplers",
        "return_tokens",
        "repeat_last_n",
        "min_keep",
        "n_indent",
        "t_max_predict_ms",
        "dry_base",
        "dry_allowed_length",
        "dry_penalty_last_n",
        "dry_sequence_breakers",
        "xtc_threshold",
        "mirostat_tau",
        "mirostat_eta",
        "dynatemp_exponent",
        "post_sampling_probs",
        "response_fields",
        "n_cache_reuse",
        "sse_ping_interval",
        "speculative.p_min",  # a draft model's confidence; prompt lookup has none
    }
)
# llama-server's speculative decoding fields, as lmbench's parameters (``draft`` turns it on per request).
SPECULATIVE = {"speculative.n_max": "draft_max", "speculative.n_min": "draft_min"}
# llama-server samplers lmbench does not have: accepted only at their neutral values.
NEUTRAL: dict[str, Any] = {
    "typical_p": 1.0,
    "mirostat": 0,
    "dry_multiplier": 0.0,
    "xtc_probability": 0.0,
    "dynatemp_range": 0.0,
    "logit_bias": [],
    "lora": [],
}
# llama-server's logit_bias: [[token id or text, bias], ...] or {"token id or text": bias}; a bias of false bans.
Biases = list[list[int | str | float | bool]] | dict[str, float | bool]


class NativeCompletionRequest(Generating):
    """``POST /completion``: llama-server's names (``n_predict``, ``n_probs``, ``n_cmpl``, ``seed: -1``)."""

    ignored: ClassVar[frozenset[str]] = IGNORED | frozenset(NEUTRAL) | frozenset(SPECULATIVE)

    prompt: str | list[int | str]
    n_predict: int = -1
    n_probs: int = Field(0, ge=0, le=20)
    seed: int | None = None
    n_cmpl: int = Field(1, ge=1, le=MAX_CHOICES)
    logit_bias: Biases | None = None
    timings_per_token: bool = False  # every streamed chunk carries the timings so far
    return_progress: bool = False  # the stream starts with the prompt's progress (sent once it is evaluated)

    @field_validator("logit_bias")
    @classmethod
    def _bias_pairs(cls, value: Biases | None) -> Biases | None:
        for entry in value if isinstance(value, list) else ():
            if len(entry) != 2 or isinstance(entry[0], bool | float):
                raise ValueError(f"each logit_bias entry must be [token id or text, bias], not {entry!r}")
        for _, bias in _bias_entries(value):
            if isinstance(bias, str) or bias is True:
                raise ValueError(f"a logit_bias bias must be a number or false, not {bias!r}")
        return value

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str | list[int | str]) -> str | list[int | str]:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must be a string or a non-empty list of token ids and strings")
        return value

    @field_validator("n_predict")
    @classmethod
    def _n_predict(cls, value: int) -> int:
        if value == 0 or value < -1:
            raise ValueError("n_predict must be -1 (up to the server's cap) or a positive integer")
        return value

    @model_validator(mode="after")
    def _neutral(self) -> NativeCompletionRequest:
        for name, neutral in NEUTRAL.items():
            value = (self.model_extra or {}).get(name)
            if value not in (neutral, None):
                raise ParameterError(f"{name} is not supported by lmbench", name=name)
        return self

    def choices(self) -> int:
        return self.n_cmpl

    def parameters(self) -> dict[str, Any]:
        params = super().parameters()
        params["max_tokens"] = MAX_TOKENS if self.n_predict == -1 else self.n_predict  # -1: the server's cap
        if self.seed is not None and self.seed != -1:
            params["seed"] = self.seed
        if self.n_probs:
            params["logprobs"] = self.n_probs
        extra = self.model_extra or {}
        params.update({ours: extra[theirs] for theirs, ours in SPECULATIVE.items() if extra.get(theirs) is not None})
        biases = {key: bias for key, bias in self.biases() if isinstance(key, int)}
        if biases:
            params["logit_bias"] = biases
        return params

    def biases(self) -> list[tuple[int | str, float]]:
        """``logit_bias`` as (token id or text, bias) pairs, ``false`` as the ban (-100), as llama-server reads it:
        a key of an object is a token id when it is a whole number, an array's first item when it is an integer."""
        pairs = []
        for key, bias in _bias_entries(self.logit_bias):
            if isinstance(key, str) and isinstance(self.logit_bias, dict) and key.isascii() and key.isdecimal():
                key = int(key)
            pairs.append((key, -MAX_BIAS if bias is False else float(bias)))
        return pairs


def _bias_entries(value: Biases | None) -> list[tuple[Any, Any]]:
    if isinstance(value, dict):
        return list(value.items())
    return [(entry[0], entry[1]) for entry in value or ()]


class TokenizeRequest(UsesModel):
    """``POST /tokenize``: llama.cpp's ``content`` form, or vLLM's ``prompt`` form (``add_special_tokens``)."""

    content: str | None = None
    add_special: bool = False
    parse_special: bool = True
    with_pieces: bool = False
    prompt: str | None = None
    add_special_tokens: bool = True

    @model_validator(mode="after")
    def _one_text(self) -> TokenizeRequest:
        if (self.content is None) == (self.prompt is None):
            raise ValueError("give the text as content (llama.cpp) or as prompt (vLLM), one of them")
        return self


class DetokenizeRequest(UsesModel):
    """``POST /detokenize``."""

    tokens: list[int]


def native_completion(
    service: Service, request: NativeCompletionRequest, emit: Emit | None, cancel: Cancel
) -> dict[str, Any] | None:
    """``POST /completion``: llama-server's request fields and answer."""
    jobs = service.prepare(request)
    prompt = _prompt_text(service, jobs, request.prompt)
    _bias_texts(service, jobs, request)
    engine = service.engine(jobs.path)
    on_piece = None
    if emit is not None:
        started: set[int] = set()

        def on_piece(i: int, text: str | None) -> None:
            if not isinstance(text, Streamed):
                return
            facts = {"index": i, "content": "", "tokens": [], "stop": False, "id_slot": i, "tokens_predicted": 0}
            facts["tokens_evaluated"] = text.n_prompt
            if request.return_progress and i not in started:
                started.add(i)
                emit({**facts, "prompt_progress": _progress(text)})
            chunk = {**facts, "content": str(text), "tokens": list(text.tokens), "tokens_predicted": text.n_generated}
            if request.timings_per_token:
                chunk["timings"] = _timings(text.n_prompt - text.cached, text.ttft_s, text.elapsed_s, text.n_generated)
            if request.n_probs and text.logprobs:
                chunk["completion_probabilities"] = [_probabilities(engine, e) for e in text.logprobs]
            emit(chunk)

    try:
        engine, runs = service.generate(jobs, prompt=prompt, on_piece=on_piece, cancel=cancel)
    except ApiError as exc:
        if exc.code == "context_length_exceeded":  # llama-server's type for it (with n_prompt_tokens and n_ctx)
            exc.kind = "exceed_context_size_error"
        raise
    answers = [_answer(engine, jobs, run, i, request.n_probs) for i, run in enumerate(runs)]
    if emit is not None:
        for answer in answers[:-1]:
            emit({**answer, "content": ""})
        return {**answers[-1], "content": ""}
    return answers[0] if len(answers) == 1 else {"results": answers}


def _prompt_text(service: Service, jobs: Jobs, prompt: str | list[int | str]) -> str:
    """llama-server's prompt: a string, or token ids (and strings) turned into text."""
    if isinstance(prompt, str):
        return prompt
    engine = service.engine(jobs.path)
    try:
        return "".join(p if isinstance(p, str) else engine.detokenize([p]) for p in prompt)
    except ParameterError as exc:
        raise ApiError(400, str(exc), param="prompt") from None


def _bias_texts(service: Service, jobs: Jobs, request: NativeCompletionRequest) -> None:
    """Give ``jobs`` the biases ``logit_bias`` sets by text: every token of the text (tokenized as llama-server does,
    without BOS or special tokens) gets the bias."""
    texts = [(key, bias) for key, bias in request.biases() if isinstance(key, str)]
    if not texts:
        return
    engine = service.engine(jobs.path)
    biases = dict(jobs.params.logit_bias or {})
    with engine.lock:
        for text, bias in texts:
            biases.update(dict.fromkeys(engine.tokenize(text, add_bos=False), bias))
    try:
        jobs.params = validate_params({**jobs.params.model_dump(), "logit_bias": biases})
    except ParameterError as exc:
        raise api_error(exc) from None


def tokenize(service: Service, request: TokenizeRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any]:
    """``POST /tokenize``: ``content`` as token ids (with their text pieces when asked)."""
    engine = service.engine_for(request.model)
    if request.prompt is not None:  # vLLM's form: special-token text is parsed, as Hugging Face tokenizers do
        with engine.lock:
            tokens = engine.tokenize(request.prompt, add_bos=request.add_special_tokens, special=True)
        return {"tokens": tokens, "count": len(tokens), "max_model_len": engine.n_ctx}
    assert request.content is not None
    with engine.lock:
        tokens = engine.tokenize(request.content, add_bos=request.add_special, special=request.parse_special)
    if not request.with_pieces:
        return {"tokens": tokens}
    return {"tokens": [{"id": t, "piece": _piece(engine.piece(t, special=True))} for t in tokens]}


def detokenize(service: Service, request: DetokenizeRequest, emit: Emit | None, cancel: Cancel) -> dict[str, Any]:
    """``POST /detokenize``: token ids back to text (as llama.cpp's ``content`` and vLLM's ``prompt``)."""
    engine = service.engine_for(request.model)
    try:
        text = engine.detokenize(request.tokens)
        return {"content": text, "prompt": text}
    except ParameterError as exc:
        raise ApiError(400, str(exc), param="tokens") from None


def tokenizer_info(service: Service, query: NoQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /tokenizer_info`` (vLLM's): the special tokens as text, the chat template and the context length.

    The token texts tokenize back to their ids through ``POST /tokenize`` (``prompt``), which is how
    lm-evaluation-harness's remote tokenizer finds them.
    """
    engine = service.engine(service.default_path)
    vocab = engine.vocab

    def text(token: int) -> str | None:
        return None if token < 0 else engine.piece(token, special=True).decode("utf-8", errors="replace")

    facts = models.metadata(service.default_path)
    return {
        "tokenizer_class": "llama.cpp",
        "bos_token": text(llama_cpp.llama_vocab_bos(vocab)),
        "eos_token": text(llama_cpp.llama_vocab_eos(vocab)),
        "pad_token": text(llama_cpp.llama_vocab_pad(vocab)),
        "add_bos_token": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        "chat_template": facts.get("chat_template") or None,
        "model_max_length": engine.n_ctx,
        "vocab_size": engine.n_vocab,
    }


def health(service: Service, query: NoQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /health``: models load on first use, so the server is ready as soon as it answers."""
    return {"status": "ok"}


def props(service: Service, query: NoQuery, emit: Emit | None = None, cancel: Cancel = None) -> dict[str, Any]:
    """``GET /props``: llama-server's properties (the real slot count), without the model's file path."""
    facts = models.metadata(service.default_path)
    return {
        "default_generation_settings": {
            "n_ctx": service.settings.n_ctx,
            "params": {**_settings(validate_params()), "n_predict": -1, "seed": -1},
        },
        "total_slots": service.settings.parallel,
        "model_alias": service.default_id,
        "chat_template": facts.get("chat_template") or "",
        "modalities": {"vision": False, "audio": False},
        "build_info": f"lmbench {__version__} (llama-cpp-python {llama_cpp.__version__})",
    }


def _piece(raw: bytes) -> str | list[int]:
    """A token's text as llama-server gives it: a string when it is valid UTF-8, else its bytes."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def _settings(params: GenerationParams) -> dict[str, Any]:
    values = params.model_dump()
    values["stop"] = list(values["stop"])
    values["n_probs"] = values.pop("logprobs") or 0
    values.update({theirs: values[ours] for theirs, ours in SPECULATIVE.items()})
    values["logit_bias"] = [[token, bias] for token, bias in (values["logit_bias"] or {}).items()]
    return values


def _stop_type(run: Run) -> str:
    if run.finish_reason == "length":
        return "limit"
    if run.stop_word is not None:
        return "word"
    return "eos" if run.finish_reason == "stop" else "none"


def _answer(engine: Engine, jobs: Jobs, run: Run, index: int, n_probs: int) -> dict[str, Any]:
    """llama-server's completion answer for one run."""
    evaluated = run.prompt_tokens - run.prompt_cached_tokens
    answer: dict[str, Any] = {
        "index": index,
        "content": run.text,
        "tokens": [],
        "id_slot": index,
        "stop": True,
        "model": jobs.name,
        "tokens_predicted": run.completion_tokens,
        "tokens_evaluated": run.prompt_tokens,
        "tokens_cached": run.prompt_cached_tokens,
        "generation_settings": {"n_ctx": engine.n_ctx, "n_predict": run.max_tokens, **_settings(run.params)},
        "prompt": run.prompt,
        "has_new_line": "\n" in run.text,
        "truncated": run.finish_reason == "length" and run.prompt_tokens + run.completion_tokens >= engine.n_ctx,
        "stop_type": _stop_type(run),
        "stopping_word": run.stop_word or "",
        "timings": {
            **_timings(evaluated, run.ttft_s or 0.0, run.total_s, run.completion_tokens),
            **({"draft_n": run.drafted_tokens, "draft_n_accepted": run.accepted_tokens} if run.draft else {}),
        },
        "run_id": run.id,
    }
    if n_probs and run.token_logprobs is not None:
        answer["completion_probabilities"] = [_probabilities(engine, e) for e in run.token_logprobs]
    return answer


def _timings(evaluated: int, ttft_s: float, elapsed_s: float, generated: int) -> dict[str, Any]:
    """llama-server's timings: the prompt (evaluated tokens, to the first token) and the tokens generated after it
    (per second as ``Run.tokens_per_s`` counts them: the first token ends the prompt's time)."""
    prompt_ms = 1000 * ttft_s
    predicted_ms = 1000 * max(elapsed_s - ttft_s, 0.0)
    after_first = max(generated - 1, 0)
    return {
        "prompt_n": evaluated,
        "prompt_ms": prompt_ms,
        "prompt_per_token_ms": prompt_ms / max(evaluated, 1),
        "prompt_per_second": 1000 * evaluated / prompt_ms if prompt_ms else None,
        "predicted_n": generated,
        "predicted_ms": predicted_ms,
        "predicted_per_token_ms": predicted_ms / after_first if after_first and predicted_ms else None,
        "predicted_per_second": finite(1000 * after_first / predicted_ms) if after_first and predicted_ms else None,
    }


def _progress(piece: Streamed) -> dict[str, Any]:
    """llama-server's ``prompt_progress`` once the prompt is evaluated: all of it processed, the cached part
    included (lmbench's scheduler evaluates a prompt between other runs' tokens and reports it when done)."""
    return {"total": piece.n_prompt, "cache": piece.cached, "processed": piece.n_prompt, "time_ms": 1000 * piece.ttft_s}


def _probabilities(engine: Engine, entry: dict[str, Any]) -> dict[str, Any]:
    """One token of llama-server's ``completion_probabilities``: the token and its top alternatives."""
    return {**_probability(engine, entry), "top_logprobs": [_probability(engine, a) for a in entry.get("top", [])]}


def _probability(engine: Engine, entry: dict[str, Any]) -> dict[str, Any]:
    token = entry["id"]
    return {"id": token, "token": entry["token"], "logprob": entry["logprob"], "bytes": list(engine.piece(token))}
