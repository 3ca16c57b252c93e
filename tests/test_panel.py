"""The panel driven in Python (set widget values, click, wait for the worker) against the real test model."""

from __future__ import annotations

import html
import time
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

import lmbench
from lmbench.params import param_specs


def _generate(panel: lmbench.Panel) -> lmbench.Run:
    panel.generate_button.click()
    panel.wait(120)
    assert not panel.busy
    assert panel.error.value == "", panel.error.value
    assert panel.last_run is not None
    return panel.last_run


def test_sliders_come_from_the_parameter_definition(panel: lmbench.Panel) -> None:
    specs = {s.name: s for s in param_specs() if s.ui_min is not None}
    assert set(panel.form.sliders) == set(specs)
    for name, spec in specs.items():
        slider = panel.form.sliders[name]
        if name == "max_tokens":  # a number box without bounds: never clamped, checked against the context
            assert slider.value == spec.default and not hasattr(slider, "min")
        else:
            assert (slider.value, slider.min, slider.step) == (spec.default, spec.ui_min, spec.ui_step)
        assert spec.description in slider.tooltip
    assert panel.form.n_ctx == panel.picker.n_ctx.value, "max tokens is checked against the context length"


def test_generate_records_exactly_the_slider_values(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once upon a time"
    values = {"temperature": 0.35, "top_p": 0.8, "top_k": 12, "min_p": 0.1, "repeat_penalty": 1.2, "max_tokens": 24}
    for name, value in values.items():
        panel.form.sliders[name].value = value
    panel.form.random_seed.value = False
    panel.form.seed.value = 1234
    panel.form.stop.value = ["zebra"]
    run = _generate(panel)

    stored = lmbench.runs().iloc[-1]
    assert stored.id == run.id and stored.source == "panel" and stored.seed == 1234
    for name, value in values.items():
        assert stored[name] == pytest.approx(value), name
    assert list(stored.stop) == ["zebra"]
    assert run.text in panel.output.value.replace("&#x27;", "'").replace("&quot;", '"')
    for part in ("prompt tokens", "completion tokens", "TTFT", "tok/s", "finish: ", "seed 1234"):
        assert part in panel.stats.value
    assert panel.generate_button.disabled is False and panel.stop_button.disabled is True
    assert panel.history.runs.options[0][1] == run.id, "the new run leads the history"


def test_random_seed_is_shown_after_the_run(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once"
    panel.form.sliders["max_tokens"].value = 4
    run = _generate(panel)
    assert panel.form.seed.value == run.seed and panel.form.random_seed.value is True


def test_stop_cancels_a_long_generation(panel: lmbench.Panel) -> None:
    panel.picker.n_ctx.value = 16384
    panel.form.sliders["max_tokens"].value = 16000
    panel.prompt.value = "Once upon a time"
    panel.generate_button.click()
    assert panel.generate_button.disabled, "Generate is disabled while running"
    deadline = time.monotonic() + 60
    while "there" not in panel.output.value and "," not in panel.output.value and time.monotonic() < deadline:
        time.sleep(0.01)
    panel.stop_button.click()
    panel.wait(60)
    run = panel.last_run
    assert run is not None and run.finish_reason == "cancelled"
    assert 0 < run.completion_tokens < 16000
    assert lmbench.runs().iloc[-1].finish_reason == "cancelled"
    assert "finish: cancelled" in panel.stats.value


def test_bad_model_shows_an_error_and_the_panel_stays_usable(panel: lmbench.Panel, tmp_path: Path) -> None:
    good = panel.picker.name
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 12)
    panel.picker.choose(bad)
    panel.prompt.value = "Once"
    panel.generate_button.click()
    panel.wait(60)
    assert "broken.gguf" in panel.error.value and "cannot load model" in panel.error.value
    assert "error: cannot load model" in panel.log.value
    assert not panel.generate_button.disabled
    assert lmbench.runs().empty

    panel.picker.choose(good)
    panel.form.sliders["max_tokens"].value = 5
    run = _generate(panel)
    assert run.completion_tokens > 0 and panel.error.value == ""


def test_invalid_values_show_the_parameter_error(panel: lmbench.Panel) -> None:
    panel.compare.param.value = "temperature"
    panel.compare.values.value = "hot, cold"
    panel.compare.button.click()
    panel.wait(30)
    assert "compare values must be numbers" in panel.error.value


def test_history_selection_restores_prompt_and_parameters(panel: lmbench.Panel) -> None:
    panel.prompt.value = "The dog"
    panel.form.sliders["temperature"].value = 1.5
    panel.form.sliders["max_tokens"].value = 6
    first = _generate(panel)
    panel.prompt.value = "Something else"
    panel.form.sliders["temperature"].value = 0.1
    panel.form.random_seed.value = True
    panel.history.runs.value = first.id
    assert panel.prompt.value == "The dog"
    assert panel.form.sliders["temperature"].value == pytest.approx(1.5)
    assert panel.form.random_seed.value is False and panel.form.seed.value == first.seed
    again = _generate(panel)
    assert again.text == first.text, "restored settings reproduce the run"


def test_presets_apply_and_save(panel: lmbench.Panel) -> None:
    panel.form.preset.value = "creative"
    assert panel.form.sliders["temperature"].value == pytest.approx(1.2)
    assert "Temperature 1.2" in panel.form.preset_values.value, "each value under its label"
    panel.form.sliders["temperature"].value = 0.45
    panel.form.preset_name.value = "mine"
    panel.form.save_preset_button.click()
    assert lmbench.presets()["mine"]["temperature"] == pytest.approx(0.45)
    assert panel.form.preset.value == "mine"
    assert lmbench.generate("Once", preset="mine", max_tokens=3).temperature == pytest.approx(0.45)


def test_debug_tab_colours_every_token_and_lists_alternatives(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 10
    run = _generate(panel)
    assert run.token_logprobs is not None and len(run.token_logprobs) == run.completion_tokens
    assert panel.debug.value.count("<span title='#") == run.completion_tokens
    panel.debug_token.value = 2
    assert "token #2" in panel.alternatives.value
    assert panel.alternatives.value.count("<tr>") == 1 + 5, "header plus the top 5 alternatives"


def test_compare_runs_each_value_with_one_seed(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 8
    panel.compare.param.value = "temperature"
    panel.compare.values.value = "0, 1.5"
    panel.compare.button.click()
    panel.wait(60)
    assert panel.error.value == ""
    table = lmbench.runs()
    assert list(table.temperature) == [0.0, 1.5]
    assert table.seed.nunique() == 1
    assert "temperature = 0.0" in panel.compare.output.value and "temperature = 1.5" in panel.compare.output.value


def test_log_tab_shows_llama_cpp_lines_and_events(panel: lmbench.Panel) -> None:
    panel.picker.load_button.click()
    panel.wait(60)
    assert "loaded stories260K.gguf" in panel.log.value
    assert "llama" in panel.log.value.split("llama.cpp</b>")[1]
    assert "[DEBUG]" not in panel.log.value
    panel.log_debug.value = True
    assert "[DEBUG]" in panel.log.value


def test_panel_magic_displays_the_panel(model_path: Path) -> None:
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "lmbench")
    try:
        shell.run_line_magic("lmbench", f"model {model_path}")
        shown = shell.run_line_magic("lmbench", "panel")
        assert isinstance(shown, lmbench.Panel)
        assert shown.engine is not None and shown.picker.name == str(model_path)
        bundle = shown._repr_mimebundle_()
        assert "application/vnd.jupyter.widget-view+json" in bundle
    finally:
        shell.run_line_magic("unload_ext", "lmbench")


def test_chat_tab_keeps_a_conversation(panel: lmbench.Panel) -> None:
    panel.form.sliders["max_tokens"].value = 12
    panel.chat.system.value = "You tell stories."
    panel.chat.input.value = "Tell me about a dog."
    panel.chat.send_button.click()
    panel.wait(60)
    assert panel.error.value == "", panel.error.value
    assert [m["role"] for m in panel.chat.conversation] == ["user", "assistant"]
    panel.chat.input.value = "And then?"
    panel.chat.send_button.click()
    panel.wait(60)
    second = panel.last_run
    assert second is not None and second.chat_format == "plain"
    assert [m["role"] for m in second.messages] == ["system", "user", "assistant", "user"]
    assert "And then?" in panel.chat.shown and panel.chat.input.value == ""
    assert lmbench.runs().source.tolist() == ["panel", "panel"]
    panel.chat.new()
    assert panel.chat.conversation == [] and "No messages yet" in panel.chat.shown


def test_token_counter_under_the_prompt(panel: lmbench.Panel) -> None:
    panel.picker.load_button.click()
    panel.wait(60)
    panel.prompt.value = "Once upon a time"
    expected = len(lmbench.tokenize("Once upon a time", panel.engine))
    assert panel.token_count.value == f"<small>{expected} tokens of {panel.engine.n_ctx} · raw text</small>"
    panel.prompt.value = ""
    assert panel.token_count.value == ""


def test_json_schema_box_constrains_the_output(panel: lmbench.Panel) -> None:
    import json

    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    panel.prompt.value = "Once"
    panel.form.sliders["max_tokens"].value = 30
    panel.form.json_schema.value = json.dumps(schema)
    run = _generate(panel)
    assert json.loads(run.text)["ok"] in (True, False) and run.params.json_schema == schema
    panel.form.json_schema.value = "{not json"
    panel.generate_button.click()
    panel.wait(60)
    assert "JSON schema box" in panel.error.value
    panel.form.set_values({"json_schema": None})
    assert panel.form.json_schema.value == ""


def test_an_empty_prompt_is_refused_with_a_message(panel: lmbench.Panel) -> None:
    panel.prompt.value = "   "
    panel.generate_button.click()
    panel.wait(60)
    assert "prompt box is empty" in panel.error.value and panel.last_run is None
    assert lmbench.runs().empty


def test_load_settings_show_the_parallel_slots_and_kv_cache(panel: lmbench.Panel) -> None:
    panel.picker.parallel.value = 2
    panel.prompt.value = "Once upon a time"
    _generate(panel)
    assert panel.engine is not None and panel.engine.parallel == 2
    assert "KV cache: 2 slot(s) x" in panel.picker.kv_info.value and "MiB" in panel.picker.kv_info.value


def test_history_shows_this_panels_runs_with_model_and_source_and_restores_the_model(
    panel: lmbench.Panel, synthetic_model: Path
) -> None:
    elsewhere = lmbench.generate("Elsewhere", max_tokens=3, model=synthetic_model)
    panel.prompt.value = "The dog"
    panel.form.sliders["max_tokens"].value = 4
    mine = _generate(panel)
    ids = [run_id for _, run_id in panel.history.runs.options]
    assert ids == [mine.id], "this panel's runs only, by default"
    label = panel.history.runs.options[0][0]
    assert "stories260K" in label and "panel" in label
    panel.history.all.value = True
    assert [run_id for _, run_id in panel.history.runs.options] == [mine.id, elsewhere.id]
    panel.history.runs.value = elsewhere.id
    assert panel.picker.name == str(synthetic_model) and panel.prompt.value == "Elsewhere"


def test_history_reads_a_page_of_runs_at_a_time(panel: lmbench.Panel) -> None:
    import dataclasses
    import datetime

    from lmbench.ui._history import HISTORY_SIZE

    panel.prompt.value = "Once"
    panel.form.sliders["max_tokens"].value = 2
    first = _generate(panel)
    panel.store.record(
        dataclasses.replace(first, id=f"old{i:03d}", created_at=first.created_at - datetime.timedelta(seconds=i + 1))
        for i in range(HISTORY_SIZE + 5)
    )
    panel.history.all.value = True
    ids = [run_id for _, run_id in panel.history.runs.options]
    assert len(ids) == HISTORY_SIZE and ids[0] == first.id and not panel.history.older.disabled
    panel.history.older.click()
    ids = [run_id for _, run_id in panel.history.runs.options]
    assert len(ids) == HISTORY_SIZE + 6 and ids[-1] == f"old{HISTORY_SIZE + 4:03d}"
    assert panel.history.older.disabled, "no older runs are left"


def test_the_log_has_a_line_per_generation(panel: lmbench.Panel) -> None:
    panel.prompt.value = "Once upon a time"
    panel.form.sliders["max_tokens"].value = 5
    run = _generate(panel)
    log = html.unescape(panel.log.value)
    assert f"stories260K.gguf: 'Once upon a time' (raw text) -> {run.completion_tokens} tokens" in log
    assert f"finish {run.finish_reason} (run {run.id[:8]})" in log and "tok/s" in log


def test_chat_replies_say_what_they_cost_and_how_they_ended_and_can_be_regenerated(panel: lmbench.Panel) -> None:
    panel.form.sliders["max_tokens"].value = 6
    panel.form.toggles["ignore_eos"].value = True
    panel.chat.input.value = "Tell me about a dog."
    panel.chat.send_button.click()
    panel.wait(60)
    first = panel.last_run
    assert first is not None and first.finish_reason == "length"
    assert "6 tokens" in panel.chat.shown and "cut off at max_tokens" in panel.chat.shown
    panel.chat.regenerate_button.click()
    panel.wait(60)
    second = panel.last_run
    assert second is not None and second.id != first.id
    assert [m["role"] for m in panel.chat.conversation] == ["user", "assistant"], "the reply was replaced"
    assert panel.chat.conversation[0]["content"] == "Tell me about a dog."
    assert len(lmbench.runs()) == 2


def test_chat_replies_render_markdown_but_never_html() -> None:
    from lmbench.ui import _html as view

    page = view.chat([("user", "**not bold** <b>x</b>", None), ("assistant", "**bold** <script>x()</script>", "note")])
    assert "<strong>bold</strong>" in page and "<script>" not in page and "&lt;script&gt;" in page
    assert "**not bold** &lt;b&gt;x&lt;/b&gt;" in page, "the user's text is shown as typed"
    assert "var(--jp-content-font-color1" in page, "the theme's text colour, on a translucent bubble"


def test_labels_as_the_guides_name_them_in_english_and_spanish(
    model_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JUPYTERLAB_SETTINGS_DIR", str(tmp_path / "settings"))
    english = lmbench.panel(str(model_path))
    assert english.lang == "en" and english.form.sliders["max_tokens"].description == "Max Tokens"
    assert english.form.sliders["top_p"].description == "Top P" and english.form.sliders["top_p"].tooltip.startswith(
        "top_p: "
    )
    assert english.form.toggles["ignore_eos"].description == "Ignore EOS"
    spanish = lmbench.panel(str(model_path), lang="es")
    assert spanish.generate_button.description == "Generar" and spanish.tabs.titles[1] == "Historial"
    assert spanish.form.sliders["max_tokens"].description == "Tokens máximos"
    assert spanish.form.sliders["temperature"].description == "Temperatura"
    monkeypatch.setenv("LMBENCH_LANG", "es_ES")
    assert lmbench.panel(str(model_path)).lang == "es"
    monkeypatch.delenv("LMBENCH_LANG")
    settings = tmp_path / "settings" / "@jupyterlab" / "translation-extension"
    settings.mkdir(parents=True)
    (settings / "plugin.jupyterlab-settings").write_text(
        '{\n  // chosen in Settings > Language\n  "locale": "es_ES"\n}'
    )
    assert lmbench.panel(str(model_path)).lang == "es", "JupyterLab's language"
    with pytest.raises(lmbench.ParameterError, match="lang must be one of en, es"):
        lmbench.panel(str(model_path), lang="fr")


def test_the_load_settings_list_the_models_found_and_mark_the_loaded_one(panel: lmbench.Panel) -> None:
    panel.picker.load_button.click()
    panel.wait(60)
    table = panel.picker.table.value
    assert "<code>stories260K</code> ◀ loaded" in table
    assert panel.picker.model.label.startswith("stories260K (loaded"), "and marked in the dropdown"
    assert all(h in table for h in ("size", "parameters", "quantization", "context", "chat template"))
    assert "F32" in table and "293K" in table, "the file's quantization and parameter count"


def test_the_server_tab_serves_the_api_and_its_example_runs(
    panel: lmbench.Panel, capsys: pytest.CaptureFixture[str]
) -> None:
    import re

    panel.server.port.value = 0
    panel.server.button.click()
    try:
        assert panel.server.server is not None and panel.server.button.description == "Stop server"
        example = html.unescape(re.findall(r"<pre[^>]*>(.*?)</pre>", panel.server.info.value, re.S)[0])
        assert panel.server.server.url in example
        exec(example, {})  # the guide's example, filled in with this server's URL
        assert capsys.readouterr().out.strip(), "the example printed the generated text"
        assert lmbench.runs(store=panel.store).source.tolist() == ["api"]
        assert "200 POST /api/generate" in panel.server.log.value
        assert "model stories260K" in panel.server.log.value, "the log names the model that served the request"
        assert panel.server.info.value.count("lmbench-example-copy") == 2, "a copy button on each example"
    finally:
        panel.server.button.click()
    assert panel.server.server is None and "not running" in panel.server.info.value


def test_compare_variants_shows_the_drift_of_the_quantized_copies_on_the_prompt(
    panel: lmbench.Panel, model_path: Path, tmp_path: Path
) -> None:
    panel.prompt.value = "Once upon a time, there was a little girl named Lily. She loved to play outside."
    panel.picker.variants_button.click()
    panel.wait(60)
    assert panel.error.value == "", panel.error.value
    assert "No quantized copies of this model yet" in panel.picker.variants_output.value
    lmbench.quantize(model_path, ["Q8_0", "Q4_0"], out=tmp_path, progress=False)
    panel.picker.variants_button.click()
    panel.wait(120)
    assert panel.error.value == "", panel.error.value
    shown = panel.picker.variants_output.value
    assert "drift against stories260K.gguf" in shown and "largest disagreements" in shown
    assert "stories260K.Q8_0.gguf" in shown and "stories260K.Q4_0.gguf" in shown
    assert "kl_mean" in shown and "top1_agreement" in shown
    assert lmbench.panel(str(model_path), lang="es").picker.variants_button.description == "Comparar variantes"
