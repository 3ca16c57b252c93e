"""The panel's HTML: pure functions from runs, tokens and log lines to markup (no widgets here)."""

from __future__ import annotations

import html
import math
from collections.abc import Iterable, Sequence
from typing import Any

from .run import Run

MONO = "font-family:var(--jp-code-font-family,monospace)"
# The history list is a small table: monospaced rows under this header (select a row to restore it).
HISTORY_HEADER = (
    "<style>.lmbench-history select{font-family:var(--jp-code-font-family,monospace);font-size:90%}</style>"
    f"<pre style='margin:0;font-size:90%'>{'time':<8}  {'run':<8}  {'temp':>5} {'top_p':>5} {'max':>6} "
    f"{'tokens':>6}  {'finish':<9}  prompt</pre>"
)


def probability_colour(p: float) -> str:
    """Red for unlikely tokens through yellow to green for near-certain ones."""
    return f"hsl({120 * max(0.0, min(1.0, p)):.0f}, 75%, 82%)"


def error(message: str) -> str:
    """An error in plain words, in red."""
    return f"<div style='color:#b00020;white-space:pre-wrap'>{html.escape(message)}</div>"


def preset(name: str, values: dict[str, Any]) -> str:
    """A preset's name and values on one line."""
    settings = " · ".join(f"{k} {v}" for k, v in values.items())
    return f"<span style='color:#666'>{html.escape(name)}: {html.escape(settings)}</span>"


def output(prompt: str, text: str) -> str:
    """The prompt (grey) followed by the generated text."""
    return (
        f"<div style='white-space:pre-wrap;word-wrap:break-word;{MONO};padding:6px;min-height:3em'>"
        f"<span style='color:#888'>{html.escape(prompt)}</span>{html.escape(text)}</div>"
    )


def stats(run: Run) -> str:
    """The stats line: tokens, time to first token, speed, finish reason, seed, run id."""
    parts = [
        f"{run.prompt_tokens} prompt tokens",
        f"{run.completion_tokens} completion tokens",
        f"TTFT {run.ttft_s * 1000:.0f} ms" if run.ttft_s is not None else "TTFT —",
        f"{run.tokens_per_s:,.1f} tok/s" if run.tokens_per_s and math.isfinite(run.tokens_per_s) else "— tok/s",
        f"finish: {run.finish_reason}",
        f"chat template ({run.chat_format})" if run.chat_format else "raw completion",
        f"seed {run.seed}",
        f"run {run.id[:8]}",
    ]
    return f"<div class='lmbench-stats-line' style='color:#555;font-size:90%'>{html.escape(' · '.join(parts))}</div>"


def history_row(row: Any) -> str:
    """One run as a row of the history table (``row``: a runs-table tuple)."""
    return (
        f"{row.created_at:%H:%M:%S}  {row.id[:8]}  {row.temperature:>5g} {row.top_p:>5g} {row.max_tokens:>6} "
        f"{row.completion_tokens:>6}  {row.finish_reason:<9}  {str(row.prompt)[:48]!r}"
    )


def tokens(entries: Sequence[dict[str, Any]]) -> str:
    """Each generated token on a background coloured by its probability (hover: index and probability)."""
    if not entries:
        return "<i>No token probabilities: tick “record token probabilities” and generate.</i>"
    spans = []
    for i, entry in enumerate(entries):
        p = math.exp(entry["logprob"])
        spans.append(
            f"<span title='#{i} p={p:.3f}' style='background:{probability_colour(p)}'>"
            f"{html.escape(entry['token'])}</span>"
        )
    return (
        f"<div style='white-space:pre-wrap;{MONO};line-height:1.6'>{''.join(spans)}</div>"
        "<div style='color:#666;font-size:85%'>colour: probability of the chosen token "
        "(red unlikely, green near-certain)</div>"
    )


def alternatives(entry: dict[str, Any], index: int) -> str:
    """One token's probability and entropy, and its top alternatives as a table."""
    rows = "".join(
        f"<tr><td><code>{html.escape(repr(alt['token']))}</code></td><td>{math.exp(alt['logprob']):.4f}</td>"
        f"<td>{alt['logprob']:.3f}</td></tr>"
        for alt in entry.get("top", [])
    )
    return (
        f"<div>token #{index} <code>{html.escape(repr(entry['token']))}</code> "
        f"p={math.exp(entry['logprob']):.4f}, entropy {entry.get('entropy', float('nan')):.3f} nats</div>"
        "<table class='lmbench-alternatives'><tr><th>alternative</th><th>probability</th><th>logprob</th></tr>"
        f"{rows}</table>"
    )


def chat(turns: Iterable[tuple[str, str]]) -> str:
    """A conversation as speech bubbles, user on the right."""
    bubbles = "".join(
        f"<div class='lmbench-chat-{role}' style='margin:4px 0;padding:6px 10px;border-radius:8px;"
        f"white-space:pre-wrap;background:{'#e8f0fe' if role == 'user' else '#f1f3f4'};"
        f"{'margin-left:15%' if role == 'user' else 'margin-right:15%'}'>"
        f"<b>{role}</b><br>{html.escape(content)}</div>"
        for role, content in turns
    )
    return bubbles or "<i style='color:#888'>No messages yet.</i>"


def log(events: Iterable[str], llama_lines: Iterable[str]) -> str:
    """lmbench's own events, then llama.cpp's log lines, in a scrolling box."""
    own = "\n".join(events) or "(nothing yet)"
    llama = "\n".join(line.rstrip("\n") for line in llama_lines) or "(no model loaded)"
    return (
        f"<div style='max-height:24em;overflow:auto;{MONO};font-size:85%;white-space:pre-wrap'>"
        f"<b>lmbench</b>\n{html.escape(own)}\n\n<b>llama.cpp</b>\n{html.escape(llama)}</div>"
    )
