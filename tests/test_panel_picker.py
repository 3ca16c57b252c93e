"""The model picker as a person meets it: a dropdown of the models found with their facts, searchable, the
loaded one marked, any other file behind "Other file…" (real models, real engine)."""

from __future__ import annotations

import shutil
from pathlib import Path

import lmbench
from lmbench.ui._picker import OTHER


def _click(panel: lmbench.Panel, button: object) -> None:
    button.click()  # type: ignore[attr-defined]
    panel.wait(120)
    assert not panel.busy and panel.error.value == "", panel.error.value


def test_the_dropdown_lists_the_models_found_with_their_facts(model_path: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    shutil.copy(model_path, folder / "tiny-story.gguf")
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(folder))
    panel = lmbench.panel(str(model_path))
    labels = dict((value, label) for label, value in panel.picker.model.options)
    listed = labels[str(folder / "tiny-story.gguf")]
    assert listed == "tiny-story · 1.1 MiB · 293K · F32 · no chat · folder", "name, size, parameters, quantization"
    chosen = labels[str(model_path)]
    assert chosen == "stories260K (default) · 1.1 MiB · 293K · F32 · no chat · path"
    assert panel.picker.model.value == str(model_path) and panel.picker.name == str(model_path)
    assert list(labels)[-1] == OTHER and labels[OTHER] == "Other file…"
    assert panel.picker.path.layout.display == "none", "the path box stays behind Other file…"
    assert "stories260K ($LMBENCH_MODEL): stories260K.gguf, 293K parameters, F32" in panel.picker.info.value


def test_the_search_box_narrows_the_list_and_keeps_the_choice(model_path: Path, tmp_path: Path, monkeypatch) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    for name in ("alpha-story.gguf", "beta-story.gguf"):
        shutil.copy(model_path, folder / name)
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(folder))
    picker = lmbench.panel(str(model_path)).picker
    picker.search.value = "BETA"
    values = [value for _, value in picker.model.options]
    assert set(values[:-1]) == {str(model_path), str(folder / "beta-story.gguf")}, "the match and the choice"
    assert values[-1] == OTHER
    assert picker.model.value == str(model_path), "searching does not change the model"
    picker.search.value = "f32 folder"
    assert {str(folder / "alpha-story.gguf"), str(folder / "beta-story.gguf")} <= {v for _, v in picker.model.options}
    picker.model.value = str(folder / "alpha-story.gguf")
    assert picker.name == str(folder / "alpha-story.gguf") and "alpha-story" in picker.info.value


def test_other_file_takes_a_path_and_the_loaded_file_joins_the_list_marked(model_path: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere" / "my-model.gguf"
    elsewhere.parent.mkdir()
    shutil.copy(model_path, elsewhere)
    panel = lmbench.panel(str(model_path))
    panel.picker.model.value = OTHER
    assert panel.picker.path.layout.display is None, "the path box shows"
    assert "a .gguf path, file name or alias" in panel.picker.info.value
    panel.picker.path.value = str(elsewhere)
    assert panel.picker.name == str(elsewhere)
    _click(panel, panel.picker.load_button)
    assert panel.engine is not None and panel.engine.path == elsewhere
    assert panel.picker.model.value == str(elsewhere), "the loaded file is chosen in the list"
    assert panel.picker.model.label == "my-model (loaded) · 1.1 MiB · 293K · F32 · no chat · path"
    assert sum("loaded" in label for label, _ in panel.picker.model.options) == 1
    assert "<code>my-model</code> ◀ loaded" in panel.picker.table.value


def test_a_panel_on_a_loaded_engine_shows_its_alias_not_its_path(model_path: Path) -> None:
    """The quickstart's ``lmbench.panel(engine)``: the dropdown and the line under it name the model."""
    engine = lmbench.load(model_path)
    panel = lmbench.panel(engine)
    assert panel.picker.model.label.startswith("stories260K (loaded, default) · 1.1 MiB · ")
    assert panel.picker.info.value.startswith("<small>model: stories260K ")
    panel.prompt.value = "Once"
    panel.form.sliders["max_tokens"].value = 3
    _click(panel, panel.generate_button)
    assert panel.last_run is not None and panel.last_run.model_path == str(model_path)


def test_restoring_a_run_of_another_file_chooses_it(model_path: Path, tmp_path: Path) -> None:
    other = tmp_path / "copy.gguf"
    shutil.copy(model_path, other)
    run = lmbench.generate("Once", model=other, max_tokens=3, seed=1)
    panel = lmbench.panel(str(model_path))
    panel.restore(run)
    assert panel.picker.model.value == str(other) and panel.picker.name == str(other)
    _click(panel, panel.generate_button)
    assert panel.last_run is not None and panel.last_run.text == run.text, "the same file, the same text"


def test_a_missing_file_is_kept_in_the_path_box_and_refused_at_load(model_path: Path, tmp_path: Path) -> None:
    panel = lmbench.panel(str(model_path))
    panel.picker.choose(tmp_path / "nowhere.gguf")
    assert panel.picker.model.value == OTHER and panel.picker.path.value == str(tmp_path / "nowhere.gguf")
    panel.picker.load_button.click()
    panel.wait(60)
    assert "nowhere.gguf" in panel.error.value and "This model cannot be used:" in panel.error.value
