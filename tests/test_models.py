"""The model manager: model folders, GGUF metadata, and downloads from a local fake hub (never the real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import TEST_MODEL
from fakehub import FakeHub, serve

import lmbench
from lmbench import models

DIGEST = "270cba1bd5109f42d03350f60406024560464db173c0e387d91f0426d3bd256d"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    with serve() as fake:
        monkeypatch.setenv("HF_ENDPOINT", fake.url)
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
        monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
        yield fake


def _cached_ggufs(tmp_path: Path) -> list[Path]:
    return [p for p in (tmp_path / "hf-cache").rglob("*") if p.is_file() and p.stat().st_size > 1000]


def test_list_finds_models_with_their_metadata(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(TEST_MODEL.parent))
    table = models.list()
    row = table[table.path == str(TEST_MODEL)].iloc[0]
    assert row.alias == "stories260K"
    assert row.architecture == "llama" and row.layers == 5 and row.context_length == 2048
    assert row.parameters > 200_000 and row["size"] == TEST_MODEL.stat().st_size
    assert row.has_chat_template is False or row.has_chat_template == 0
    for column in ("alias", "path", "size", "architecture", "parameters", "quantization", "context_length"):
        assert column in table.columns


def test_info_reads_metadata_without_loading(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(TEST_MODEL.parent))
    lmbench.unload()
    facts = models.info("stories260K")
    assert facts["architecture"] == "llama" and facts["path"] == str(TEST_MODEL)
    assert lmbench.loaded() == [], "info never loads the model into llama.cpp"


def test_load_alias_pulls_on_first_use_and_checks_the_digest(hub: FakeHub, tmp_path: Path) -> None:
    hub.add("ggml-org/tiny-llamas", "stories260K.gguf", TEST_MODEL.read_bytes())
    engine = lmbench.load("stories260K")
    assert engine.sha256 == DIGEST
    assert str(tmp_path / "hf-cache") in str(engine.path)
    assert [m for m, *_ in hub.requests].count("GET") == 1
    lmbench.unload()
    lmbench.load("stories260K")
    assert [m for m, *_ in hub.requests].count("GET") == 1, "found in the hub cache the second time"


def test_pull_registers_an_alias_that_later_processes_find(hub: FakeHub) -> None:
    hub.add("someone/tiny-models", "tiny-story.gguf", TEST_MODEL.read_bytes())
    path = models.pull("someone/tiny-models", "tiny-story.gguf")
    assert path.name == "tiny-story.gguf" and path.is_file()
    saved = json.loads((Path(lmbench._config.home()) / "aliases.json").read_text())
    assert saved["tiny-story"] == {"repo_id": "someone/tiny-models", "filename": "tiny-story.gguf", "sha256": DIGEST}
    assert models.resolve("tiny-story") == path
    assert models.list().set_index("alias").loc["tiny-story", "path"].endswith("tiny-story.gguf")


def test_interrupted_download_resumes(hub: FakeHub, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", 1 << 16)  # smaller than the file, so part of it lands
    hub.add("ggml-org/tiny-llamas", "stories260K.gguf", TEST_MODEL.read_bytes(), interrupt_once=True)
    path = models.pull("ggml-org/tiny-llamas", "stories260K.gguf", alias="stories260K")
    assert path.read_bytes() == TEST_MODEL.read_bytes()
    ranges = [r for method, _, r in hub.requests if method == "GET"]
    assert len(ranges) == 2 and ranges[0] is None and ranges[1].startswith("bytes=")


def test_wrong_digest_is_rejected_and_not_kept(hub: FakeHub, tmp_path: Path) -> None:
    hub.add("ggml-org/tiny-llamas", "stories260K.gguf", TEST_MODEL.read_bytes() + b"\0" * 64)
    with pytest.raises(lmbench.ModelLoadError, match="sha256 does not match"):
        models.pull("ggml-org/tiny-llamas", "stories260K.gguf", alias="stories260K")
    assert _cached_ggufs(tmp_path) == []


def test_a_file_that_is_not_gguf_is_rejected_and_not_kept(hub: FakeHub, tmp_path: Path) -> None:
    hub.add("someone/models", "fake.gguf", b"<html>not a model</html>" * 100)
    with pytest.raises(lmbench.ModelLoadError, match=r"fake\.gguf"):
        models.pull("someone/models", "fake.gguf")
    assert _cached_ggufs(tmp_path) == []
    assert "fake" not in models.catalog()


def test_missing_file_on_the_hub(hub: FakeHub) -> None:
    with pytest.raises(lmbench.ModelNotFoundError, match="download failed"):
        models.pull("someone/models", "absent.gguf")


def test_an_unreachable_hub_fails_at_once_with_what_to_do(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "https://hub.invalid")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    with pytest.raises(lmbench.ModelNotFoundError) as caught:
        lmbench.load("stories260K")
    message = str(caught.value)
    assert "cannot reach https://hub.invalid" in message, "decided before any (retried) request"
    assert "LMBENCH_MODEL_PATH" in message and "stories260K.gguf" in message


@pytest.mark.parametrize("which", ["test model", "instruct model"])
def test_the_header_scan_agrees_with_gguf_reader(which: str) -> None:
    from gguf import GGUFReader

    from lmbench import _gguf

    path = (
        TEST_MODEL if which == "test model" else next(m.path for m in models.packaged() if m.alias.startswith("smol"))
    )
    header, reader = _gguf.read(path), GGUFReader(path)
    expected = [(t.name, int(t.n_elements), t.tensor_type.name, int(t.n_bytes), t.data_offset) for t in reader.tensors]
    assert [(t.name, t.n_elements, t.type, t.n_bytes, t.offset) for t in header.tensors] == expected
    assert header.array_lengths["tokenizer.ggml.tokens"] == len(reader.get_field("tokenizer.ggml.tokens").data)
    assert header.field("general.architecture") == reader.get_field("general.architecture").contents()


def test_metadata_is_read_once_per_file_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench import _gguf

    copy = tmp_path / "copy.gguf"
    copy.write_bytes(TEST_MODEL.read_bytes())
    reads: list[Path] = []
    real_read = _gguf.read
    monkeypatch.setattr(_gguf, "read", lambda path: reads.append(path) or real_read(path))
    assert models.metadata(copy)["layers"] == 5 and len(reads) == 1
    models._meta_memo.clear()  # as a new process would start
    assert models.metadata(copy)["layers"] == 5 and len(reads) == 1, "from $LMBENCH_HOME's cache"
    copy.write_bytes(TEST_MODEL.read_bytes()[:4096])  # the same file name, other contents
    with pytest.raises(lmbench.ModelLoadError, match="truncated"):
        models.metadata(copy)
    assert len(reads) == 2


def test_damaged_files_in_lmbench_home(lmbench_home: Path) -> None:
    (lmbench_home / "gguf-metadata.json").write_text("{not json")
    assert models.metadata(TEST_MODEL)["architecture"] == "llama", "a damaged cache is rebuilt"
    assert json.loads((lmbench_home / "gguf-metadata.json").read_text())
    (lmbench_home / "aliases.json").write_text("[1, 2")
    with pytest.raises(lmbench.LmbenchError, match=r"aliases\.json"):
        models.catalog()
