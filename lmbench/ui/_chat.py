"""The Chat tab: a conversation through the model's chat template, every turn recorded under its conversation.

Each message can be copied, edited and sent again (what followed it is dropped) or deleted; the
conversation is saved in the store by name and reopened from it (``Store.save_conversation``). With
tools given (a JSON list of OpenAI-style functions) the model's calls are shown as cards, each with
a JSON box for its result: the results go back as ``tool`` messages and the model continues.
"""

from __future__ import annotations

import contextlib
import html
import json
import uuid
from typing import Any

import ipywidgets as w

from .. import tools as tools_mod
from ..chat import chat
from ..errors import LmbenchError, ParameterError
from ..run import Run
from . import _html as view
from ._parts import Host, Throttled, button, folded, row

TOOLS_PLACEHOLDER = '[{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}]'


def _full() -> w.Layout:
    """The tab's whole width, margins included (a width of 100% plus its margin would stick out)."""
    return w.Layout(width="auto")


def _small(icon: str, tooltip: str, css: str) -> w.Button:
    made = w.Button(icon=icon, tooltip=tooltip, layout=w.Layout(width="2.6em", height="1.9em"))
    made.add_class(css)
    return made


def _shown(message: dict[str, Any]) -> str:
    """What a message says on screen: its text, and a tool-calling reply's calls as code."""
    calls = message.get("tool_calls") or []
    lines = [f"`{c['function']['name']}({c['function']['arguments']})`" for c in calls]
    return "\n\n".join([*([message["content"]] if message.get("content") else []), *lines])


# The copy button looks like the widget buttons beside it, in either theme.
_COPY_STYLE = (
    "height:1.9em;margin:2px;padding:0 8px;border:none;border-radius:2px;cursor:pointer;"
    "background:var(--jp-layout-color2,#eee);color:var(--jp-ui-font-color1,#000);font-size:var(--jp-ui-font-size1,13px)"
)


def _copy(text: str, t: Any) -> str:
    """A button that copies ``text`` to the clipboard in the browser (no round trip to the kernel)."""
    return (
        f"<button class='lmbench-chat-copy' title='{html.escape(t('Copy the message'))}' style='{_COPY_STYLE}' "
        f"data-text='{html.escape(text, quote=True)}' "
        "onclick='navigator.clipboard.writeText(this.dataset.text)'>"
        f"{html.escape(t('Copy'))}</button>"
    )


class ChatTab:
    """A conversation with the model through its chat template; each reply says what it cost."""

    def __init__(self, host: Host) -> None:
        self.host = host
        t = host.t
        self.conversation: list[dict[str, Any]] = []  # OpenAI-style messages, tool calls and results included
        self._runs: list[str | None] = []  # one per message: the run that made it (None: a person wrote it)
        self._notes: list[str | None] = []  # one per message: a reply's tokens, speed and ending
        self.conversation_id = uuid.uuid4().hex
        self.editing: int | None = None  # the message Send replaces, while one is edited
        self.system = w.Text(placeholder=t("system message (optional)"), layout=_full())
        self.tools = w.Textarea(placeholder=TOOLS_PLACEHOLDER, rows=5, layout=_full())
        self.tools.add_class("lmbench-chat-tools")
        self.tool_choice = w.Dropdown(
            options=list(tools_mod.CHOICES),
            value="auto",
            description=t("tool choice"),
            style={"description_width": "initial"},  # the Spanish words in full
        )
        self.tool_choice.add_class("lmbench-tool-choice")
        self.parallel = w.Checkbox(True, description=t("parallel calls"), indent=False)
        self.parallel.add_class("lmbench-tool-parallel")
        tools_box = folded(w.VBox([self.tools, row([self.tool_choice, self.parallel])]), t("Tools"))
        tools_box.add_class("lmbench-chat-tools-box")
        self.transcript = w.VBox()
        self.transcript.add_class("lmbench-chat")
        self.pending = w.HTML()
        self.calls = w.VBox()
        self.calls.add_class("lmbench-tool-calls")
        self._results: list[tuple[dict[str, Any], w.Textarea]] = []
        self.results_button = button(
            t("Send results"), "primary", t("Send the tool results; the model continues"), "lmbench-tool-send"
        )
        self.results_button.layout.width = "auto"  # "Enviar resultados" uncut
        self.results_button.on_click(lambda _: host.start(self.answer_calls))
        self.editing_note = w.HTML()
        self.input = w.Textarea(placeholder=t("Message"), rows=2, layout=_full())
        self.input.add_class("lmbench-chat-input")
        self.send_button = button(t("Send"), "primary", t("Send the message (Enter)"), "lmbench-send")
        self.send_button.on_click(lambda _: host.start(self.job))
        self.regenerate_button = button(t("Regenerate"), "", t("Ask for the last reply again"), "lmbench-regenerate")
        self.regenerate_button.on_click(lambda _: host.start(self.regenerate))
        self.stop_button = button(t("Stop"), "danger", t("Stop the reply"), "lmbench-chat-stop")
        self.stop_button.disabled = True
        self.stop_button.on_click(lambda _: host.cancel.set())
        new_chat = button(t("New chat"), "", t("Forget the conversation"), "lmbench-new-chat")
        new_chat.on_click(lambda _: self.new())
        self.name = w.Text(placeholder=t("conversation name"), layout=w.Layout(width="14em"))
        self.name.add_class("lmbench-chat-name")
        self.save_button = button(
            t("Save"), "", t("Save the conversation in the store under this name"), "lmbench-chat-save"
        )
        self.save_button.on_click(lambda _: host.start(self.save))
        self.saved = w.Dropdown(options=[], description=t("saved"), layout=w.Layout(width="18em"))
        self.saved.add_class("lmbench-chat-saved")
        self.open_button = button(t("Open"), "", t("Reopen the saved conversation"), "lmbench-chat-open")
        self.open_button.on_click(lambda _: host.start(lambda: self.open(self.saved.value)))
        self.render()
        self.refresh_saved()
        self.box = w.VBox(
            [
                self.system,
                tools_box,
                self.transcript,
                self.calls,
                self.editing_note,
                self.input,
                row([self.send_button, self.stop_button, self.regenerate_button, new_chat]),
                row([self.name, self.save_button, self.saved, self.open_button]),
            ]
        )
        self.box.add_class("lmbench-chat-tab")

    # Jobs (in the panel's worker) ---------------------------------------------------------------

    def job(self) -> None:
        """Send the message box (replacing the message being edited, and what followed it)."""
        text = self.input.value.strip()
        if not text:
            raise ParameterError("type a message first", name="messages", value=text)
        self._reply([{"role": "user", "content": text}], keep=self.editing)
        self.input.value = ""

    def regenerate(self) -> None:
        """Drop the last reply and ask again (a new seed unless the seed is fixed)."""
        if not self.conversation or self.conversation[-1]["role"] != "assistant":
            raise ParameterError("there is no reply to regenerate yet", name="messages")
        self._reply([], keep=len(self.conversation) - 1)

    def answer_calls(self) -> None:
        """Send each tool call's result (its JSON box) as a ``tool`` message; the model continues."""
        answers = []
        for call, box in self._results:
            name = call["function"]["name"]
            try:
                json.loads(box.value)
            except ValueError as exc:
                raise ParameterError(
                    f"the result of {name} ({call['id']}) must be JSON: {exc}", name="tool result", value=box.value
                ) from None
            answers.append({"role": "tool", "tool_call_id": call["id"], "content": box.value.strip()})
        if not answers:
            raise ParameterError("there is no tool call to answer", name="tool result")
        self._reply(answers)

    def _reply(self, new: list[dict[str, Any]], keep: int | None = None) -> None:
        """Add ``new`` messages and the model's reply to them (recorded under this conversation), after the
        first ``keep`` messages (all by default); nothing is dropped unless the reply came."""
        offered = self.offered_tools()
        system = self.system.value.strip()
        kept = self.conversation[:keep]
        messages = [*([{"role": "system", "content": system}] if system else []), *kept, *new]
        engine = self.host.load()
        self.host.status(self.host.t("replying…"))
        shown = next((_shown(m) for m in reversed(new) if m["role"] == "user"), None)
        stream = Throttled(lambda reply: self._stream(shown, reply))
        try:
            run = self.host.recorded(
                chat,
                messages,
                engine,
                on_token=stream,
                tools=offered,
                tool_choice=self.tool_choice.value,
                parallel_tool_calls=self.parallel.value,
                conversation_id=self.conversation_id,
                **self.host.values(),
            )
        finally:
            self.pending.value = ""
        self.host.made(run)
        self._cut(len(kept))
        self._add(new, run)
        self.render()
        self.host.show_run(run)

    def _add(self, new: list[dict[str, Any]], run: Run) -> None:
        reply: dict[str, Any] = {"role": "assistant", "content": run.text.strip()}
        if run.tools:
            reply["content"] = tools_mod.reply(run.text).strip()
        if run.tool_calls:
            reply["tool_calls"] = run.tool_calls
        self.conversation += [*new, reply]
        self._runs += [None] * len(new) + [run.id]
        self._notes += [None] * len(new) + [view.reply_note(run)]

    def offered_tools(self) -> list[dict[str, Any]] | None:
        """The tools box as a list of function tools (None when empty), or ``ParameterError`` saying why not."""
        text = self.tools.value.strip()
        if not text:
            return None
        try:
            given = json.loads(text)
        except ValueError as exc:
            raise ParameterError(f"the tools box must be a JSON list of function tools: {exc}", name="tools") from None
        tools_mod.check_tools(given)
        return list(given)

    # Editing the conversation -------------------------------------------------------------------

    def edit(self, index: int) -> None:
        """Put a message of the person's back in the box: Send replaces it (and drops what followed)."""
        self.editing = index
        self.input.value = self.conversation[index]["content"]
        self.render()

    def delete(self, index: int) -> None:
        """Take one message out of the conversation (its run stays in the store)."""
        del self.conversation[index], self._runs[index], self._notes[index]
        self.editing = None
        self.render()

    def _cut(self, index: int) -> None:
        del self.conversation[index:], self._runs[index:], self._notes[index:]
        self.editing = None

    def new(self) -> None:
        """Forget the conversation (its runs stay in the store); the next turns start a new one."""
        self.conversation, self._runs, self._notes = [], [], []
        self.conversation_id, self.editing = uuid.uuid4().hex, None
        self.name.value = ""
        self.render()

    # Saved conversations -------------------------------------------------------------------------

    def save(self) -> None:
        """Save the conversation in the store under the name box (a new save: nothing saved is overwritten)."""
        if not self.conversation:
            raise ParameterError("there is nothing to save yet: send a message first", name="messages")
        system = self.system.value.strip()
        messages = [*([{"role": "system", "content": system}] if system else []), *self.conversation]
        saved = self.host.store.save_conversation(
            self.name.value,
            messages,
            conversation_id=self.conversation_id,
            run_ids=[*([None] if system else []), *self._runs],
            tools=self.offered_tools(),
        )
        self.host.event(f"saved the conversation {saved.name!r} ({len(messages)} messages, save {saved.save})")
        self.refresh_saved()
        self.saved.value = saved.name

    def open(self, name: str | None) -> None:
        """Reopen the newest save of a conversation: its messages, system message, tools and the notes of
        its replies; the next turns continue it (under its id)."""
        if not name:
            raise ParameterError("choose a saved conversation first", name="name")
        saved = self.host.store.conversation(name)
        messages, run_ids = list(saved.messages), list(saved.run_ids)
        system = messages[0]["content"] if messages and messages[0]["role"] == "system" else ""
        if system:
            del messages[0], run_ids[0]
        self.system.value = system
        self.tools.value = json.dumps(saved.tools, indent=1) if saved.tools else ""
        self.conversation, self._runs = messages, run_ids
        self._notes = [self._note(run_id) for run_id in run_ids]
        self.conversation_id, self.name.value, self.editing = saved.id, saved.name, None
        self.render()

    def _note(self, run_id: str | None) -> str | None:
        if run_id is None:
            return None
        try:
            return view.reply_note(self.host.store.get(run_id))
        except LmbenchError:  # a run deleted since: the message is kept without its note
            return None

    def refresh_saved(self) -> None:
        """The names saved in the store, most recently saved first."""
        try:
            frame = self.host.store.conversations()
        except LmbenchError as exc:
            self.host.show_error(exc)
            return
        self.saved.options = list(dict.fromkeys(frame["name"].iloc[::-1]))

    # Showing -----------------------------------------------------------------------------------

    def _stream(self, asked: str | None, reply: str) -> None:
        turns = [*([("user", asked, None)] if asked is not None else []), ("assistant", reply + " …", None)]
        self.pending.value = view.chat(turns)

    def render(self) -> None:
        """The transcript, one row per message (copy, edit, delete), and the cards of calls to answer."""
        t = self.host.t
        rows: list[w.Widget] = []
        for i, (message, note) in enumerate(zip(self.conversation, self._notes, strict=True)):
            shown = _shown(message)
            bubble = w.HTML(view.chat([(message["role"], shown, note)]))
            actions: list[w.Widget] = [w.HTML(_copy(shown, t))]
            if message["role"] == "user":
                edit = _small("pencil", t("Edit and send again"), "lmbench-chat-edit")
                edit.on_click(lambda _, i=i: self.edit(i))
                actions.append(edit)
            delete = _small("trash", t("Delete the message"), "lmbench-chat-delete")
            delete.on_click(lambda _, i=i: self.delete(i))
            actions.append(delete)
            side = "flex-end" if message["role"] == "user" else "flex-start"  # under its bubble
            message_row = w.VBox([bubble, w.HBox(actions, layout=w.Layout(justify_content=side))])
            message_row.add_class("lmbench-chat-message")
            if i == self.editing:
                message_row.add_class("lmbench-chat-editing")
            rows.append(message_row)
        if not rows:
            rows.append(w.HTML(f"<i style='opacity:0.6'>{html.escape(t('No messages yet.'))}</i>"))
        self.transcript.children = [*rows, self.pending]
        self.editing_note.value = (
            f"<small>{html.escape(t('Editing a message: Send replaces it and what followed it'))}</small>"
            if self.editing is not None
            else ""
        )
        self._show_calls()

    def _show_calls(self) -> None:
        """A card per call of the last reply, with a JSON box for its result, while they wait for answers."""
        last = self.conversation[-1] if self.conversation else None
        calls = (last or {}).get("tool_calls") or []
        self._results = []
        cards: list[w.Widget] = []
        for call in calls:
            arguments = call["function"]["arguments"]
            with contextlib.suppress(ValueError):  # else shown as the model wrote it
                arguments = json.dumps(json.loads(arguments), indent=1, ensure_ascii=False)
            card = w.HTML(
                f"<div class='lmbench-tool-card'><b>{html.escape(call['function']['name'])}</b> "
                f"<small style='opacity:0.7'>{html.escape(call['id'])}</small>"
                f"<pre style='margin:2px 0;white-space:pre-wrap'>{html.escape(arguments)}</pre></div>"
            )
            box = w.Textarea(placeholder=self.host.t("result (JSON)"), rows=2, layout=_full())
            box.add_class("lmbench-tool-result")
            self._results.append((call, box))
            cards.append(w.VBox([card, box]))
        self.calls.children = [*cards, self.results_button] if cards else []

    @property
    def shown(self) -> str:
        """The transcript's HTML as shown (the messages and a reply still streaming)."""
        return "".join(c.children[0].value if isinstance(c, w.VBox) else c.value for c in self.transcript.children)
