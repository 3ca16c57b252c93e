"""Spanish, whole: every string a Spanish panel shows (labels, tooltips, placeholders, options, titles and
the text of its HTML parts) goes through the label table; none of it is left in English."""

from __future__ import annotations

import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import ipywidgets as w

import lmbench
from lmbench.params import param_specs
from lmbench.ui._picker import OTHER

# Words that are English and not Spanish: any of them in a Spanish panel is a string left untranslated.
ENGLISH_WORDS = """the of and with from for this that these is are be by on at it its or not than then into only
    load loaded loading generate generating stop save saved search other file default model models context length
    threads parallel seed random record raw completion experiment name structured output strings probability
    probabilities alternative settings cache cells made first generation parameters size quantization template yes
    package folder path copy reply characters finish thread run runs check setting more give most share type
    empty box nothing yet colour red green unlikely near certain entropy keep drop never always draws fresh
    recorded each token's alternatives off matching grammar format rule end appear included text
    nucleus sampling smallest whose adds up likeliest likely keeps less times odds recently seen disables
    subtract already generated count maximum number randomness picks higher varied constrain compare
    variants drift quantized copies prompt's now also requests decoded together whole grows machine leaves free
    checked decoding optional chosen continue again alone batches without fork debug log history
    server send chat's new regenerate refresh older message messages plain schema e.g. string enter adds
    tick tokens' something went wrong details tab could used cannot kernel restart cell back creative precise
    balanced"""
ENGLISH = set(ENGLISH_WORDS.split())
# The words both languages share, or that stay as they are (names of things): never flagged.
TECHNICAL = {"chat", "prompt", "preset", "token", "tokens", "tok", "top", "min", "eos", "json", "gbnf", "kv", "mib"}
# A tooltip starts with the parameter's own name ("top_p: ..."), an identifier, not a word.
PARAMETER_NAME = re.compile(rf"^({'|'.join(s.name for s in param_specs())}): ")


def _strings(widget: w.Widget) -> Iterator[tuple[str, str]]:
    """(where, text) for every string a widget shows."""
    for attr in ("description", "tooltip", "placeholder"):
        value = getattr(widget, attr, None)
        if isinstance(value, str) and value and value != "\u200b":
            yield f"{type(widget).__name__}.{attr}", re.sub(PARAMETER_NAME, "", value)
    if isinstance(widget, w.Label | w.HTML | w.HTMLMath):
        # Styles, code (tokens, file names) and the Debug view's tokens are not words to translate.
        shown = re.sub(r"<style>.*?</style>|<code>.*?</code>|<span title='#.*?</span>", " ", widget.value, flags=re.S)
        text = re.sub(r"<[^>]+>", " ", shown)
        yield f"{type(widget).__name__}.value", html.unescape(text)
    for title in getattr(widget, "titles", ()) or ():
        yield f"{type(widget).__name__}.titles", title
    if isinstance(widget, w.Dropdown | w.Select | w.Combobox):
        for label in getattr(widget, "_options_labels", None) or getattr(widget, "options", ()):
            yield f"{type(widget).__name__}.options", str(label)


def _walk(widget: w.Widget, skip: set[int]) -> Iterator[w.Widget]:
    if id(widget) in skip:
        return
    yield widget
    for child in getattr(widget, "children", ()):
        yield from _walk(child, skip)


def _english(text: str, data: set[str]) -> list[str]:
    for piece in data:  # what the model wrote and the user typed is not the panel's to translate
        text = text.replace(piece, " ")
    text = re.sub(r"\{.*\}|'[^']*'|\"[^\"]*\"", " ", text)  # a JSON example, a quoted token: code
    words = [word for word in text.split() if not re.search(r"[/_.=$@\\0-9]", word.strip(".,:;()¿?!«»\"'“”"))]
    return [
        word
        for word in re.findall(r"[A-Za-z']+", " ".join(words))
        if word.lower() in ENGLISH and word.lower() not in TECHNICAL
    ]


def _left_in_english(panel: lmbench.Panel, data: set[str]) -> list[str]:
    skip = {id(panel.log)}
    found = []
    for widget in _walk(panel.widget, skip):
        for where, text in _strings(widget):
            words = _english(text, data)
            if words:
                found.append(f"{where}: {text[:90]!r} ({', '.join(words)})")
    return found


def test_a_spanish_panel_has_no_english_left(model_path: Path) -> None:
    panel = lmbench.panel(str(model_path), lang="es")
    panel.prompt.value = "Érase una vez un dragón"
    panel.form.sliders["max_tokens"].value = 6
    panel.form.random_seed.value = False
    panel.form.seed.value = 3
    assert _left_in_english(panel, set()) == [], "before any run"

    panel.generate_button.click()
    panel.wait(120)
    run = panel.last_run
    assert run is not None and panel.error.value == "", panel.error.value
    panel.form.preset.value = "creative"
    data = {run.text, panel.prompt.value}
    assert _left_in_english(panel, data) == [], "after a run: the stats, the model line, the counter, the Debug view"
    own_lines = " ".join(panel.events)  # the Log tab's own lines (llama.cpp's own follow them, as it writes them)
    assert panel.engine is not None and "cargado stories260K" in own_lines
    assert _english(own_lines, data | {panel.engine.threads.describe()}) == [], own_lines
    assert "semilla 3" in panel.stats.value and "tokens de" in panel.token_count.value
    assert "Tokens máximos" in panel.form.preset_values.value or "Temperatura 1.2" in panel.form.preset_values.value

    panel.form.json_schema.value = "{not json"
    panel.generate_button.click()
    panel.wait(60)
    assert "Revisa este ajuste:" in panel.error.value and "esquema JSON no contiene JSON" in panel.error.value
    panel.form.json_schema.value = ""
    panel.picker.model.value = OTHER
    try:
        json.loads("{not json")
    except ValueError as exc:
        data.add(str(exc))  # Python's own words inside the panel's Spanish message
    assert _left_in_english(panel, data) == [], "an error, and the path box behind Otro archivo…"


def test_the_walk_finds_english_where_it_is_left(model_path: Path) -> None:
    """The check itself: an English label, tooltip or option in a Spanish panel is found and named."""
    panel = lmbench.panel(str(model_path), lang="es")
    panel.form.sliders["top_k"].description = "Keep the likeliest"
    panel.picker.load_button.tooltip = "Load the model now"
    panel.form.preset.options = [("—", None), ("creative", "creative")]
    left = "\n".join(_left_in_english(panel, set()))
    assert "IntSlider.description: 'Keep the likeliest'" in left
    assert "Button.tooltip: 'Load the model now'" in left and "Dropdown.options: 'creative'" in left
    assert _english("modelo: stories260K, origen /work/models/the.gguf", set()) == [], "paths are not words"
