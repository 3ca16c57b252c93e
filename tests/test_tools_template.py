"""A chat template with a tools section of its own gets the tools through it (OpenAI's shape, in its ``tools``
variable) instead of lmbench's fallback instruction; a template without one gets the instruction. Synthetic GGUFs
(the test model with a chat template written in) on the real engine, in Python and through the ``openai`` client."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import crafted
import gguf
import openai
import pytest
from conftest import TEST_MODEL, WEATHER_TOOL

import lmbench
from lmbench.serve import Server, Settings

# A Qwen-style template, reduced: the tools (if any) in a system block, then the turns.
WITH_TOOLS = (
    "{%- if tools %}<|im_start|>system\nTools you may call:\n"
    "{% for tool in tools %}\n{{ tool.function.name }}: {{ tool.function.description }} "
    "{{ tool.function.parameters | tojson }}{%- endfor %}<|im_end|>\n{% endif %}"
    "{%- for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
WITHOUT_TOOLS = (
    "{%- for message in messages %}<|im_start|>{{ message.role }}\n{{ message.content }}<|im_end|>\n{% endfor %}"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
FALLBACK = "You can call these tools"


def _with_template(folder: Path, name: str, template: str) -> Path:
    change = crafted._set("tokenizer.chat_template", template, gguf.GGUFValueType.STRING)
    return crafted.write(TEST_MODEL, folder / name, change)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("templates")
    return {
        "tools": _with_template(folder, "tools-template.gguf", WITH_TOOLS),
        "plain": _with_template(folder, "plain-template.gguf", WITHOUT_TOOLS),
    }


def _chat(model: Path, **options: object) -> lmbench.Run:
    return lmbench.chat(
        ASK,
        model=model,
        tools=[WEATHER_TOOL],
        max_tokens=200,
        temperature=0.7,
        seed=2,
        parallel_tool_calls=False,
        **options,
    )


def test_a_template_with_a_tools_section_renders_the_tools(models: dict[str, Path]) -> None:
    run = _chat(models["tools"], tool_choice="required")
    assert run.chat_format == "gguf" and run.prompt_sent is not None
    parameters = json.dumps(WEATHER_TOOL["function"]["parameters"], ensure_ascii=False)
    assert "Tools you may call:\nget_weather: Get the current weather in a city " + parameters in run.prompt_sent
    assert FALLBACK not in run.prompt_sent and run.messages == ASK
    (call,) = run.tool_calls or []
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"])["city"] in ("Paris", "Rome"), "held to the schema"
    assert lmbench.get_store().get(run.id).prompt_sent == run.prompt_sent


def test_a_template_without_one_gets_the_documented_instruction(models: dict[str, Path]) -> None:
    run = _chat(models["plain"], tool_choice="required")
    assert run.prompt_sent is not None and run.prompt_sent.startswith("<|im_start|>system\n" + FALLBACK)
    assert "get_weather" in run.prompt_sent and run.tool_calls
    plain_model = _chat(TEST_MODEL, tool_choice="required")
    assert plain_model.chat_format == "plain" and plain_model.prompt_sent.startswith(FALLBACK)


def test_no_tools_offered_renders_no_tools_section(models: dict[str, Path]) -> None:
    none = _chat(models["tools"], tool_choice="none")
    assert none.prompt_sent is not None and "Tools you may call" not in none.prompt_sent and not none.tool_calls
    bare = lmbench.chat(ASK, model=models["tools"], max_tokens=3)
    assert bare.prompt_sent == "<|im_start|>user\nWhat is the weather in Paris?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture
def client(models: dict[str, Path]) -> Iterator[openai.OpenAI]:
    with Server(Settings(model=str(models["tools"])), port=0) as running:
        yield openai.OpenAI(base_url=f"{running.url}/v1", api_key="unused", max_retries=0)


def test_the_openai_client_gets_the_templates_tools_section_for_one_and_for_n_choices(client: openai.OpenAI) -> None:
    for n in (1, 2):
        reply = client.chat.completions.create(
            model="tools-template",
            messages=ASK,
            tools=[WEATHER_TOOL],
            tool_choice="required",
            max_tokens=200,
            parallel_tool_calls=False,
            seed=4,
            n=n,
        )
        assert len(reply.choices) == n
        assert all(c.finish_reason == "tool_calls" and c.message.tool_calls for c in reply.choices)
    runs = lmbench.runs()
    assert len(runs) == 3
    for run_id in runs.id:
        sent = lmbench.get_store().get(run_id).prompt_sent
        assert sent is not None and "Tools you may call:\nget_weather" in sent and FALLBACK not in sent
