"""Chat mode against the real test model (no template: the plain fallback) and a copy of it with a ChatML template."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TEST_MODEL

import lmbench

CHATML = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def chatml_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The test model with a ChatML ``tokenizer.chat_template`` added to its metadata (gguf's own script)."""
    target = tmp_path_factory.mktemp("chatml") / "stories260K-chatml.gguf"
    script = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata"]
    subprocess.run(
        [*script, str(TEST_MODEL), str(target), "--chat-template", CHATML],
        check=True,
        capture_output=True,
        input=b"y\n",
    )
    return target


def test_chat_without_template_uses_the_plain_fallback() -> None:
    messages = [
        {"role": "system", "content": "You tell short stories."},
        {"role": "user", "content": "Tell me about a cat."},
    ]
    run = lmbench.chat(messages, max_tokens=30, seed=3, experiment="chat")
    assert run.chat_format == "plain"
    assert run.prompt == "Tell me about a cat.", "the prompt as asked: the last user message"
    assert run.prompt_sent == "You tell short stories.\n\nUser: Tell me about a cat.\nAssistant:"
    assert run.stop == () and "User:" not in run.text, "the template's stop is used, the stops asked for are kept"
    assert run.completion_tokens > 0
    stored = lmbench.get_store().get(run.id)
    assert stored.messages == messages and stored.chat_format == "plain" and stored.text == run.text
    assert lmbench.runs("chat").chat_format.tolist() == ["plain"]
    again = lmbench.chat(messages, max_tokens=30, seed=3)
    assert again.text == run.text, "same conversation and seed, same reply"


def test_chat_continues_a_conversation() -> None:
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    run = lmbench.chat([*messages, {"role": "user", "content": "Tell a story."}], max_tokens=10, seed=1)
    assert run.prompt == "Tell a story."
    assert run.prompt_sent == "User: Hi\nAssistant: Hello.\nUser: Tell a story.\nAssistant:"


@pytest.mark.parametrize(
    ("messages", "problem"),
    [
        ("hello", "non-empty list"),
        ([], "non-empty list"),
        ([{"role": "wizard", "content": "x"}], "roles are: system, user, assistant"),
        ([{"role": "user"}], "content must be a string"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": "x"}]}], "content must be a string"),
        ([{"role": "user", "content": "x", "extra": 1}], 'must be a dict with "role" and "content"'),
    ],
)
def test_bad_messages_are_rejected_before_anything_runs(messages: object, problem: str) -> None:
    with pytest.raises(lmbench.ParameterError, match=problem):
        lmbench.chat(messages)  # type: ignore[arg-type]
    assert lmbench.runs().empty


def test_chat_uses_the_models_own_template(chatml_model: Path) -> None:
    assert lmbench.models.info(chatml_model)["has_chat_template"]
    run = lmbench.chat([{"role": "user", "content": "Hi"}], model=chatml_model, max_tokens=8, seed=2)
    assert run.chat_format == "gguf"
    assert run.prompt == "Hi"
    assert run.prompt_sent == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert run.completion_tokens > 0


def test_content_parts_are_joined() -> None:
    parts = [{"type": "text", "text": "Tell me "}, {"type": "text", "text": "a story."}]
    run = lmbench.chat([{"role": "user", "content": parts}], max_tokens=4, seed=1)
    assert run.prompt_sent == "User: Tell me a story.\nAssistant:"


def test_a_turn_is_filed_under_its_conversation() -> None:
    asked = [{"role": "user", "content": "Hi"}]
    run = lmbench.chat(asked, model=TEST_MODEL, max_tokens=3, conversation_id="trip-1")
    assert run.conversation_id == "trip-1" and lmbench.runs().conversation_id.tolist() == ["trip-1"]
    with pytest.raises(lmbench.ParameterError, match="conversation_id") as caught:
        lmbench.chat(asked, model=TEST_MODEL, max_tokens=3, conversation_id=5)  # type: ignore[arg-type]
    assert caught.value.name == "conversation_id" and len(lmbench.runs()) == 1, "refused before it ran"
