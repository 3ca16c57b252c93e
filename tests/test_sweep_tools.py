"""Tool calls in sweeps on the real test model: every run is a chat offering the tools, records its calls, and the
tool scorers (with a data set's expected ``tool_call``) report tool-call accuracy per grid cell."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

import lmbench

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]},
    },
}
TIME = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "The time now in a city",
        "parameters": {"type": "object", "properties": {"city": {"enum": ["Paris", "Rome"]}}, "required": ["city"]},
    },
}
DATA = [
    {"id": "paris", "city": "Paris", "tool_call": {"name": "get_weather", "arguments": {"city": "Paris"}}},
    {"id": "rome", "city": "Rome", "tool_call": json.dumps({"name": "get_time", "arguments": {"city": "Rome"}})},
]


def _sweep(**options: Any) -> pd.DataFrame:
    defaults: dict[str, Any] = {
        "data": DATA,
        "tools": [WEATHER, TIME],
        "tool_choice": "required",
        "parallel_tool_calls": False,
        "grid": {"temperature": [0.3, 1.2]},
        "seeds": 2,
        "max_tokens": 200,
        "progress": False,
    }
    return lmbench.sweep("What is it like in {city}?", **{**defaults, **options})


def test_a_tool_sweep_records_the_calls_and_scores_them() -> None:
    frame = _sweep(experiment="tools")
    assert len(frame) == 8 and {"tool_name", "tool_args_valid", "tool_call"} <= set(frame.columns)
    store = lmbench.get_store()
    for row in frame.itertuples():
        run = store.get(row.id)
        assert run.source == "sweep" and [t["name"] for t in run.tools] == ["get_weather", "get_time"]
        assert run.chat_format == "plain" and "You can call these tools" in run.prompt_sent
        (call,) = run.tool_calls
        name, arguments = call["function"]["name"], json.loads(call["function"]["arguments"])
        expected = {d["id"]: d for d in DATA}[run.item["id"]]["tool_call"]
        expected = json.loads(expected) if isinstance(expected, str) else expected
        assert run.item["tool_call"] == expected and "tool_call" not in run.item["vars"]
        assert row.tool_name == float(name == expected["name"])
        assert row.tool_call == float(name == expected["name"] and arguments == expected["arguments"])
        assert row.tool_args_valid == 1.0, "the grammar holds the arguments to the schema"
    accuracy = frame.groupby("temperature").tool_call.mean()
    assert list(accuracy.index) == [0.3, 1.2] and accuracy.between(0, 1).all()
    again = _sweep(experiment="tools")
    assert sorted(again.id) == sorted(frame.id) and len(lmbench.runs()) == 8, "resumed: nothing run twice"


def test_a_sweep_offering_no_tool_choice_records_no_calls() -> None:
    frame = lmbench.sweep(
        "Hello", tools=[WEATHER], tool_choice="none", seeds=1, max_tokens=5, progress=False, experiment="none"
    )
    run = lmbench.get_store().get(frame.id.iloc[0])
    assert run.tools is not None and not run.tool_calls and "You can call these tools" not in run.prompt_sent


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among the tools"),
        ({"chat": False}, "tools are offered to chats"),
        ({"json_schema": {"type": "object"}}, "give tools or json_schema/grammar"),
        ({"data": [{"city": "Paris", "tool_call": "not json"}]}, "tool_call must be"),
    ],
)
def test_bad_tool_sweeps_are_refused_before_anything_runs(options: dict[str, Any], message: str) -> None:
    with pytest.raises(lmbench.ParameterError, match=message):
        _sweep(**options)
    assert lmbench.runs().empty


def test_a_tool_sweep_on_a_dask_cluster_makes_the_local_calls() -> None:
    def calls(frame: pd.DataFrame) -> dict[tuple[str, float, int], list[dict[str, Any]]]:
        store = lmbench.get_store()
        return {
            (row.item, row.temperature, row.seed): [c["function"] for c in store.get(row.id).tool_calls]
            for row in frame.itertuples()
        }

    local = _sweep(name="local-tools")
    clustered = _sweep(name="dask-tools", cluster="local:1")
    assert calls(clustered) == calls(local) and len(clustered) == 8
    assert clustered.tool_call.tolist() == local.tool_call.tolist()
