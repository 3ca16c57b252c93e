"""Keyboard shortcuts for the panel, which ipywidgets cannot bind: a tiny front-end widget (anywidget).

Ctrl+Enter (Cmd+Enter) in the prompt box clicks Generate; Enter in the chat box clicks Send and
Shift+Enter adds a line, as in LM Studio and chat apps. The widget shows nothing; it listens on
the panel it is part of, and asks JupyterLab not to treat those keys as its own shortcuts there.
"""

from __future__ import annotations

import anywidget

ESM = """
function bind(panel) {
  panel.setAttribute("data-lm-suppress-shortcuts", "true");
  panel.addEventListener("keydown", (event) => {
    if (event.key !== "Enter") return;
    const box = event.target.closest(".lmbench-prompt, .lmbench-chat-input");
    if (!box) return;
    const prompt = box.classList.contains("lmbench-prompt");
    const wanted = prompt ? (event.ctrlKey || event.metaKey) : !(event.shiftKey || event.ctrlKey || event.metaKey);
    if (!wanted) return;
    event.preventDefault();
    event.stopPropagation();
    event.target.dispatchEvent(new Event("input", { bubbles: true }));
    panel.querySelector(prompt ? ".lmbench-generate" : ".lmbench-send")?.click();
  }, true);
}

function render({ el }) {
  let tries = 0;
  const attach = () => {
    const panel = el.closest(".lmbench-panel");
    if (panel) bind(panel);
    else if (tries++ < 50) setTimeout(attach, 100);
  };
  attach();
}

export default { render };
"""


class Shortcuts(anywidget.AnyWidget):
    """An invisible widget that gives its panel Ctrl+Enter to generate and Enter to send."""

    _esm = ESM
