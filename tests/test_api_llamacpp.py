"""llama-server's smaller fields on the real server and test model: per-chunk ``completion_probabilities``,
``timings_per_token`` and ``return_progress`` in ``/completion``'s stream, ``exceed_context_size_error`` for a
prompt past the context, ``n_predict`` on the Responses route, and ``--context-shift`` refused."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings

PROMPT = "Once upon a time"


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with Server(Settings(model=str(TEST_MODEL), **getattr(request, "param", {})), port=0) as running:
        yield running


def _stream(server: Server, body: dict[str, Any]) -> list[dict[str, Any]]:
    with requests.post(f"{server.url}/completion", json={**body, "stream": True}, stream=True, timeout=60) as answer:
        assert answer.status_code == 200, answer.text
        lines = [line for line in answer.iter_lines(decode_unicode=True) if line]
    return [json.loads(line.removeprefix("data: ")) for line in lines]


def test_a_stream_with_probabilities_timings_and_progress(server: Server) -> None:
    body = {"prompt": PROMPT, "n_predict": 12, "seed": 3, "n_probs": 3, "timings_per_token": True}
    events = _stream(server, {**body, "return_progress": True})
    run = lmbench.get_store().get(str(events[-1]["run_id"]))
    assert run.token_logprobs is not None

    progress = events[0]["prompt_progress"]
    assert isinstance(progress, dict) and events[0]["content"] == ""
    assert progress["total"] == progress["processed"] == run.prompt_tokens == len(lmbench.engine.tokenize(PROMPT))
    assert progress["cache"] == run.prompt_cached_tokens and progress["time_ms"] > 0

    chunks = events[1:-1]
    assert chunks and all(chunk["stop"] is False and "prompt_progress" not in chunk for chunk in chunks)
    assert "".join(str(chunk["content"]) for chunk in chunks) == run.text
    tokens = [token for chunk in chunks for token in chunk["tokens"]]
    assert tokens == [entry["id"] for entry in run.token_logprobs]
    for chunk in chunks:
        probabilities = chunk["completion_probabilities"]
        assert [p["id"] for p in probabilities] == chunk["tokens"]
        assert all(len(p["top_logprobs"]) == 3 and p["logprob"] <= 0 for p in probabilities)
    predicted = [chunk["timings"]["predicted_n"] for chunk in chunks]
    assert predicted == sorted(predicted) and predicted[-1] == run.completion_tokens
    assert all(chunk["timings"]["prompt_n"] == run.prompt_tokens - run.prompt_cached_tokens for chunk in chunks)
    assert predicted == [chunk["tokens_predicted"] for chunk in chunks]
    assert events[-1]["stop"] is True and events[-1]["timings"]["predicted_n"] == run.completion_tokens


def test_a_plain_stream_carries_tokens_but_no_extras(server: Server) -> None:
    events = _stream(server, {"prompt": PROMPT, "n_predict": 6, "seed": 3})
    chunks = events[:-1]
    assert chunks and all(chunk["tokens"] for chunk in chunks)
    assert not any({"timings", "prompt_progress", "completion_probabilities"} & set(chunk) for chunk in chunks)


@pytest.mark.parametrize("server", [{"n_ctx": 64}], indirect=True)
def test_a_prompt_past_the_context_is_llama_servers_error(server: Server) -> None:
    prompt = PROMPT + " and a dragon" * 40
    n_prompt = len(lmbench.engine.tokenize(prompt, TEST_MODEL))
    answer = requests.post(f"{server.url}/completion", json={"prompt": prompt, "n_predict": 4}, timeout=60)
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["type"] == "exceed_context_size_error"
    assert (error["n_prompt_tokens"], error["n_ctx"]) == (n_prompt, 64)
    assert str(n_prompt) in error["message"]
    streamed = requests.post(f"{server.url}/completion", json={"prompt": prompt, "stream": True}, timeout=60)
    assert streamed.status_code == 400 and streamed.json()["error"]["type"] == "exceed_context_size_error"
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model="stories260K", prompt=prompt, max_tokens=3)
    assert caught.value.body["type"] == "invalid_request_error"
    assert lmbench.runs().empty


def test_n_predict_on_the_responses_route(server: Server) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)
    response = client.responses.create(model="stories260K", input="Tell me a story.", extra_body={"n_predict": 5})
    assert response.usage is not None and response.usage.output_tokens == 5
    assert lmbench.runs().max_tokens.tolist() == [5]


def test_context_shift_is_refused_and_says_why() -> None:
    with pytest.raises(lmbench.ParameterError, match="--context-shift is not supported") as info:
        Settings(context_shift=True)
    assert info.value.name == "context_shift" and "--n-ctx" in str(info.value)
    assert Settings().context_shift is False
    command = [str(Path(sys.executable).parent / "lmbench"), "serve", "--context-shift", "--port", "0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "--context-shift is not supported" in result.stderr
