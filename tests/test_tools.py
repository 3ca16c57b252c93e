"""Tool calls: offered through the documented JSON format, grammar-constrained, parsed into OpenAI's shape,
recorded with the run, scored; over HTTP with the real ``openai`` client on the default model."""

from __future__ import annotations

import json
from collections.abc import Iterator

import openai
import pytest
from conftest import TEST_MODEL

import lmbench
from lmbench import scores, tools
from lmbench.serve import Server, Settings

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city"],
        },
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a time zone",
        "parameters": {"type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]},
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
DEFAULT = "smollm2-135m-instruct"


@pytest.mark.no_test_model
def test_tools_are_checked_and_offered_with_a_schema_for_the_answer() -> None:
    with pytest.raises(lmbench.ParameterError, match="two tools are named"):
        tools.check_tools([WEATHER, WEATHER])
    with pytest.raises(lmbench.ParameterError, match="needs a name"):
        tools.check_tools([{"type": "function", "function": {"name": "no spaces"}}])
    with pytest.raises(lmbench.ParameterError, match="not among the tools") as caught:
        tools.prepare(ASK, [WEATHER], {"type": "function", "function": {"name": "get_time"}})
    assert caught.value.name == "tool_choice"
    turns, schema, offered = tools.prepare(ASK, [WEATHER, TIME], "auto", parallel=False)
    assert turns[0]["role"] == "system" and "get_weather" in turns[0]["content"] and turns[1:] == ASK
    assert [t["name"] for t in offered] == ["get_weather", "get_time"]
    assert schema is not None and len(schema["anyOf"]) == 2, "calls or a reply"
    assert schema["anyOf"][0]["properties"]["tool_calls"]["maxItems"] == 1
    assert tools.prepare(ASK, [WEATHER], "none")[1] is None, "tool_choice none offers nothing"
    bounded = {**WEATHER["function"], "parameters": {"type": "object", "properties": {"n": {"minimum": 1}}}}
    assert "minimum" not in json.dumps(tools.prepare(ASK, [bounded], "required")[1]), "the scorer checks bounds"


@pytest.mark.no_test_model
def test_calls_and_results_go_back_to_the_model_as_turns() -> None:
    conversation = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "18 C, sunny"},
    ]
    folded = tools.fold(conversation)
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]
    assert json.loads(folded[1]["content"]) == {"tool_calls": [{"name": "get_weather", "parameters": {}}]}
    assert json.loads(folded[2]["content"])["tool_result"] == {
        "tool_call_id": "c1",
        "name": "get_weather",
        "content": "18 C, sunny",
    }
    calls = tools.parse_calls('{"tool_calls": [{"name": "get_time", "parameters": {"zone": "UTC"}}]}', "abc")
    assert calls == [
        {"id": "call_abc_0", "type": "function", "function": {"name": "get_time", "arguments": '{"zone": "UTC"}'}}
    ]
    assert tools.parse_calls("not json", "abc") == [] and tools.reply('{"response": "Hi"}') == "Hi"


def test_a_required_call_is_valid_recorded_and_scored() -> None:
    run = lmbench.chat(
        ASK,
        model=TEST_MODEL,
        tools=[WEATHER, TIME],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        parallel_tool_calls=False,
        temperature=0.8,
        seed=3,
        max_tokens=100,
    )
    (call,) = run.tool_calls
    assert call["type"] == "function" and call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    assert isinstance(json.loads(call["function"]["arguments"])["city"], str), "a story model, held to the schema"
    stored = lmbench.get_store().get(run.id)
    assert stored.tool_calls == run.tool_calls and [t["name"] for t in stored.tools] == ["get_weather", "get_time"]
    assert scores.tool_args_valid(stored) == 1.0
    row = {"tool_call": {"name": "get_weather"}}
    stored.item = row
    assert scores.tool_name(stored) == 1.0 and scores.tool_call(stored) == 1.0
    stored.item = {"tool_call": {"name": "get_time"}}
    assert scores.tool_name(stored) == 0.0
    plain = lmbench.chat(ASK, model=TEST_MODEL, max_tokens=3)
    assert plain.tool_calls is None and plain.tools is None and scores.tool_args_valid(plain) != 1.0


def test_tools_and_a_json_schema_are_refused_together() -> None:
    with pytest.raises(lmbench.ParameterError, match="not both"):
        lmbench.chat(ASK, model=TEST_MODEL, tools=[WEATHER], json_schema={"type": "object"})


@pytest.fixture
def client() -> Iterator[openai.OpenAI]:
    """The real client against a server of the default model (SmolLM2-135M-Instruct, its template without tools)."""
    with Server(Settings(model=DEFAULT), port=0) as server:
        yield openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0)


def test_openai_client_required_and_named_calls_on_the_default_model(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(
        model=DEFAULT, messages=ASK, tools=[WEATHER], tool_choice="required", temperature=0, max_tokens=60
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls
    assert calls and all(c.function.name == "get_weather" for c in calls)
    assert json.loads(calls[0].function.arguments)["city"] == "Paris"
    assert len({c.id for c in calls}) == len(calls), "each call has its own id"
    stored = lmbench.get_store().get(reply.id.removeprefix("chatcmpl-"))
    assert stored.source == "api" and stored.tool_calls == [c.model_dump() for c in calls]


def test_openai_client_parallel_calls_and_the_answer_after_a_tool_result(client: openai.OpenAI) -> None:
    question = [{"role": "user", "content": "What is the weather in Paris, and what time is it in Tokyo?"}]
    reply = client.chat.completions.create(
        model=DEFAULT, messages=question, tools=[WEATHER, TIME], tool_choice="required", temperature=0, max_tokens=90
    )
    calls = reply.choices[0].message.tool_calls
    assert calls and {c.function.name for c in calls} <= {"get_weather", "get_time"}
    single = client.chat.completions.create(
        model=DEFAULT,
        messages=question,
        tools=[WEATHER, TIME],
        tool_choice="required",
        parallel_tool_calls=False,
        temperature=0,
        max_tokens=60,
    )
    assert len(single.choices[0].message.tool_calls) == 1, "parallel_tool_calls=False allows one call"
    followed = [
        *question,
        reply.choices[0].message.model_dump(exclude_none=True),
        *({"role": "tool", "tool_call_id": c.id, "content": "18 C and sunny; 9 pm"} for c in calls),
    ]
    answer = client.chat.completions.create(
        model=DEFAULT, messages=followed, tools=[WEATHER, TIME], temperature=0, max_tokens=200
    )
    message = answer.choices[0].message
    assert (message.content or message.tool_calls) and answer.choices[0].finish_reason in ("stop", "tool_calls")
    stored = lmbench.get_store().get(answer.id.removeprefix("chatcmpl-"))
    assert any("tool_result" in m["content"] for m in stored.messages), "the tool results reached the model"


def test_openai_client_streams_tool_calls_as_deltas(client: openai.OpenAI) -> None:
    chunks = list(
        client.chat.completions.create(
            model=DEFAULT,
            messages=ASK,
            tools=[WEATHER],
            tool_choice="required",
            temperature=0,
            max_tokens=60,
            stream=True,
        )
    )
    deltas = [d for c in chunks for d in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather" and deltas[0].id.startswith("call_")
    assert json.loads("".join(d.function.arguments for d in deltas if d.index == 0))["city"] == "Paris"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    auto = client.chat.completions.create(model=DEFAULT, messages=ASK, tools=[WEATHER], temperature=0, max_tokens=120)
    message = auto.choices[0].message
    assert bool(message.tool_calls) != bool(message.content), "auto: either calls or a reply, never raw JSON"
