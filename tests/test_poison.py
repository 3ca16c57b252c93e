"""Nothing a caller passes can poison the store, and store faults are reported, not masked.

The poison corpus is generated with fixed seeds and run in a subprocess: every case must end in a
clear ``ParameterError`` (or 400) before anything is generated, and the store stays readable.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import requests
from conftest import TEST_MODEL

import lmbench
from lmbench.serve import Server, Settings


def _bad_texts(seed: int) -> list[object]:
    """Values that are not storable text: bytes, lone surrogates, non-strings."""
    rng = random.Random(seed)
    surrogates = [chr(rng.randrange(0xD800, 0xE000)) for _ in range(4)]
    return [
        b"\xff",
        b"experiment",
        bytearray(b"x"),
        42,
        3.5,
        ["a"],
        {"a": 1},
        *surrogates,
        "ok" + surrogates[0] + "ok",
        "x" * 5000,
    ]


def _bad_numbers(seed: int) -> list[tuple[str, object]]:
    rng = random.Random(seed)
    cases: list[tuple[str, object]] = [
        ("temperature", "0.5"),
        ("top_k", "40"),
        ("seed", "7"),
        ("ignore_eos", 1),
        ("ignore_eos", "true"),
        ("max_tokens", 3.0),
        ("max_tokens", True),
        ("temperature", Decimal("0.5")),
        ("top_p", None),
        ("seed", 2**32),
        ("seed", -1),
        ("top_k", 2**40),
        ("max_tokens", 2**40),
        ("logprobs", 21),
        ("stop", [""]),
        ("stop", "\udfff"),
        ("stop", [1]),
        ("temperature", float("nan")),
        ("temperature", float("inf")),
    ]
    names = ["temperature", "top_p", "top_k", "min_p", "max_tokens", "seed", "repeat_penalty"]
    cases += [(rng.choice(names), rng.choice(["1", "", [], {}, b"1", object.__name__])) for _ in range(20)]
    return cases


SCRIPT = """
import json, sys
import lmbench
texts, numbers = json.loads(sys.argv[1]), json.loads(sys.argv[2])
outcomes = []
def attempt(fn):
    try:
        fn()
        outcomes.append("accepted")
    except lmbench.ParameterError:
        outcomes.append("ParameterError")
    except lmbench.LmbenchError as exc:  # another clear error (a 5,000-character prompt overflows the context)
        outcomes.append(type(exc).__name__)
    except Exception as exc:
        outcomes.append(f"{type(exc).__name__}: {exc}")
decode = lambda v: bytes.fromhex(v[6:]) if isinstance(v, str) and v.startswith("bytes:") else v
for value in map(decode, texts):
    attempt(lambda: lmbench.generate("Once", experiment=value, max_tokens=2))
    attempt(lambda: lmbench.generate("Once", tags=[value], max_tokens=2))
    attempt(lambda: lmbench.generate("Once", source=value, max_tokens=2))
    attempt(lambda: lmbench.generate(value, max_tokens=2))
    attempt(lambda: lmbench.chat([{"role": "user", "content": value}], max_tokens=2))
    attempt(lambda: lmbench.sweep("Once", grid={"temperature": [0.1]}, seeds=1, max_tokens=2, experiment=value,
                                  progress=False))
for name, value in numbers:
    attempt(lambda: lmbench.generate("Once", **{name: decode(value)}))
    attempt(lambda: lmbench.sweep("Once", grid={name: [decode(value)]}, seeds=1, progress=False))
table = lmbench.runs()
lmbench.export(sys.argv[3])
print(json.dumps({"outcomes": outcomes, "rows": len(table)}))
"""


def _portable(value: object) -> object:
    return f"bytes:{bytes(value).hex()}" if isinstance(value, bytes | bytearray) else value


def test_poisoned_values_are_refused_before_anything_runs(tmp_path: Path) -> None:
    texts = [_portable(v) for v in _bad_texts(seed=7)]
    numbers = [(n, _portable(v)) for n, v in _bad_numbers(seed=11) if not isinstance(v, Decimal | float)]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps(texts), json.dumps(numbers), str(tmp_path / "all.jsonl")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "LMBENCH_MODEL": str(TEST_MODEL)},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    odd = [o for o in report["outcomes"] if o not in ("ParameterError", "ContextOverflowError", "accepted")]
    assert odd == [], odd
    assert report["outcomes"].count("accepted") == 0, "every poisoned value is refused"
    assert report["rows"] == 0 and (tmp_path / "all.jsonl").exists(), "the store stays empty and readable"


@pytest.mark.parametrize(
    ("name", "value"), [(n, v) for n, v in _bad_numbers(seed=11) if isinstance(v, Decimal | float)]
)
def test_odd_python_numbers_are_refused(name: str, value: object) -> None:
    with pytest.raises(lmbench.ParameterError) as caught:
        lmbench.generate("Once", **{name: value})
    assert caught.value.name == name
    assert lmbench.runs().empty


def test_numpy_numbers_are_numbers() -> None:
    import numpy as np

    run = lmbench.generate("Once", max_tokens=np.int64(3), temperature=np.float32(0.5), seed=np.uint32(9))
    assert (run.max_tokens, run.seed) == (3, 9)
    frame = lmbench.sweep(
        "Once", grid={"temperature": np.linspace(0.2, 0.6, 2)}, seeds=np.arange(2), max_tokens=3, progress=False
    )
    assert len(frame) == 4


def test_poisoned_http_values_are_400s_and_the_server_lives() -> None:
    bodies = [
        {"prompt": "Once", "stop": ["\udfff"]},
        {"prompt": "Once", "tags": ["\ud800"]},
        {"prompt": "\udfff"},
        {"prompt": "Once", "experiment": "\ud800x"},
        {"prompt": "Once", "seed": "7"},
        {"prompt": "Once", "temperature": "0.5"},
        {"prompt": "Once", "ignore_eos": 1},
        {"prompt": "Once", "top_k": 2**40},
        {"prompt": "Once", "max_tokens": 2.0},
    ]
    nested = "[" * 100_000 + "]" * 100_000
    with Server(Settings(model=str(TEST_MODEL)), port=0) as server:
        for body in bodies:
            raw = json.dumps(body).encode()  # lone surrogates travel as \\ud800 escapes, as a client would send them
            answer = requests.post(
                f"{server.url}/api/generate", data=raw, headers={"Content-Type": "application/json"}, timeout=30
            )
            assert answer.status_code == 400, (body, answer.status_code, answer.text)
        deep = requests.post(
            f"{server.url}/api/generate", data=nested, headers={"Content-Type": "application/json"}, timeout=30
        )
        assert deep.status_code == 400
        assert requests.get(f"{server.url}/api/runs", timeout=30).json() == {"runs": []}
        ok = requests.post(f"{server.url}/api/generate", json={"prompt": "Once", "max_tokens": 2}, timeout=30)
        assert ok.status_code == 200


def test_a_value_the_table_cannot_hold_is_refused_by_the_store() -> None:
    run = lmbench.generate("Once", max_tokens=2)
    run.experiment = b"\xff"  # type: ignore[assignment]  # past every check: the store is the last line
    with pytest.raises(lmbench.StoreError, match="experiment"):
        lmbench.get_store().record(run)
    run.experiment, run.source = "fine", "\udfff"
    with pytest.raises(lmbench.StoreError, match="source"):
        lmbench.get_store().record(run)
    assert len(lmbench.runs()) == 1


def test_a_snapshot_is_never_served_for_another_database(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.store import _snapshot as _table

    monkeypatch.setattr(_table, "SNAPSHOT_MIN_ROWS", 1)
    path = tmp_path / "runs.db"
    lmbench.generate("Once", max_tokens=2, store=path, experiment="old")
    assert lmbench.runs(store=path).experiment.tolist() == ["old"]
    assert _table.snapshot_path(path).exists()
    lmbench.get_store(path).close()
    for leftover in [path, path.with_name("runs.db-wal"), path.with_name("runs.db-shm")]:
        leftover.unlink(missing_ok=True)
    fresh = lmbench.Store(path)  # a new database file where the old one was; its snapshot is still there
    lmbench.generate("Once", max_tokens=2, store=fresh, experiment="new")
    assert fresh.runs().experiment.tolist() == ["new"]


def test_stale_temporary_snapshots_are_removed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from lmbench.store import _snapshot as _table

    monkeypatch.setattr(_table, "SNAPSHOT_MIN_ROWS", 1)
    path = tmp_path / "runs.db"
    stale = tmp_path / "runs.db-table.arrowabc123.tmp"
    stale.write_bytes(b"half a snapshot")
    os.utime(stale, (1, 1))
    lmbench.generate("Once", max_tokens=2, store=path)
    lmbench.runs(store=path)
    assert not stale.exists()


def test_a_damaged_database_is_reported_not_masked(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = lmbench.Store(path)
    for i in range(300):
        lmbench.generate("Once", max_tokens=2, store=store, experiment=f"e{i}" * 20)
    store.close()
    data = bytearray(path.read_bytes())
    rng = random.Random(3)
    for page in range(2, len(data) // 4096):
        start = page * 4096 + 200
        data[start : start + 500] = bytes(rng.randrange(256) for _ in range(500))
    path.write_bytes(bytes(data))
    with pytest.raises(lmbench.StoreError, match="damaged"):
        lmbench.Store(path).runs()


def test_a_full_disk_says_so(tmp_path: Path) -> None:
    path = tmp_path / "runs.db"
    store = lmbench.Store(path)
    run = lmbench.generate("Once", max_tokens=2, store=store)
    with store.connect() as conn:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")  # the database cannot grow: as on a full disk
    run.prompt = "x" * 200_000
    run.id = "another"
    with pytest.raises(lmbench.StoreError, match="disk is full"):
        store.record(run)
    assert len(store.runs()) == 1


def test_a_home_that_is_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home-file"
    home.write_text("not a folder")
    monkeypatch.setenv("LMBENCH_HOME", str(home))
    with pytest.raises(lmbench.StoreError, match="is a file"):
        lmbench.use_store(None)
    with pytest.raises(lmbench.StoreError, match="is a file"):
        lmbench.generate("Once", max_tokens=2)


def test_every_parameter_has_a_column_after_migrations(tmp_path: Path) -> None:
    from lmbench.run import COLUMNS

    store = lmbench.Store(tmp_path / "runs.db")
    with store.connect() as conn:
        declared = {row[1]: row[2] for row in conn.execute("PRAGMA table_info(runs)")}
    assert set(lmbench.GenerationParams.model_fields) <= set(declared)
    assert declared == {c.name: c.sql for c in COLUMNS}, "the migrations make exactly the column table"
    run = lmbench.generate("Once", max_tokens=2, store=store)
    assert set(run.to_record()) == set(declared)


def test_sweep_arguments_are_checked_before_anything_runs() -> None:
    bad = [
        {"batch_size": 0},
        {"batch_size": "4"},
        {"batch_size": True},
        {"grid": [("temperature", 1)]},
        {"grid": {"temperature": "0.5"}},
        {"metrics": 3},
        {"metrics": ["nope"]},
        {"model": 3},
        {"model": [None, 3]},
        {"prompts": ["Once", b"x"]},
        {"prompts": {"a": "\udfff"}},
        {"seeds": "3"},
        {"seeds": [1.5]},
        {"seeds": True},
        {"name": b"x"},
    ]
    for case in bad:
        options = {"prompts": "Once", "grid": {"temperature": [0.5]}, "seeds": 1, "max_tokens": 2, **case}
        prompts = options.pop("prompts")
        with pytest.raises(lmbench.ParameterError):
            lmbench.sweep(prompts, progress=False, **options)
    assert lmbench.runs().empty


def test_damaged_presets_file_is_named_not_lost(lmbench_home: Path) -> None:
    lmbench.save_preset("mine", temperature=0.3)
    (lmbench_home / "presets.json").write_text("{half")
    with pytest.raises(lmbench.LmbenchError, match=r"presets\.json is damaged"):
        lmbench.presets()
    with pytest.raises(lmbench.ParameterError, match="max models"):
        lmbench.set_max_models(0)
