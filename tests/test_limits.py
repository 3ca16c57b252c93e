"""Nothing a schema, a grammar, a data file, a template, an assertion, a judge or a folder holds can crash,
hang or lose runs: each is refused with a clear error before anything runs, or handled (issue 30)."""

from __future__ import annotations

import datetime
import shutil
from pathlib import Path
from typing import Any

import pytest

import lmbench
from lmbench import _grammar


def _nested(depth: int) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(depth):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"]}
    return schema


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"json_schema": {"type": "string", "maxLength": 20_000}}, "maxLength 20,000 at /maxLength is above the limit"),
        ({"json_schema": {"type": "string", "maxLength": 10**7}}, "maxLength 10,000,000"),
        ({"json_schema": {"type": "array", "items": {"type": "string"}, "maxItems": 20_000}}, "maxItems 20,000"),
        ({"json_schema": {"type": "array", "minItems": 10**7}}, "minItems 10,000,000"),
        ({"json_schema": {"type": "string", "pattern": "a{0,20000}"}}, "pattern quantifier {0,20000}"),
        ({"json_schema": {"type": "string", "minLength": 5, "maxLength": 2}}, "minLength is larger than maxLength"),
        ({"json_schema": {"type": "string", "maxLength": "ten"}}, "must be a whole number"),
        ({"json_schema": _nested(400)}, f"nested more than {_grammar.MAX_SCHEMA_DEPTH} schemas deep"),
        ({"grammar": "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000}, "nests groups more than 2,000 deep"),
        ({"grammar": 'root ::= "a"{0,100000}'}, "repetition {0,100000} is above the limit of 1,000"),
        ({"grammar": 'root ::= "a"{20000}'}, "repetition {20000}"),
        ({"grammar": "root ::= " + '"' + "x" * 5000 + '"{1000} ' * 3}, "expands to more than 1,000,000"),
    ],
)
def test_grammar_bounds_are_refused_up_front(params: dict[str, Any], words: str) -> None:
    with pytest.raises(lmbench.ParameterError, match=r"limit|larger|whole number|deep|expands") as caught:
        lmbench.validate_params(**params)
    assert words in str(caught.value)
    assert caught.value.name in ("json_schema", "grammar")


@pytest.mark.no_test_model
def test_a_brace_or_paren_inside_a_literal_is_not_a_repetition_or_a_group() -> None:
    grammar = 'root ::= "{0,100000}" [(] "((((" ("a" | "b"){2,5}'
    assert lmbench.validate_params(grammar=grammar).grammar == grammar
    assert _grammar.expanded_size(grammar) < 100


def test_schemas_within_the_limits_still_constrain_the_output(model_path: Path) -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 1000}}, "required": ["name"]}
    run = lmbench.generate("Once", model=model_path, json_schema=schema, max_tokens=30, temperature=0.0)
    assert run.text.replace(" ", "").startswith('{"name":"')


def test_a_large_grammar_is_built_in_a_child_process_first(model_path: Path) -> None:
    grammar = "root ::= " + " ".join("[a-z]{0,1000}" for _ in range(30))
    assert _grammar.expanded_size(grammar) > _grammar.CHILD_CHECK_ABOVE
    run = lmbench.generate("Once", model=model_path, grammar=grammar, max_tokens=4, temperature=0.0)
    assert run.finish_reason in ("stop", "length") and run.text.isalpha()
    assert _grammar._verified, "the verdict is remembered"


def test_a_grammar_that_crashes_llama_cpp_crashes_only_the_child(model_path: Path) -> None:
    crashing = "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000  # SIGSEGV in llama.cpp's parser
    problem = _grammar._compile_in_child(crashing, model_path)
    assert problem is not None and "crashed building the grammar (signal 11)" in problem
    assert _grammar._compile_in_child('root ::= "a" | "b"', model_path) is None
    assert "does not parse" in (_grammar._compile_in_child("root ::= (", model_path) or "")


# Data files -------------------------------------------------------------------------------------------


def _sweep(tmp_path: Path, **options: Any) -> Any:
    base: dict[str, Any] = {"grid": {"temperature": [0.0]}, "seeds": 1, "max_tokens": 2, "progress": False}
    return lmbench.sweep(**{**base, **options, "store": tmp_path / "runs.db"})


def test_a_json_lines_row_that_is_not_an_object_is_named(tmp_path: Path) -> None:
    path = tmp_path / "data.jsonl"
    path.write_text('{"x": "a"}\n\n["not", "a", "row"]\n')
    with pytest.raises(lmbench.ParameterError, match=r"line 3 must be a JSON object of column values, not a list"):
        _sweep(tmp_path, prompts="Say {x}", data=path)
    assert not (tmp_path / "runs.db").exists() or lmbench.runs(store=tmp_path / "runs.db").empty


def test_parquet_values_are_carried_as_json_or_refused_by_column(tmp_path: Path, model_path: Path) -> None:
    import decimal

    import pyarrow as pa
    import pyarrow.parquet as pq

    good = tmp_path / "good.parquet"
    table = pa.table(
        {
            "x": ["a", "b"],
            "tags": pa.array([["p", "q"], []], pa.list_(pa.string())),
            "when": pa.array([1_700_000_000_000_000, None], pa.timestamp("us")),
            "price": pa.array([decimal.Decimal("1.50"), decimal.Decimal("2")], pa.decimal128(5, 2)),
        }
    )
    pq.write_table(table, good)
    frame = _sweep(tmp_path, prompts="Say {x} at {price}", data=good, model=model_path)
    assert len(frame) == 2
    items = {row["id"]: row for row in (run.item for run in map(lmbench.Store(tmp_path / "runs.db").get, frame.id))}
    assert items["0"]["vars"] == {"x": "a", "tags": ["p", "q"], "when": "2023-11-14T22:13:20", "price": 1.5}
    assert items["1"]["vars"]["when"] is None and items["1"]["vars"]["price"] == 2
    assert frame.prompt.tolist()[0].endswith("Say a at 1.5")

    binary = tmp_path / "binary.parquet"
    pq.write_table(pa.table({"x": ["a"], "blob": pa.array([b"\x00\x01"], pa.binary())}), binary)
    with pytest.raises(lmbench.ParameterError, match=r"data column 'blob' holds binary data \(bytes\)"):
        _sweep(tmp_path, prompts="Say {x}", data=binary, model=model_path)
    assert len(lmbench.runs(store=tmp_path / "runs.db")) == 2, "nothing more was recorded"


# Templates -------------------------------------------------------------------------------------------


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("template", "words"),
    [
        ("{x:>99999999999999999999}", "format width 99,999,999,999,999,999,999 is above the limit of 10,000"),
        ("{x:>999999999}", "format width 999,999,999 is above the limit"),
        ("{x:.999999}", "format precision 999,999"),
        ("{x:{y.__class__}}", "holds a placeholder; only plain format specs"),
        ("{x:{y.real}}", "holds a placeholder"),
        ("{x:{nope}}", "holds a placeholder"),
        ("{x!z}", "conversion !z is not one of"),
        ("{x.upper}", "must be a plain column name"),
        ("{x:d}", "cannot be filled with data row 0"),
        ("{x:bogus}", "'bogus' is not a format spec"),
    ],
)
def test_templates_allow_plain_placeholders_only(template: str, words: str) -> None:
    with pytest.raises(lmbench.ParameterError) as caught:
        lmbench.sweep(template, data=[{"x": "cat", "y": 2}], grid={"temperature": [0.0]}, seeds=1, model="x.gguf")
    assert words in str(caught.value)


@pytest.mark.no_test_model
def test_plain_format_specs_still_work() -> None:
    from lmbench.datasets import fill, load

    item = load([{"x": "cat", "n": 3.14159}])[0]
    assert fill("t", "{x!r:>6}|{n:.2f}|{x:^7}", item, 0) == " 'cat'|3.14|  cat  "


# Assertions and judges ---------------------------------------------------------------------------------


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("check", "words"),
    [
        ({"type": "regex", "value": "("}, "bad regex"),
        ({"type": "nope", "value": 1}, "must be {'type': one of"),
        ({"value": "x"}, "must be {'type': one of"),
        ({"type": "max_words", "value": "ten"}, "max_words needs a whole number"),
        ({"type": "max_chars", "value": True}, "max_chars needs a whole number"),
        ({"type": "json_schema", "value": "a string"}, "needs a JSON schema (a dict), not str"),
        ({"type": "json_schema", "value": {"type": "nope"}}, "not a valid JSON schema"),
        ({"type": "contains"}, "contains needs a string value, not None"),
    ],
)
def test_assertions_that_cannot_work_are_refused_from_data_and_arguments(check: dict[str, Any], words: str) -> None:
    options: dict[str, Any] = {"grid": {"temperature": [0.0]}, "seeds": 1, "model": "x.gguf"}
    with pytest.raises(lmbench.ParameterError, match="data row 0") as from_data:
        lmbench.sweep("Say {x}", data=[{"x": "a", "assert": [check]}], **options)
    with pytest.raises(lmbench.ParameterError, match=r"assertions\[0\]") as from_argument:
        lmbench.sweep("Say it", assertions=[check], **options)
    assert words in str(from_data.value) and words in str(from_argument.value)


@pytest.mark.no_test_model
def test_a_catastrophic_regex_times_out_as_a_failed_assertion() -> None:
    from lmbench import scores

    text = "a" * 64 + "!"
    with pytest.warns(UserWarning, match="assertion timed out"):
        assert scores.check(text, {"type": "regex", "value": "(a|aa)+$"}) is False
    assert scores.check(text, {"type": "regex", "value": "a+!$"}) is True


def test_a_scorer_interrupted_still_leaves_the_run_recorded(tmp_path: Path, model_path: Path) -> None:
    def interrupted(text: str) -> bool:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _sweep(tmp_path, prompts="Once", model=model_path, assertions=[interrupted])
    runs = lmbench.runs(store=tmp_path / "runs.db")
    assert len(runs) == 1 and runs.finish_reason[0] in ("stop", "length")


@pytest.mark.no_test_model
@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"scale": (1, 2, 3)}, "scale must be two whole numbers"),
        ({"scale": 5}, "scale must be two whole numbers"),
        ({"scale": (1.5, 4)}, "scale must be two whole numbers"),
        ({"name": 3}, "name must be a non-empty string"),
        ({"name": "id"}, "cannot be named 'id'"),
        ({"name": "text"}, "cannot be named 'text'"),
        ({"model": "no-such-model.gguf"}, "no-such-model.gguf"),
        ({"rubric": "bad \udfff"}, "lone surrogate"),
    ],
)
def test_judges_that_cannot_work_are_refused_when_made(options: dict[str, Any], words: str) -> None:
    with pytest.raises((lmbench.ParameterError, lmbench.ModelLoadError)) as caught:
        lmbench.judge(**{"rubric": "Is it good?", **options})
    assert words in str(caught.value)


def test_a_rubric_longer_than_the_context_is_refused_before_any_run(tmp_path: Path, model_path: Path) -> None:
    judge = lmbench.judge("Be strict. " * 400, model=model_path)
    with pytest.raises(lmbench.ParameterError, match=r"rubric is .* tokens"):
        _sweep(tmp_path, prompts="Once", model=model_path, scorers=[judge])
    assert not (tmp_path / "runs.db").exists() or lmbench.runs(store=tmp_path / "runs.db").empty


# Sweeps ------------------------------------------------------------------------------------------------


@pytest.mark.no_test_model
def test_prompts_that_are_not_text_are_refused() -> None:
    with pytest.raises(lmbench.ParameterError, match="prompts must be a string, a list of strings or a dict"):
        lmbench.sweep(prompts=5, grid={"temperature": [0.0]})  # type: ignore[arg-type]


def test_a_sweep_cancelled_before_its_first_run_returns_an_empty_table(tmp_path: Path, model_path: Path) -> None:
    import threading

    cancel = threading.Event()
    cancel.set()
    data = tmp_path / "big.csv"
    data.write_text("x\n" + "\n".join(f"w{i}" for i in range(20_000)) + "\n")
    frame = _sweep(tmp_path, prompts="Say {x}", data=data, model=model_path, cancel=cancel)
    assert frame.empty and "model" in frame.columns


# Model folders, the store's folder, scale ------------------------------------------------------------


def test_a_symlink_loop_in_a_model_folder_is_skipped_with_a_warning(
    tmp_path: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "a.gguf").symlink_to("b.gguf")
    (folder / "b.gguf").symlink_to("a.gguf")
    (folder / "gone.gguf").symlink_to("missing.gguf")
    (folder / "real.gguf").symlink_to(model_path)
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(folder))
    with pytest.warns(UserWarning, match="a.gguf: a symbolic link that leads to no file"):
        listed = lmbench.models.list()
    assert str(folder / "real.gguf") in set(listed.path)
    assert not {str(folder / n) for n in ("a.gguf", "b.gguf", "gone.gguf")} & set(listed.path)
    for broken in ("a.gguf", "gone.gguf"):
        with pytest.raises(lmbench.ModelLoadError, match="symbolic link that leads to no file"):
            lmbench.models.info(folder / broken)


@pytest.fixture
def small_disk(tmp_path: Path) -> Any:
    """A folder on its own 1 MB file system (a tmpfs, so root only), to make read-only or fill."""
    import os
    import subprocess

    folder = tmp_path / "disk"
    folder.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], capture_output=True
    )
    if not mounted or mounted.returncode != 0:
        pytest.skip("needs root to mount a small file system")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=False)


def _remount(folder: Path, mode: str) -> None:
    import subprocess

    subprocess.run(["mount", "-o", f"remount,{mode}", str(folder)], check=True)


def test_a_store_in_a_read_only_folder_is_read_and_refuses_writes_by_name(
    small_disk: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = small_disk / "runs.db"
    run = lmbench.generate("Once", model=model_path, max_tokens=2, store=path)
    lmbench.get_store(path).close()
    _remount(small_disk, "ro")
    store = lmbench.Store(path)
    assert store.runs().id.tolist() == [run.id] and store.runs(last=1).id.tolist() == [run.id]
    assert store.get(run.id).text == run.text
    with pytest.raises(lmbench.StoreError, match=f"its folder {small_disk} is read-only"):
        lmbench.generate("Once", model=model_path, max_tokens=2, store=store)
    with pytest.raises(lmbench.StoreError, match="is read-only"):
        lmbench.Store(small_disk / "new.db").runs()
    monkeypatch.setenv("LMBENCH_HOME", str(small_disk))
    fresh = tmp_path / "fresh.gguf"  # a model this process has not seen: its metadata and digest are new
    shutil.copyfile(model_path, fresh)
    monkeypatch.setenv("LMBENCH_MODEL_PATH", str(tmp_path))
    assert str(fresh) in set(lmbench.models.list().path), "the metadata cache is only skipped"
    assert lmbench.generate("Once", model=fresh, max_tokens=2, store=tmp_path / "runs.db").model_sha256
    with pytest.raises(lmbench.StoreError, match=f"cannot write presets.json in {small_disk}: .*read-only"):
        lmbench.save_preset("cold", temperature=0.1)


def test_a_full_disk_says_the_disk_is_full(small_disk: Path, model_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    fd = os.open(small_disk / "filler", os.O_WRONLY | os.O_CREAT)
    with pytest.raises(OSError):
        while True:
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    with pytest.raises(lmbench.StoreError, match="the disk is full"):
        lmbench.generate("Once", model=model_path, max_tokens=2, store=small_disk / "runs.db")
    monkeypatch.setenv("LMBENCH_HOME", str(small_disk))
    with pytest.raises(lmbench.StoreError, match=f"cannot write presets.json in {small_disk}: the disk is full"):
        lmbench.save_preset("cold", temperature=0.1)


def test_a_small_query_reads_only_what_it_returns(tmp_path: Path, model_path: Path) -> None:
    import dataclasses

    store = lmbench.Store(tmp_path / "runs.db")
    run = lmbench.generate("Once", model=model_path, max_tokens=2, store=store)
    copies = [
        dataclasses.replace(
            run,
            id=f"r{i:05d}",
            experiment=f"e{i % 3}",
            created_at=run.created_at + datetime.timedelta(seconds=i),
        )
        for i in range(3000)
    ]
    store.record(copies)
    store.add_metrics({c.id: {"score": i} for i, c in enumerate(copies)})
    whole = store.runs()
    statements: list[str] = []
    with store.connect() as conn:
        conn.set_trace_callback(statements.append)
    try:
        last = store.runs(last=10)
        of_one = store.runs("e1", last=5)
        chosen = store.runs(ids=["r00007", "r02999"])
    finally:
        with store.connect() as conn:
            conn.set_trace_callback(None)
    assert last.id.tolist() == whole.id.tolist()[-10:]
    assert last.score.tolist() == whole.score.tolist()[-10:]
    assert of_one.id.tolist() == whole[whole.experiment == "e1"].id.tolist()[-5:]
    assert chosen.id.tolist() == ["r00007", "r02999"] and chosen.score.tolist() == [7.0, 2999.0]
    reads = [s for s in statements if s.startswith("SELECT rowid")]
    assert len(reads) == 3 and all("LIMIT" in s or "json_each" in s for s in reads)
    with pytest.raises(lmbench.ParameterError, match="last must be a whole number"):
        store.runs(last=-1)


def test_the_api_refuses_what_would_crash_a_worker_and_other_streams_go_on(model_path: Path) -> None:
    import threading

    import requests

    from lmbench.serve._server import Server
    from lmbench.serve._service import Settings

    with Server(Settings(model=str(model_path), n_ctx=4096), port=0) as server:
        done: dict[str, Any] = {}

        def stream() -> None:
            body = {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True, "stream": True}
            with requests.post(f"{server.url}/v1/completions", json=body, stream=True, timeout=300) as response:
                done["last"] = [line for line in response.iter_lines() if line][-1]

        other = threading.Thread(target=stream)
        other.start()
        bad = [
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": _nested(400)}}},
            {
                "response_format": {
                    "type": "json_schema",
                    "json_schema": {"schema": {"type": "string", "maxLength": 20000}},
                }
            },
            {"grammar": "root ::= " + "(" * 30_000 + '"a"' + ")" * 30_000},
        ]
        for extra in bad:
            body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, **extra}
            answer = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
            assert answer.status_code == 400, answer.text
            assert "limit" in answer.json()["error"]["message"] or "deep" in answer.json()["error"]["message"]
        nested_but_allowed = {"type": "json_schema", "json_schema": {"name": "x", "schema": _nested(60)}}
        body = {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "response_format": nested_but_allowed}
        answer = requests.post(f"{server.url}/v1/chat/completions", json=body, timeout=120)
        assert answer.status_code == 400 and "nested more than 50 schemas deep" in answer.json()["error"]["message"]
        other.join(300)
        assert done["last"] == b"data: [DONE]", "the other client's stream finished"


@pytest.mark.no_test_model
def test_a_wide_schema_within_the_limits_is_accepted() -> None:
    schema = {
        "type": "object",
        "properties": {f"field_{i}": {"type": "string", "maxLength": 1000} for i in range(50)},
        "required": [f"field_{i}" for i in range(50)],
    }
    params = lmbench.validate_params(json_schema=schema)
    assert _grammar.expanded_size(params.constraint() or "") > 50 * 1000
