"""OpenAI's Responses API, spoken to by the real ``openai`` client: text and item input, instructions,
streamed events, function calls and their outputs."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings

WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture
def client(request: pytest.FixtureRequest) -> Iterator[openai.OpenAI]:
    with Server(Settings(model=getattr(request, "param", str(TEST_MODEL))), port=0) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_responses_create_and_stream(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="stories260K", input="Tell me a story.", instructions="You tell stories.", max_output_tokens=12
    )
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text and response.usage.output_tokens == 12
    run = lmbench.get_store().get(response.id.removeprefix("resp_"))
    assert run.text == response.output_text and run.messages[0] == {"role": "system", "content": "You tell stories."}
    events = list(
        client.responses.create(
            model="stories260K",
            input=[{"role": "user", "content": [{"type": "input_text", "text": "Hi"}]}],
            max_output_tokens=10,
            stream=True,
        )
    )
    kinds = [e.type for e in events]
    assert (
        kinds[0] == "response.created"
        and kinds[-1] == "response.completed"
        and kinds.count("response.output_text.delta") > 3
    )
    assert [e.sequence_number for e in events] == list(range(len(events)))
    deltas = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert deltas == events[-1].response.output_text == lmbench.runs().text.iloc[-1]


@pytest.mark.parametrize("client", ["smollm2-135m-instruct"], indirect=True)
def test_responses_function_calls_on_the_default_model(client: openai.OpenAI) -> None:
    asked = [{"role": "user", "content": "What is the weather in Paris?"}]
    response = client.responses.create(
        model="smollm2-135m-instruct",
        input=asked,
        tools=[WEATHER],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_output_tokens=80,
    )
    (call,) = response.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments) == {"city": "Paris"} and call.call_id.startswith("call_")
    answer = client.responses.create(
        model="smollm2-135m-instruct",
        input=[
            *asked,
            call.model_dump(exclude_none=True),
            {"type": "function_call_output", "call_id": call.call_id, "output": "18 C, sunny"},
        ],
        tools=[WEATHER],
        temperature=0,
        max_output_tokens=120,
    )
    assert answer.output and answer.status in ("completed", "incomplete")
    run = lmbench.get_store().get(answer.id.removeprefix("resp_"))
    assert any("18 C, sunny" in m["content"] for m in run.messages), "the function output reached the model"
