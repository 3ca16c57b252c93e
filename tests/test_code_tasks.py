"""Code tasks on the real sandbox: generated Python against tests with no network, no lasting writes and limits;
pass@k against hand-computed values; the ``tests`` scorer in a sweep on the real test model; HumanEval's data."""

from __future__ import annotations

import contextlib
import ctypes
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, TEST_MODEL

import lmbench
from lmbench import code_tasks
from lmbench._sandbox import Limits, execute

ADD = "def add(a, b):\n    return a + b\n"
ADD_TESTS = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"


def test_a_passing_function_passes() -> None:
    outcome = lmbench.run_tests(ADD, ADD_TESTS, entry_point="add")
    assert (outcome.status, outcome.message) == ("passed", "")


def test_a_failing_assert_fails_naming_the_assertion() -> None:
    outcome = lmbench.run_tests("def add(a, b):\n    return a - b\n", ADD_TESTS, entry_point="add")
    assert outcome.status == "failed"
    assert "assert candidate(2, 3) == 5" in outcome.message


def test_an_exception_is_an_error_with_its_message() -> None:
    outcome = lmbench.run_tests("def add(a, b):\n    return a + c\n", ADD_TESTS, entry_point="add")
    assert outcome.status == "error" and "NameError" in outcome.message and "'c'" in outcome.message


def test_an_infinite_loop_times_out() -> None:
    outcome = lmbench.run_tests(
        "def add(a, b):\n    while True:\n        pass\n", ADD_TESTS, entry_point="add", timeout_s=1
    )
    assert outcome.status == "timeout"
    assert "1 s wall-clock limit" in outcome.message or "CPU-second limit" in outcome.message


def test_a_sleeping_loop_is_stopped_by_the_wall_clock() -> None:
    outcome = lmbench.run_tests("import time\ntime.sleep(60)\n", "", timeout_s=1)
    assert (outcome.status, outcome.message) == ("timeout", "ran past the 1 s wall-clock limit")


def test_a_memory_bomb_hits_the_address_space_limit() -> None:
    bomb = "def add(a, b):\n    hog = bytearray(8 * 1024 ** 3)\n    return a + b\n"
    outcome = lmbench.run_tests(bomb, ADD_TESTS, entry_point="add", memory_mb=256)
    assert outcome.status == "error" and "256 MB address-space limit" in outcome.message


def test_no_network_not_even_to_this_machine() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    port = server.getsockname()[1]
    accepted: list[object] = []
    listener = threading.Thread(target=lambda: _accept(server, accepted), daemon=True)
    listener.start()
    code = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
    outcome = lmbench.run_tests(code, "")
    assert outcome.status == "error" and "Network is unreachable" in outcome.message
    with socket.create_connection(("127.0.0.1", port), timeout=3):  # the server itself is up
        pass
    listener.join(10)
    server.close()
    assert len(accepted) == 1, "only the test's own connection arrived"


def _accept(server: socket.socket, accepted: list[object]) -> None:
    with contextlib.suppress(OSError):
        accepted.append(server.accept())


def test_network_allowed_is_an_explicit_opt_out() -> None:
    code = "import socket\nsocket.socket().close()\n"
    assert lmbench.run_tests(code, "", network="allowed").status == "passed"
    with pytest.raises(lmbench.ParameterError, match="network must be 'none'"):
        lmbench.run_tests(code, "", network="yes")  # type: ignore[arg-type]


def test_writes_outside_the_scratch_directory_do_not_persist(tmp_path: Path) -> None:
    outside, repo_file = Path("/tmp") / f"escaped-{tmp_path.name}.txt", REPO / "escaped-by-sandbox.txt"
    code = (
        "import os\n"
        f"open({str(outside)!r}, 'w').write('x')\n"  # /tmp is a fresh tmpfs inside: written, then gone
        "open('here.txt', 'w').write('y')\n"
        "assert os.getcwd() == '/tmp/scratch' and os.listdir('.') == ['here.txt']\n"
        "try:\n"
        f"    open({str(repo_file)!r}, 'w')\n"
        "except OSError as exc:\n"
        "    assert exc.errno == 30, exc  # EROFS: every other mount is read-only\n"
        "else:\n"
        "    raise AssertionError('wrote into the repository')\n"
    )
    outcome = lmbench.run_tests(code, "")
    assert outcome.status == "passed", outcome.message
    assert not outside.exists() and not repo_file.exists()


def test_forking_is_limited_and_children_die_with_the_program() -> None:
    code = (
        "import os, time\n"
        "started = 0\n"
        "try:\n"
        "    for _ in range(64):\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(600)\n"
        "            os._exit(0)\n"
        "        started += 1\n"
        "except BlockingIOError:\n"
        "    print('forks refused after', started)\n"
    )
    outcome = execute(code, Limits(processes=4))
    assert outcome.status == "passed"
    assert "forks refused after" in outcome.output
    assert int(outcome.output.split()[-1]) < 16, "a few processes at most (4 beyond what user nobody already runs)"
    assert _sandboxed_processes() == [], "the sleeping children died with the program (its PID namespace)"


def _sandboxed_processes() -> list[str]:
    """Processes of user nobody still running lmbench's sandbox runner."""
    left = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            uid = next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("Uid:"))
            command = (status.parent / "cmdline").read_bytes()
        except (OSError, StopIteration):
            continue
        if uid == "65534" and b"tmpfs_mb" in command:
            left.append(status.parent.name)
    return left


def test_the_environment_is_empty_and_the_capabilities_gone() -> None:
    code = "import os\nassert os.environ == {} or set(os.environ) <= {'LC_CTYPE'}, dict(os.environ)\n"
    code += "assert os.getuid() == 65534\nimport subprocess\n"
    assert lmbench.run_tests(code, "").status == "passed"


def test_bad_arguments_are_refused_before_anything_runs() -> None:
    with pytest.raises(lmbench.ParameterError, match="timeout_s must be a number > 0"):
        lmbench.run_tests(ADD, ADD_TESTS, timeout_s=0)
    with pytest.raises(lmbench.ParameterError, match="entry_point must be a function name"):
        lmbench.run_tests(ADD, ADD_TESTS, entry_point="add(1)")
    with pytest.raises(lmbench.ParameterError, match="code must be Python source text"):
        lmbench.run_tests(b"x", ADD_TESTS)  # type: ignore[arg-type]


def test_a_fenced_answer_and_a_bare_completion_both_become_programs() -> None:
    answer = "Here it is:\n```python\ndef add(a, b):\n    return a + b\n```\nThat adds."
    assert lmbench.run_tests(answer, ADD_TESTS, entry_point="add").status == "passed"
    prompt = "def add(a, b):\n"
    assert lmbench.run_tests("    return a + b\n", ADD_TESTS, entry_point="add", prompt=prompt).status == "passed"
    typed = "from typing import List\n\n\ndef total(xs: List[int]) -> int:\n"
    whole = "```python\ndef total(xs: List[int]) -> int:\n    return sum(xs)\n```"  # rewrote it, without the import
    tests = "def check(candidate):\n    assert candidate([1, 2]) == 3\n"
    assert lmbench.run_tests(whole, tests, entry_point="total", prompt=typed).status == "passed"


def test_pass_at_k_matches_hand_computed_values() -> None:
    estimate = code_tasks.estimate
    assert estimate(5, 2, 1) == pytest.approx(0.4)  # c / n
    assert estimate(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert estimate(5, 2, 3) == pytest.approx(1 - 1 / 10)  # 1 - C(3,3)/C(5,3)
    assert estimate(5, 2, 4) == 1.0  # fewer than k failures: some k-subset always passes
    assert estimate(5, 0, 3) == 0.0
    assert estimate(200, 1, 100) == pytest.approx(0.5)  # 1 - C(199,100)/C(200,100), no overflow
    with pytest.raises(lmbench.ParameterError):
        estimate(3, 1, 4)


def test_pass_at_k_averages_items_per_setting() -> None:
    runs = pd.DataFrame(
        {
            "prompt_name": ["a"] * 6 + ["b"] * 6,
            "item": ["x", "x", "x", "y", "y", "y"] * 2,
            "tests": [1, 0, 0, 0, 0, 0, 1, 1, 0, 1, 0, 0],
        }
    )
    table = code_tasks.pass_at_k(runs, k=[1, 2])
    a, b = table.set_index("prompt_name").loc["a"], table.set_index("prompt_name").loc["b"]
    assert (a["items"], a["samples"]) == (2, 3)
    assert a["pass@1"] == pytest.approx((1 / 3 + 0) / 2)
    assert a["pass@2"] == pytest.approx(((1 - 1 / 3) + 0) / 2)  # x: 1 - C(2,2)/C(3,2)
    assert b["pass@1"] == pytest.approx((2 / 3 + 1 / 3) / 2)
    assert b["pass@2"] == pytest.approx((1.0 + 2 / 3) / 2)
    with pytest.raises(lmbench.ParameterError, match="k must be a whole number"):
        code_tasks.pass_at_k(runs, k=0)


def test_humaneval_ships_its_problems_and_their_solutions_pass() -> None:
    problems = code_tasks.humaneval(3)
    assert list(problems.id) == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]
    assert len(code_tasks.humaneval()) == 164
    for row in problems.itertuples():
        solved = lmbench.run_tests(row.canonical_solution, row.tests, entry_point=row.entry_point, prompt=row.prompt)
        assert solved.status == "passed", (row.id, solved.message)
        unsolved = lmbench.run_tests("    return None\n", row.tests, entry_point=row.entry_point, prompt=row.prompt)
        assert unsolved.status == "failed"
    with pytest.raises(lmbench.ParameterError, match="no HumanEval problem"):
        code_tasks.humaneval(ids=["HumanEval/999"])


def test_a_sweep_over_data_with_tests_reports_pass_rates_and_pass_at_k() -> None:
    checks = "def check(candidate):\n    assert candidate() == {}\n"
    data = [
        {"id": "forty-two", "topic": "the answer", "tests": checks.format(42), "entry_point": "answer"},
        {"id": "forty-one", "topic": "the answer", "tests": checks.format(41), "entry_point": "answer"},
    ]
    df = lmbench.sweep(
        "Write {topic}.",
        data=data,
        seeds=3,
        model=TEST_MODEL,
        grammar='root ::= "def answer():\\n    return " ("42" | "41") "\\n"',  # the test model writes valid code
        temperature=1.0,
        experiment="code",
        progress=False,
    )
    returned = df.text.str.extract(r"return (\d+)")[0]
    expected = (returned == df["item"].map({"forty-two": "42", "forty-one": "41"})).astype(float)
    assert df["tests"].tolist() == expected.tolist(), "each run passes exactly when it returns its item's number"
    assert lmbench.runs("code").tests.sum() == expected.sum(), "the scores are stored with the runs"
    per_item = expected.groupby(df["item"]).agg(["size", "sum"])
    pass_2 = sum(code_tasks.estimate(3, int(c), 2) for c in per_item["sum"]) / 2
    table = code_tasks.pass_at_k(df, k=[1, 2])
    assert table[["items", "samples"]].iloc[0].tolist() == [2, 3]
    assert table["pass@1"].iloc[0] == pytest.approx(expected.mean())
    assert table["pass@2"].iloc[0] == pytest.approx(pass_2)
    board = lmbench.leaderboard(df, by="prompt_name")
    assert board.loc[0, "tests"] == pytest.approx(expected.mean())
    assert board.loc[0, "pass@3"] == pytest.approx(sum(code_tasks.estimate(3, int(c), 3) for c in per_item["sum"]) / 2)


def _without_sys_admin() -> None:
    """In the child before exec: keep every capability but CAP_SYS_ADMIN (a container that may not make namespaces)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(24, 21, 0, 0, 0)  # PR_CAPBSET_DROP, CAP_SYS_ADMIN
    status = Path("/proc/self/status").read_text().splitlines()
    kept = int(next(line.split()[1] for line in status if line.startswith("CapEff:")), 16) & ~(1 << 21)
    low, high = kept & 0xFFFFFFFF, kept >> 32
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    assert libc.capset(header, (ctypes.c_uint32 * 6)(low, low, 0, high, high, 0)) == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="dropping one capability to see the refusal needs root")
def test_where_namespaces_are_refused_the_error_says_why() -> None:
    script = (
        "import lmbench\n"
        "try:\n"
        "    lmbench.run_tests('assert True', '')\n"
        "except lmbench.errors.SandboxError as exc:\n"
        "    print('refused:', exc)\n"
        "else:\n"
        "    print('ran')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, preexec_fn=_without_sys_admin
    )
    assert done.returncode == 0, done.stderr
    assert "refused: cannot run generated code without network on this machine" in done.stdout
    assert "unshare(CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET): Operation not permitted" in done.stdout
