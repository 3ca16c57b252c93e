"""The HTTP layer is typed: every route has a request model, its 400s come from it, and settings agree on bounds."""

from __future__ import annotations

import typing

import pytest
import requests
from conftest import TEST_MODEL
from pydantic import BaseModel

import lmbench
from lmbench import cli
from lmbench.serve import ROUTES, Server, Settings
from lmbench.serve._errors import ApiError
from lmbench.serve._requests import parse
from lmbench.serve._routes import HANDLERS
from lmbench.serve._routes import answer as call_route
from lmbench.serve._service import Service
from lmbench.serve._settings import from_config

CHAT = {"messages": [{"role": "user", "content": "Hi"}]}


@pytest.mark.no_test_model
def test_every_route_answers_its_own_request_model() -> None:
    for route in ROUTES:
        hints = typing.get_type_hints(route.answer)
        request = hints.get("request") or hints.get("query")
        assert request is route.request and issubclass(request, BaseModel), route.handler
    assert len(HANDLERS) == len(ROUTES), "one name per route, as the supervisor sends it"


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("handler", "body", "param", "words"),
    [
        ("chat_completion", {**CHAT, "bogus": 1}, "bogus", "unknown parameter 'bogus'"),
        ("chat_completion", {**CHAT, "n": "2"}, "n", "valid integer"),
        ("chat_completion", {**CHAT, "n": True}, "n", "valid integer"),
        ("chat_completion", {**CHAT, "logprobs": 1}, "logprobs", "valid boolean"),
        ("chat_completion", {**CHAT, "response_format": {"type": "yaml"}}, "response_format", "json_schema"),
        ("chat_completion", {"messages": [{"role": "robot", "content": "x"}]}, "messages", "robot"),
        ("completion", {"prompt": []}, "prompt", "at least one prompt"),
        ("completion", {"prompt": "x", "max_completion_tokens": 0}, "max_tokens", "max_tokens"),
        ("native_completion", {"prompt": "x", "n_predict": 0}, "n_predict", "-1"),
        ("native_completion", {"prompt": "x", "typical_p": 0.5}, "typical_p", "not supported"),
        ("native_completion", {"prompt": []}, "prompt", "non-empty"),
        ("tokenize", {"content": "x", "with_pieces": "yes"}, "with_pieces", "valid boolean"),
        ("tokenize", {"content": "x", "extra": 1}, "extra", "unknown field"),
        ("detokenize", {"tokens": ["a"]}, "tokens", "valid integer"),
        ("generate", {"prompt": "x", "tags": "one"}, "tags", "valid list"),
        ("generate", {"prompt": "x", "model": "../x.gguf"}, "model", "not a path"),
        ("runs", {"limit": "zero"}, "limit", "valid integer"),
        ("runs", {"limit": "0"}, "limit", "greater than or equal to 1"),
    ],
)
def test_bad_fields_are_named_by_the_request_model(handler: str, body: dict, param: str, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse(HANDLERS[handler].request, body)
    assert caught.value.status == 400 and caught.value.param == param
    assert words in caught.value.message, caught.value.message


@pytest.mark.no_test_model
def test_good_requests_map_onto_generation_parameters() -> None:
    chat = parse(HANDLERS["chat_completion"].request, {**CHAT, "max_completion_tokens": 7, "user": "me", "n": 2})
    assert chat.parameters() == {"max_tokens": 7} and chat.choices() == 2  # type: ignore[attr-defined]
    native = parse(HANDLERS["native_completion"].request, {"prompt": "x", "seed": -1, "n_probs": 3, "cache_prompt": 1})
    assert native.parameters() == {"max_tokens": lmbench.params.MAX_TOKENS, "logprobs": 3}  # type: ignore[attr-defined]
    assert parse(HANDLERS["runs"].request, {"limit": "3", "experiment": ""}).limit == 3  # type: ignore[attr-defined]


@pytest.mark.no_test_model
def test_serve_parallel_past_the_engine_bound_is_refused_at_start(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--parallel", "300"])
    assert exited.value.code == 2
    assert "--parallel: must be a whole number from 1 to 256, not '300'" in capsys.readouterr().err
    with pytest.raises(lmbench.ParameterError, match="parallel: a whole number from 1 to 256") as caught:
        Settings(parallel=300)
    assert caught.value.name == "parallel"
    with pytest.raises(lmbench.ParameterError, match="max_queue"):
        from_config({"max_queue": 0})
    assert from_config({"parallel": 8}).parallel == 8


def test_props_reports_the_real_slot_count() -> None:
    service = Service(Settings(model=str(TEST_MODEL), parallel=3))
    assert call_route(service, "props")["total_slots"] == 3
    assert call_route(service, "status")["parallel"] == 3


def test_llama_server_names_and_numbers_in_the_openai_routes() -> None:
    with Server(Settings(model=str(TEST_MODEL), n_ctx=64), port=0) as server:
        body = {"prompt": "Once upon a time", "n_predict": 3, "ignore_eos": True}
        answer = requests.post(f"{server.url}/v1/completions", json=body, timeout=60).json()
        assert answer["usage"]["completion_tokens"] == 3, "n_predict is max_tokens, as llama-server takes it"
        long = requests.post(f"{server.url}/completion", json={"prompt": "Once upon a time " * 40}, timeout=60)
    error = long.json()["error"]
    assert long.status_code == 400 and error["code"] == "context_length_exceeded"
    assert error["n_ctx"] == 64 and error["n_prompt_tokens"] > 64, "the numbers, as llama-server gives them"
