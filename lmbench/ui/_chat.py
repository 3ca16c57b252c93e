"""The Chat tab: a conversation through the model's chat template, every turn recorded."""

from __future__ import annotations

import ipywidgets as w

from ..chat import chat
from ..errors import ParameterError
from . import _html as view
from ._parts import Host, Throttled, button, row


class ChatTab:
    """A conversation with the model through its chat template; each reply says what it cost."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.conversation: list[dict[str, str]] = []
        self._notes: list[str | None] = []  # one per turn: a reply's tokens, speed and ending
        self.system = w.Text(placeholder=t("system message (optional)"), layout=w.Layout(width="100%"))
        self.transcript = w.HTML()
        self.transcript.add_class("lmbench-chat")
        self.input = w.Textarea(placeholder=t("Message"), rows=2, layout=w.Layout(width="100%"))
        self.input.add_class("lmbench-chat-input")
        self.send_button = button(t("Send"), "primary", "Send the message (Enter)", "lmbench-send")
        self.send_button.on_click(lambda _: host.start(self.job))
        self.regenerate_button = button(t("Regenerate"), "", "Ask for the last reply again", "lmbench-regenerate")
        self.regenerate_button.on_click(lambda _: host.start(self.regenerate))
        self.stop_button = button(t("Stop"), "danger", "Stop the reply", "lmbench-chat-stop")
        self.stop_button.disabled = True
        self.stop_button.on_click(lambda _: host.cancel.set())
        new_chat = button(t("New chat"), "", "Forget the conversation", "lmbench-new-chat")
        new_chat.on_click(lambda _: self.new())
        self.render()
        self.box = w.VBox(
            [
                self.system,
                self.transcript,
                self.input,
                row([self.send_button, self.stop_button, self.regenerate_button, new_chat]),
            ]
        )

    def job(self) -> None:
        text = self.input.value.strip()
        if not text:
            raise ParameterError("type a message first", name="messages", value=text)
        system = self.system.value.strip()
        user = {"role": "user", "content": text}
        messages = [*([{"role": "system", "content": system}] if system else []), *self.conversation, user]
        engine = self.host.load()
        self.host.status(self.host.t("replying…"))
        stream = Throttled(lambda reply: self.render(pending=(text, reply)))
        try:
            run = self.host.recorded(chat, messages, engine, on_token=stream, **self.host.values())
        except BaseException:
            self.render()
            raise
        self.host.made(run)
        self.conversation += [user, {"role": "assistant", "content": run.text.strip()}]
        self._notes += [None, view.reply_note(run)]
        self.input.value = ""
        self.render()
        self.host.show_run(run)

    def regenerate(self) -> None:
        """Drop the last reply and ask again (a new seed unless the seed is fixed)."""
        if len(self.conversation) < 2 or self.conversation[-1]["role"] != "assistant":
            raise ParameterError("there is no reply to regenerate yet", name="messages")
        question = self.conversation[-2]["content"]
        del self.conversation[-2:], self._notes[-2:]
        self.input.value = question
        self.job()

    def new(self) -> None:
        """Forget the conversation (its runs stay in the store)."""
        self.conversation, self._notes = [], []
        self.render()

    def render(self, pending: tuple[str, str] | None = None) -> None:
        turns: list[tuple[str, str, str | None]] = [
            (m["role"], m["content"], note) for m, note in zip(self.conversation, self._notes, strict=True)
        ]
        if pending is not None:
            turns += [("user", pending[0], None), ("assistant", pending[1] + " …", None)]
        self.transcript.value = view.chat(turns)
