"""The Chat tab driven in Python against the real test model: copy, edit-and-resend and delete of a message,
conversations saved and reopened by name, turns grouped in History, tool calls answered from JSON boxes."""

from __future__ import annotations

import html
import json
import threading

import pytest

import lmbench

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture
def panel(panel: lmbench.Panel) -> lmbench.Panel:
    panel.form.sliders["max_tokens"].value = 8
    return panel


def _click(panel: lmbench.Panel, button: object) -> None:
    button.click()  # type: ignore[attr-defined]
    panel.wait(120)
    assert not panel.busy
    assert panel.error.value == "", panel.error.value


def _say(panel: lmbench.Panel, text: str) -> lmbench.Run:
    panel.chat.input.value = text
    _click(panel, panel.chat.send_button)
    assert panel.last_run is not None
    return panel.last_run


def _rows(panel: lmbench.Panel) -> list[object]:
    return [c for c in panel.chat.transcript.children if "lmbench-chat-message" in c._dom_classes]


def test_a_message_is_copied_edited_and_sent_again_or_deleted(panel: lmbench.Panel) -> None:
    first = _say(panel, "Tell me about a dog.")
    _say(panel, "And then?")
    assert [m["role"] for m in panel.chat.conversation] == ["user", "assistant", "user", "assistant"]
    rows = _rows(panel)
    assert len(rows) == 4
    copy = rows[1].children[1].children[0].value  # the reply's copy button carries the reply's text
    assert "navigator.clipboard.writeText(this.dataset.text)" in copy
    assert f"data-text='{html.escape(first.text.strip(), quote=True)}'" in copy

    edit = rows[0].children[1].children[1]  # the first question's pencil: edit and send again
    assert "lmbench-chat-edit" in edit._dom_classes
    edit.click()
    assert panel.chat.input.value == "Tell me about a dog." and panel.chat.editing == 0
    assert (
        "lmbench-chat-editing" in _rows(panel)[0]._dom_classes and "Send replaces it" in panel.chat.editing_note.value
    )
    resent = _say(panel, "Tell me about a cat.")
    assert [m["content"] for m in panel.chat.conversation if m["role"] == "user"] == ["Tell me about a cat."]
    assert len(panel.chat.conversation) == 2 and panel.chat.editing is None
    assert [m["role"] for m in resent.messages] == ["user"], "the edited question alone was sent"
    assert len(lmbench.runs()) == 3, "the replaced turns stay in the store"

    delete = _rows(panel)[1].children[1].children[-1]
    assert "lmbench-chat-delete" in delete._dom_classes
    delete.click()
    assert [m["role"] for m in panel.chat.conversation] == ["user"]
    assert "Tell me about a cat." in panel.chat.shown and "lmbench-chat-assistant" not in panel.chat.shown


def test_a_failed_resend_keeps_the_conversation(panel: lmbench.Panel) -> None:
    _say(panel, "Tell me about a dog.")
    _rows(panel)[0].children[1].children[1].click()
    panel.form.sliders["max_tokens"].value = 10**9
    panel.chat.input.value = "Tell me about a cat."
    panel.chat.send_button.click()
    panel.wait(60)
    assert "Max Tokens 1000000000 is more than the context" in panel.error.value
    assert [m["content"] for m in panel.chat.conversation if m["role"] == "user"] == ["Tell me about a dog."]
    assert len(panel.chat.conversation) == 2 and panel.chat.input.value == "Tell me about a cat."


def test_conversations_are_saved_and_reopened_by_name_and_grouped_in_history(panel: lmbench.Panel) -> None:
    panel.chat.system.value = "You tell stories."
    one = _say(panel, "Tell me about a dog.")
    two = _say(panel, "And then?")
    assert one.conversation_id == two.conversation_id == panel.chat.conversation_id
    panel.chat.name.value = "dog stories"
    _click(panel, panel.chat.save_button)
    assert panel.chat.saved.options == ("dog stories",)

    panel.chat.new()
    other = _say(panel, "Hello")
    assert other.conversation_id != one.conversation_id
    panel.chat.saved.value = "dog stories"
    _click(panel, panel.chat.open_button)
    assert panel.chat.system.value == "You tell stories."
    assert [m["content"] for m in panel.chat.conversation if m["role"] == "user"] == [
        "Tell me about a dog.",
        "And then?",
    ]
    assert panel.chat.name.value == "dog stories" and "tokens" in panel.chat.shown, "the replies' notes come back"
    three = _say(panel, "The end?")
    assert three.conversation_id == one.conversation_id, "a reopened conversation goes on under its id"
    assert [m["role"] for m in three.messages] == ["system", "user", "assistant", "user", "assistant", "user"]

    panel.history.refresh()
    labels = [label for label, _ in panel.history.runs.options]
    header = next(i for i, label in enumerate(labels) if "dog stories" in label)
    assert "3" in labels[header] and all(label.startswith("↳") for label in labels[header + 1 : header + 4])
    assert [value for _, value in panel.history.runs.options][header + 1 : header + 4] == [three.id, two.id, one.id]
    assert any("Hello" in label and label.startswith("↳") for label in labels), "an unsaved chat is grouped too"

    panel.chat.new()  # choosing the conversation's line in History reopens it in the Chat tab
    panel.history.runs.value = panel.history.runs.options[header][1]
    assert panel.tabs.selected_index == list(panel.tabs.children).index(panel.chat.box)
    assert panel.chat.name.value == "dog stories" and panel.chat.conversation_id == one.conversation_id
    assert len(panel.chat.conversation) == 4, "the newest save: the turn after it is in the store, not in the save"


def test_concurrent_saves_lose_nothing(panel: lmbench.Panel) -> None:
    store = panel.store
    message = [{"role": "user", "content": "hi"}]
    threads = [
        threading.Thread(
            target=store.save_conversation, args=("same", [*message, {"role": "assistant", "content": str(i)}])
        )
        for i in range(8)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    saves = store.conversations()
    assert len(saves) == 8 and set(saves.name) == {"same"}
    replies = {store.conversation("same", save=int(s)).messages[1]["content"] for s in saves.save}
    assert replies == {str(i) for i in range(8)}
    assert store.conversation("same").save == saves.save.max(), "the name opens its newest save"
    with pytest.raises(lmbench.ParameterError, match="needs a name"):
        store.save_conversation("  ", message)
    with pytest.raises(lmbench.StoreError, match="no conversation named 'nope'"):
        store.conversation("nope")


def test_tool_calls_are_cards_answered_with_json_and_the_model_continues(panel: lmbench.Panel) -> None:
    panel.form.sliders["max_tokens"].value = 100
    panel.form.sliders["temperature"].value = 0.8
    panel.form.random_seed.value = False
    panel.form.seed.value = 3
    panel.chat.tools.value = json.dumps([WEATHER])
    panel.chat.tool_choice.value = "required"
    panel.chat.parallel.value = False  # one call: a story model would go on calling
    asked = _say(panel, "What is the weather in Paris?")
    assert asked.tool_calls and asked.finish_reason in ("stop", "tool_calls")
    call = asked.tool_calls[0]
    assert call["function"]["name"] == "get_weather" and "city" in json.loads(call["function"]["arguments"])
    assert panel.chat.conversation[-1]["tool_calls"] == asked.tool_calls
    cards = panel.chat.calls.children
    assert len(cards) == len(asked.tool_calls) + 1, "a card per call, then the button that sends the results"
    card, box = cards[0].children
    assert "get_weather" in card.value and call["id"] in card.value and "&quot;city&quot;" in card.value

    box.value = "not json"
    panel.chat.results_button.click()
    panel.wait(60)
    assert "must be JSON" in panel.error.value and "get_weather" in panel.error.value
    for extra in cards[1:-1]:
        extra.children[1].value = "{}"
    box.value = '{"temperature_c": 18, "sky": "sunny"}'
    panel.chat.tool_choice.value = "none"  # the model answers in words now
    _click(panel, panel.chat.results_button)
    answered = panel.last_run
    assert answered is not None and answered.id != asked.id and not answered.tool_calls
    roles = [m["role"] for m in panel.chat.conversation]
    assert roles == ["user", "assistant", *["tool"] * len(asked.tool_calls), "assistant"]
    tool_message = panel.chat.conversation[2]
    assert tool_message["tool_call_id"] == call["id"] and json.loads(tool_message["content"])["sky"] == "sunny"
    assert any("tool_result" in m["content"] and call["id"] in m["content"] for m in answered.messages)
    assert panel.chat.calls.children == (), "answered calls leave no cards"


def test_a_bad_tools_box_is_refused_before_anything_runs(panel: lmbench.Panel) -> None:
    panel.chat.tools.value = "[{"
    panel.chat.input.value = "Hi"
    panel.chat.send_button.click()
    panel.wait(60)
    assert "tools box must be a JSON list" in panel.error.value
    assert len(lmbench.runs()) == 0 and panel.chat.input.value == "Hi"
