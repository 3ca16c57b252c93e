"""Anthropic's Messages API, spoken to by the real ``anthropic`` client: plain, streaming, stop sequences,
tool use and tool results, with the key as ``x-api-key``."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings

WEATHER = {
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture
def server(request: pytest.FixtureRequest) -> Iterator[Server]:
    with Server(Settings(model=getattr(request, "param", str(TEST_MODEL)), api_key="k"), port=0) as running:
        yield running


def test_messages_plain_stop_sequences_and_stream(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)  # sends x-api-key
    message = client.messages.create(
        model="stories260K",
        max_tokens=12,
        system="You tell stories.",
        messages=[{"role": "user", "content": [{"type": "text", "text": "Tell me a story."}]}],
    )
    assert message.type == "message" and message.role == "assistant" and message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 12 and message.content[0].type == "text"
    run = lmbench.get_store().get(message.id.removeprefix("msg_"))
    assert run.source == "api" and run.text == message.content[0].text
    assert run.messages[0] == {"role": "system", "content": "You tell stories."}
    stopped = client.messages.create(
        model="stories260K", max_tokens=200, messages=[{"role": "user", "content": "Hi"}], stop_sequences=["."]
    )
    assert stopped.stop_reason == "stop_sequence" and stopped.stop_sequence == "."
    with client.messages.stream(model="stories260K", max_tokens=15, messages=[{"role": "user", "content": "Hi"}]) as s:
        pieces = list(s.text_stream)
        final = s.get_final_message()
    assert len(pieces) > 3 and "".join(pieces) == final.content[0].text == lmbench.runs().text.iloc[-1]
    wrong = anthropic.Anthropic(base_url=server.url, api_key="nope", max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        wrong.messages.create(model="stories260K", max_tokens=3, messages=[{"role": "user", "content": "Hi"}])
    bad = requests.post(f"{server.url}/v1/messages", json={"messages": []}, headers={"x-api-key": "k"}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "max_tokens"


@pytest.mark.parametrize("server", ["smollm2-135m-instruct"], indirect=True)
def test_messages_tool_use_and_tool_results_on_the_default_model(server: Server) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0)
    message = client.messages.create(
        model="smollm2-135m-instruct",
        max_tokens=80,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        extra_body={"temperature": 0},  # this SDK has no temperature argument; lmbench takes it
    )
    assert message.stop_reason == "tool_use"
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_weather" and use.input == {"city": "Paris"} and use.id.startswith("call_")
    with client.messages.stream(
        model="smollm2-135m-instruct",
        max_tokens=80,
        messages=ASK,
        tools=[WEATHER],
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
        extra_body={"temperature": 0},
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use" and streamed.content[-1].input == use.input
    answer = client.messages.create(
        model="smollm2-135m-instruct",
        max_tokens=120,
        tools=[WEATHER],
        messages=[
            *ASK,
            {"role": "assistant", "content": [use.model_dump(include={"type", "id", "name", "input"})]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C, sunny"}]},
        ],
        extra_body={"temperature": 0},
    )
    assert answer.content and answer.stop_reason in ("end_turn", "tool_use", "max_tokens")
    run = lmbench.get_store().get(answer.id.removeprefix("msg_"))
    assert any("18 C, sunny" in m["content"] for m in run.messages), "the tool result reached the model"
