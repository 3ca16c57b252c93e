"""Keyboard shortcuts for the panel and the rating widgets, which ipywidgets cannot bind: a tiny front-end
widget (anywidget).

Ctrl+Enter (Cmd+Enter) in the prompt box clicks Generate; Enter in the chat box clicks Send and
Shift+Enter adds a line, as in LM Studio and chat apps. A single key clicks the button of its
widget with the class ``lmbench-key-<key>`` (the arena's 1, 2, 3, 0 and s), unless the key is typed
into a text box; each shown pair (an element's ``data-lm-pair``) takes one such key, so a key
pressed twice never votes on a pair the person has not seen yet. The widget shows nothing; it
listens on the panel or arena it is part of, and asks JupyterLab not to treat those keys as its
own shortcuts there.
"""

from __future__ import annotations

import anywidget

ESM = """
function bind(panel) {
  if (panel.dataset.lmShortcuts) return;
  panel.dataset.lmShortcuts = "bound";
  panel.setAttribute("data-lm-suppress-shortcuts", "true");
  let lastPair = null;
  panel.addEventListener("keydown", (event) => {
    if (event.key === "Enter") return enter(panel, event);
    if (event.ctrlKey || event.metaKey || event.altKey || event.key.length !== 1) return;
    if (event.target.closest("input, textarea, select, [contenteditable]")) return;
    const target = panel.querySelector(`.lmbench-key-${CSS.escape(event.key.toLowerCase())}`);
    if (!target || target.disabled) return;
    event.preventDefault();
    event.stopPropagation();
    const pair = panel.querySelector("[data-lm-pair]")?.dataset.lmPair ?? null;
    if (pair !== null && pair === lastPair) return;
    lastPair = pair;
    target.click();
  }, true);
  if (panel.classList.contains("lmbench-keys-first")) {
    if (!panel.hasAttribute("tabindex")) panel.setAttribute("tabindex", "0");
    panel.focus({ preventScroll: true });
  }
}

function enter(panel, event) {
  const box = event.target.closest(".lmbench-prompt, .lmbench-chat-input");
  if (!box) return;
  const prompt = box.classList.contains("lmbench-prompt");
  const wanted = prompt ? (event.ctrlKey || event.metaKey) : !(event.shiftKey || event.ctrlKey || event.metaKey);
  if (!wanted) return;
  event.preventDefault();
  event.stopPropagation();
  event.target.dispatchEvent(new Event("input", { bubbles: true }));
  panel.querySelector(prompt ? ".lmbench-generate" : ".lmbench-send")?.click();
}

function render({ el }) {
  let tries = 0;
  const attach = () => {
    const panel = el.closest(".lmbench-panel, .lmbench-arena, .lmbench-rate");
    if (panel) bind(panel);
    else if (tries++ < 50) setTimeout(attach, 100);
  };
  attach();
}

export default { render };
"""


class Shortcuts(anywidget.AnyWidget):
    """An invisible widget that gives its panel Ctrl+Enter and Enter, and its arena the vote keys."""

    _esm = ESM
