"""The panel's HTML: pure functions from runs, tokens and log lines to markup (no widgets here)."""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import mistune

from .._gguf import readable_count
from ..errors import LmbenchError, ModelLoadError, ModelNotFoundError, ParameterError
from ..params import param_specs
from ..run import MUTED, Run

MONO = "font-family:var(--jp-code-font-family,monospace)"


def history_header(t: Callable[[str], str]) -> str:
    """The history list is a small table: monospaced rows under this header (select a row to restore it)."""
    c = {name: html.escape(_column_word(t, name)) for name in HISTORY_COLUMNS}
    return (
        "<style>.lmbench-history select{font-family:var(--jp-code-font-family,monospace);font-size:90%}</style>"
        f"<pre style='margin:0;font-size:90%'>{c['time']:<8}  {c['run']:<8}  {c['model']:<20}  {c['source']:<6}  "
        f"{c['temp']:>5} {c['top_p']:>5} {c['max']:>6} {c['tokens']:>6}  {c['finish']:<9}  {c['sent']:<5}  "
        f"{c['prompt']}</pre>"
    )


HISTORY_COLUMNS = ("time", "run", "model", "source", "temp", "top_p", "max", "tokens", "finish", "sent", "prompt")

# The panel's tabs keep their whole titles (they wrap onto a second row on a narrow screen, never cut); the
# Stop Strings box (its typing field and its tags) takes the panel's whole width.
PANEL_STYLE = (
    "<style>.lmbench-panel .jupyter-widgets.widget-tab > .lm-TabBar .lm-TabBar-content{flex-wrap:wrap}"
    ".lmbench-panel .jupyter-widgets.widget-tab > .lm-TabBar .lm-TabBar-tab{flex:0 0 auto;max-width:none}"
    ".lmbench-panel .lmbench-stop-strings{width:100%;box-sizing:border-box}"
    ".lmbench-panel .lmbench-stop-strings .widget-text{flex:1 1 20em;width:auto}"
    ".lmbench-panel .lmbench-stop-strings .widget-text input{width:100%}</style>"
)


def probability_colour(p: float) -> str:
    """Red for unlikely tokens through yellow to green for near-certain ones, translucent so the
    theme's text colour stays readable on the light and the dark JupyterLab theme."""
    return f"hsla({120 * max(0.0, min(1.0, p)):.0f}, 80%, 50%, 0.35)"


def rated(verdict: str, run_id: str) -> str:
    """The note beside the history's thumbs once a run is rated."""
    return f"<span style='{MUTED}'>{html.escape(verdict)} · run {html.escape(run_id[:8])}</span>"


def error(message: str, heading: str = "") -> str:
    """An error in plain words, in red, under a heading in the panel's language (the message itself is
    the library's)."""
    head = f"<b class='lmbench-error-heading'>{html.escape(heading)}</b> " if heading else ""
    return f"<div style='color:var(--jp-error-color1,#b00020);white-space:pre-wrap'>{head}{html.escape(message)}</div>"


def error_heading(exc: BaseException, t: Callable[[str], str] = str) -> str:
    """What kind of problem an error is, in the panel's language: a setting to fix, a model that cannot be
    used, or a failure (whose details are in the Log tab)."""
    if isinstance(exc, ParameterError):
        return t("Check this setting:")
    if isinstance(exc, ModelNotFoundError | ModelLoadError):
        return t("This model cannot be used:")
    if isinstance(exc, LmbenchError):
        return t("Could not finish:")
    return t("Something went wrong (details in the Log tab):")


def preset(name: str, values: dict[str, Any], t: Callable[[str], str] = str) -> str:
    """A preset's name and values on one line, each value under its parameter's label."""
    labels = {spec.name: spec.label for spec in param_specs()}
    settings = " · ".join(f"{t(labels.get(k, k))} {v}" for k, v in values.items())
    return f"<span style='{MUTED}'>{html.escape(name)}: {html.escape(settings)}</span>"


def output(prompt: str, text: str, *, t: Callable[[str], str] = str, live: str = "") -> str:
    """The reply in its own area, kept scrolled to the newest text while it streams (a reversed column
    starts at its end), with a copy button; the prompt as asked folded above it; ``live``: the counter
    shown while streaming."""
    copy = (
        "<button class='lmbench-copy' style='float:right' title='" + html.escape(t("Copy the reply")) + "' "
        "onclick=\"navigator.clipboard.writeText(this.parentElement.querySelector('.lmbench-reply').innerText)\">"
        f"{html.escape(t('Copy'))}</button>"
    )
    live_line = f"<div class='lmbench-live' style='{MUTED};font-size:90%'>{html.escape(live)}</div>" if live else ""
    return (
        f"<div class='lmbench-answer'><details class='lmbench-asked'><summary style='{MUTED}'>"
        f"{html.escape(t('Prompt'))} ({len(prompt)} {html.escape(t('characters'))})</summary>"
        f"<div style='white-space:pre-wrap;word-wrap:break-word;{MONO};{MUTED};padding:4px'>{html.escape(prompt)}</div>"
        f"</details>{copy}"
        "<div class='lmbench-reply-box' style='max-height:24em;overflow:auto;"
        "display:flex;flex-direction:column-reverse'>"
        f"<div class='lmbench-reply' style='white-space:pre-wrap;word-wrap:break-word;{MONO};padding:6px;"
        f"min-height:3em'>{html.escape(text)}</div></div>{live_line}</div>"
    )


def stats(run: Run, t: Callable[[str], str] = str) -> str:
    """The stats line: tokens, time to first token, speed, finish reason, how the prompt was sent, seed,
    run id (in the panel's language)."""
    parts = [
        f"{run.prompt_tokens} {t('prompt tokens')}",
        f"{run.completion_tokens} {t('completion tokens')}",
        f"TTFT {run.ttft_s * 1000:.0f} ms" if run.ttft_s is not None else "TTFT —",
        f"{run.tokens_per_s:,.1f} tok/s" if run.tokens_per_s and math.isfinite(run.tokens_per_s) else "— tok/s",
        f"{t('finish')}: {t(run.finish_reason)}",
        f"{run.n_threads} {t('thread' if run.n_threads == 1 else 'threads')}" if run.n_threads else "",
        t(run.prompt_mode),
        f"{t('seed')} {run.seed}",
        f"{t('run')} {run.id[:8]}",
    ]
    line = " · ".join(p for p in parts if p)
    return f"<div class='lmbench-stats-line' style='{MUTED};font-size:90%'>{html.escape(line)}</div>"


def history_row(row: Any, t: Callable[[str], str] = str) -> str:
    """One run as a row of the history table (``row``: a runs-table tuple)."""
    model = str(row.model_name).removesuffix(".gguf")
    model = model if len(model) <= 20 else model[:19] + "…"
    finish = _column_word(t, str(row.finish_reason))[:9]
    sent = _column_word(t, "tmpl" if isinstance(row.chat_format, str) else "raw")
    return (
        f"{row.created_at:%H:%M:%S}  {row.id[:8]}  {model:<20}  {str(row.source)[:6]:<6}  {row.temperature:>5g} "
        f"{row.top_p:>5g} {row.max_tokens:>6} {row.completion_tokens:>6}  {finish:<9}  {sent:<5}  "
        f"{str(row.prompt)[:48]!r}"
    )


def _column_word(t: Callable[[str], str], word: str) -> str:
    """``word`` as the history table says it: its short entry in the label table (``"stop (history column)"``)."""
    said = t(f"{word} (history column)")
    return word if said.endswith("(history column)") else said


def models_table(frame: Any, loaded: str | None, t: Callable[[str], str] = str) -> str:
    """The models found (as ``lmbench.models.list()`` gives them), the loaded one marked: what LM Studio's
    model list shows. A quantized copy or an adapter follows its base model, indented."""
    if frame is None or not len(frame):
        return f"<small>{html.escape(t('No models found in the model folders or installed packages.'))}</small>"
    rows = []
    for row in frame.itertuples():
        mark = f" ◀ {html.escape(t('loaded'))}" if loaded is not None and str(row.path) == loaded else ""
        base = getattr(row, "base", None)
        indent = "↳ " if isinstance(base, str) and base else ""
        parameters = readable_count(int(row.parameters)) if row.parameters == row.parameters else "?"
        chat = t("yes") if row.has_chat_template == row.has_chat_template and row.has_chat_template else t("no")
        rows.append(
            f"<tr><td>{indent}<code>{html.escape(str(row.alias))}</code>{mark}</td><td>{row.size / 2**20:,.1f} MiB</td>"
            f"<td>{parameters}</td><td>{html.escape(str(row.quantization))}</td><td>{row.context_length}</td>"
            f"<td>{html.escape(chat)}</td><td>{html.escape(t(str(row.source)))}</td></tr>"
        )
    head = "".join(
        f"<th style='text-align:left'>{html.escape(t(h))}</th>"
        for h in ("model", "size", "parameters", "quantization", "context", "chat template", "from")
    )
    return f"<table class='lmbench-models' style='font-size:85%'><tr>{head}</tr>{''.join(rows)}</table>"


def server_info(
    url: str | None,
    api_key: str | None,
    request: dict[str, Any] | None = None,
    model: str = "local",
    t: Callable[[str], str] = str,
) -> str:
    """Where the panel's API server listens, and the guides' Python and ``openai`` examples filled in for it
    with ``request`` (the panel's prompt, temperature, top_p and max_tokens), each in its own block."""
    if url is None:
        idle = t(
            "The local API (LM Studio-style and OpenAI-compatible) is not running: choose a port (0: any free "
            "one) and start it."
        )
        return f"<small style='{MUTED}'>{html.escape(idle)}</small>"
    body = request or {"prompt": "Once upon a time", "max_tokens": 100}
    headers = f', headers={{"Authorization": "Bearer {api_key}"}}' if api_key else ""
    example = (
        "import requests\n\n"
        f'response = requests.post("{url}/api/generate", json={body!r}{headers})\nprint(response.json()["text"])'
    )
    openai_key = api_key or "unused"
    settings = "".join(f", {k}={v!r}" for k, v in body.items() if k != "prompt")
    client = (
        f'from openai import OpenAI\n\nclient = OpenAI(base_url="{url}/v1", api_key="{openai_key}")\n'
        f'reply = client.chat.completions.create(model="{model}", messages=[{{"role": "user", "content": '
        f"{body['prompt']!r}}}]{settings})\nprint(reply.choices[0].message.content)"
    )
    copy = (
        f"<button class='lmbench-example-copy' style='float:right' title='{html.escape(t('Copy the example'))}' "
        'onclick="navigator.clipboard.writeText(this.nextElementSibling.innerText)">'
        f"{html.escape(t('Copy'))}</button>"
    )
    return (
        f"<div>{html.escape(t('Serving on'))} <a href='{html.escape(url)}/api/status' target='_blank'>"
        f"<code>{html.escape(url)}</code></a> "
        f"({html.escape(t('this machine only; requests are recorded in the panel’s store'))})</div>"
        + "".join(
            f"<div class='lmbench-example'>{copy}<pre style='{MONO};font-size:85%'>{html.escape(code)}</pre></div>"
            for code in (example, client)
        )
    )


def log_line(run: Any, t: Callable[[str], str] = str) -> str:
    """One generation as a line of the log (as LM Studio's server log shows it)."""
    prompt = run.prompt if len(run.prompt) <= 40 else run.prompt[:39] + "…"
    speed = f"{run.tokens_per_s:.1f} tok/s" if run.tokens_per_s else "- tok/s"
    return (
        f"{run.model_name}: {prompt!r} ({t(run.prompt_mode)}) -> {run.completion_tokens} {t('tokens')}, {speed}, "
        f"{t('finish')} {t(run.finish_reason)} ({t('run')} {run.id[:8]})"
    )


def tokens(entries: Sequence[dict[str, Any]], t: Callable[[str], str] = str) -> str:
    """Each generated token on a background coloured by its probability (hover: index and probability)."""
    if not entries:
        hint = t("No token probabilities: tick “record token probabilities” and generate.")
        return f"<i>{html.escape(hint)}</i>"
    spans = []
    for i, entry in enumerate(entries):
        p = math.exp(entry["logprob"])
        spans.append(
            f"<span title='#{i} p={p:.3f}' style='background:{probability_colour(p)}'>"
            f"{html.escape(entry['token'])}</span>"
        )
    return (
        f"<div style='white-space:pre-wrap;{MONO};line-height:1.6'>{''.join(spans)}</div>"
        f"<div style='{MUTED};font-size:85%'>"
        f"{html.escape(t('colour: probability of the chosen token (red unlikely, green near-certain)'))}</div>"
    )


def alternatives(entry: dict[str, Any], index: int, t: Callable[[str], str] = str) -> str:
    """One token's probability and entropy, and its top alternatives as a table."""
    rows = "".join(
        f"<tr><td><code>{html.escape(repr(alt['token']))}</code></td><td>{math.exp(alt['logprob']):.4f}</td>"
        f"<td>{alt['logprob']:.3f}</td></tr>"
        for alt in entry.get("top", [])
    )
    return (
        f"<div>{t('token')} #{index} <code>{html.escape(repr(entry['token']))}</code> "
        f"p={math.exp(entry['logprob']):.4f}, {t('entropy')} {entry.get('entropy', float('nan')):.3f} nats</div>"
        f"<table class='lmbench-alternatives'><tr><th>{t('alternative')}</th><th>{t('probability')}</th>"
        "<th>logprob</th></tr>"
        f"{rows}</table>"
    )


def audit(report: Any, t: Callable[[str], str]) -> str:
    """The determinism audit: per condition, identical or the first divergent token (reference -> got)."""
    rows = []
    for row in report.itertuples():
        if row.identical_rate == 1:
            split = "—"
        else:
            split = (
                f"#{int(row.first_divergence)} <code>{html.escape(repr(row.reference_token))}</code> → "
                f"<code>{html.escape(repr(row.token))}</code>{' · ' + t('near tie') if row.near_tie else ''}"
            )
        rows.append(f"<tr><td>{html.escape(row.condition)}</td><td>{row.identical_rate:.0%}</td><td>{split}</td></tr>")
    same = (report.identical_rate == 1).all()
    return (
        f"<div><b>{t('all identical') if same else t('Reproducible?')}</b></div>"
        f"<table class='lmbench-audit-table'><tr><th>{t('condition')}</th><th>{t('identical')}</th>"
        f"<th>{t('first divergent token')}</th></tr>{''.join(rows)}</table>"
    )


_MARKDOWN = mistune.create_markdown(escape=True, plugins=["strikethrough", "table"])
# Translucent over the theme's own background, in the theme's text colour: readable in light and dark.
_BUBBLE = {"user": "rgba(66,133,244,0.18)", "assistant": "rgba(127,127,127,0.16)", "system": "rgba(255,171,0,0.16)"}


def chat(turns: Iterable[tuple[str, str, str | None]]) -> str:
    """A conversation as speech bubbles, user on the right; replies in Markdown (HTML in them is shown as
    text), each with its note (tokens, speed, how it ended)."""
    bubbles = []
    for role, content, note in turns:
        body = (
            _MARKDOWN(content)
            if role == "assistant"
            else f"<div style='white-space:pre-wrap'>{html.escape(content)}</div>"
        )
        footer = (
            f"<div class='lmbench-chat-note' style='opacity:0.7;font-size:85%'>{html.escape(note)}</div>"
            if note
            else ""
        )
        bubbles.append(
            f"<div class='lmbench-chat-{role}' style='margin:4px 0;padding:6px 10px;border-radius:8px;"
            f"color:var(--jp-content-font-color1,inherit);background:{_BUBBLE.get(role, _BUBBLE['assistant'])};"
            f"{'margin-left:15%' if role == 'user' else 'margin-right:15%'}'><b>{role}</b>{body}{footer}</div>"
        )
    return "".join(bubbles) or "<i style='opacity:0.6'>No messages yet.</i>"


def reply_note(run: Any) -> str:
    """What a chat reply cost and how it ended (a reply cut short says so)."""
    speed = f", {run.tokens_per_s:.1f} tok/s" if run.tokens_per_s else ""
    ending = {
        "length": "cut off at max_tokens: raise Max Tokens for longer replies",
        "stop": "finished",
        "cancelled": "stopped",
    }.get(run.finish_reason, run.finish_reason)
    return f"{run.completion_tokens} tokens{speed} · {ending}"


def log(events: Iterable[str], llama_lines: Iterable[str], t: Callable[[str], str] = str) -> str:
    """lmbench's own events, then llama.cpp's log lines, in a scrolling box."""
    own = "\n".join(events) or t("(nothing yet)")
    llama = "\n".join(line.rstrip("\n") for line in llama_lines) or t("(no model loaded)")
    return (
        f"<div style='max-height:24em;overflow:auto;{MONO};font-size:85%;white-space:pre-wrap'>"
        f"<b>lmbench</b>\n{html.escape(own)}\n\n<b>llama.cpp</b>\n{html.escape(llama)}</div>"
    )


def restart_note(t: Callable[[str], str] = str) -> str:
    """What a saved notebook shows where the panel was once its kernel has stopped: run the cell again.
    Hidden (by its own style rule) while the live panel is in the same output area."""
    note = t("The lmbench panel runs in the notebook's kernel: after a restart, run this cell again to get it back.")
    return (
        "<style>.jp-OutputArea:has(.lmbench-panel) .lmbench-restart-note{display:none}</style>"
        f"<div class='lmbench-restart-note' style='{MUTED};border-left:3px solid var(--jp-warn-color1,#f57c00);"
        f"padding:4px 8px'>⟳ {html.escape(note)}</div>"
    )
