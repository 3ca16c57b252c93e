"""The scheduler's benchmarks (B6-B8): many prompts, concurrent API clients, a shared template.

Run through ``bench/run.py --only B6,B7,B8``; each returns ``Result`` rows for its table.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import openai

import lmbench
from bench import llama_tools
from bench.common import SAMPLING, Result, alternate, baseline_llama, sequential, sweep_target
from lmbench.engine._engine import physical_cores
from lmbench.store._store import Store

OPENERS = [
    "Once upon a time",
    "The little cat",
    "Tom had a red ball",
    "One day, a girl named Lily",
    "The sun was shining",
    "There was a big tree",
    "Ben and his dad",
    "A small bird sat",
    "The dog ran to the park",
    "Mom made a cake",
    "It was a cold night",
    "Sue found a box",
    "The boat was slow",
    "A frog lived in a pond",
    "The king was sad",
    "Max liked to jump",
]
WORDS = [
    "dog",
    "cat",
    "park",
    "ball",
    "sun",
    "tree",
    "bird",
    "cake",
    "box",
    "boat",
    "frog",
    "king",
    "girl",
    "boy",
    "happy",
    "sad",
    "big",
    "small",
    "red",
    "blue",
    "run",
    "jump",
    "play",
    "look",
    "find",
    "share",
    "help",
    "friend",
    "mom",
    "dad",
    "house",
    "garden",
    "flower",
    "rain",
    "snow",
    "toy",
    "car",
]


def many_prompts() -> dict[str, str]:
    """32 distinct story openings."""
    return {f"p{i:02d}": f"{OPENERS[i % 16]}{'' if i < 16 else ' and a ' + WORDS[i]}" for i in range(32)}


def b6_many_prompts(name: str, path: Path, reps: int) -> Result:
    engine = lmbench.load(path)
    bare = baseline_llama(path)
    store = Store(Path(tempfile.mkdtemp()) / "b6.db")
    prompts = many_prompts()

    def ours() -> float:
        started = time.perf_counter()
        df = lmbench.sweep(
            prompts,
            grid={"temperature": [0.8]},
            seeds=[0],
            max_tokens=64,
            ignore_eos=True,
            model=engine.path,
            name=uuid.uuid4().hex,
            progress=False,
            store=store,
            **{k: v for k, v in SAMPLING.items() if k != "temperature"},
        )
        return df.completion_tokens.sum() / (time.perf_counter() - started)

    def theirs() -> float:
        return sequential(bare, [(prompt, {"seed": 0, **SAMPLING}) for prompt in prompts.values()])

    ours(), theirs()
    a, b = alternate(ours, theirs, reps)
    bare.close()
    return Result(
        "B6 many prompts",
        name,
        "generated tokens/s, 32 distinct prompts x 64 tokens",
        a,
        b,
        "tok/s",
        sweep_target(name),
    )


def _text_of(engine: lmbench.Engine, n_tokens: int, rng: random.Random) -> str:
    """Words until the text is ``n_tokens`` tokens long (as this model counts them)."""
    words: list[str] = []
    while len(engine.tokenize(" ".join(words), add_bos=False)) < n_tokens:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def b8_shared_template(name: str, path: Path, reps: int) -> list[Result]:
    engine = lmbench.load(path)
    rng = random.Random(8)
    instruction = "Write a short story about these words. " + _text_of(engine, 300, rng) + "\nWords:"
    prompts = {f"t{i:02d}": f"{instruction} {_text_of(engine, 34, rng)}\nStory:" for i in range(32)}
    n_instruction = len(engine.tokenize(instruction))
    n_tails = sum(len(engine.tokenize(p)) for p in prompts.values()) - 32 * n_instruction
    store = Store(Path(tempfile.mkdtemp()) / "b8.db")
    evaluated: dict[bool, int] = {}

    def sweep(shared: bool) -> Callable[[], float]:
        def go() -> float:
            engine.scheduler.share_prefixes = shared
            engine.scheduler.forget()  # each side starts with an empty cache
            started = time.perf_counter()
            df = lmbench.sweep(
                prompts,
                grid={"temperature": [0.8]},
                seeds=[0],
                max_tokens=16,
                ignore_eos=True,
                model=engine.path,
                name=uuid.uuid4().hex,
                progress=False,
                store=store,
            )
            evaluated[shared] = int((df.prompt_tokens - df.prompt_cached_tokens).sum())
            return time.perf_counter() - started

        return go

    a, b = alternate(sweep(True), sweep(False), reps)
    engine.scheduler.share_prefixes = True
    limit = n_instruction + 32 * 45
    return [
        Result(
            "B8 shared template",
            name,
            f"prompt tokens evaluated, 32 prompts ({n_instruction}-token prefix, {n_tails // 32}-token tails)",
            evaluated[True],
            evaluated[False],
            "tokens",
            f"<= {limit}",
        ),
        Result(
            "B8 shared template", name, "sweep wall time, 16 tokens each (prefix sharing on vs off)", a, b, "s", "< 1"
        ),
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _lmbench_server(path: Path, parallel: int, per_slot: int) -> Iterator[str]:
    """``lmbench serve`` in a process of its own, as users start it (and as llama-server runs)."""
    port = _free_port()
    command = [str(Path(sys.executable).with_name("lmbench")), "serve", "--model", str(path), "--port", str(port)]
    command += ["--n-ctx", str(per_slot), "--parallel", str(parallel)]
    with _process(command, port, {**os.environ, "LMBENCH_HOME": tempfile.mkdtemp(prefix="lmbench-b7-")}):
        yield f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def _llama_server(binary: Path, path: Path, parallel: int, per_slot: int) -> Iterator[str]:
    port = _free_port()
    command = [str(binary), "-m", str(path), "-c", str(parallel * per_slot), "-np", str(parallel)]
    command += ["-t", str(physical_cores()), "--host", "127.0.0.1", "--port", str(port), "--no-webui"]
    command += llama_tools.as_lmbench_loads()
    with _process(command, port) as printed:
        if not llama_tools.features(printed):  # this version prints none: its build's sibling says
            printed = llama_tools.sibling_system_info(binary, path)
        llama_tools.same_features("llama-server", printed)
        yield f"http://127.0.0.1:{port}/v1"


@contextlib.contextmanager
def _process(command: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """A server process, once its /health answers (up to 2 minutes); yields what it printed so far."""
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and process.poll() is None:
                with contextlib.suppress(OSError):
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2).status == 200:
                        break
                time.sleep(0.2)
            log.seek(0)
            printed = log.read().decode(errors="replace")
            if process.poll() is not None:
                raise RuntimeError(f"{command[0]} ended before answering: {printed[-2000:]}")
            yield printed
        finally:
            process.terminate()
            process.wait(30)


def _clients(base_url: str, *, clients: int = 16, each: int = 4, max_tokens: int = 64) -> dict[str, float]:
    """16 openai clients, 4 streamed completions each: aggregate tokens/s, latency and time to first token."""
    latencies: list[float] = []
    firsts: list[float] = []
    tokens = [0]
    lock = threading.Lock()

    def client(i: int) -> None:
        api = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600)
        for k in range(each):
            started, first, n = time.perf_counter(), None, 0
            stream = api.completions.create(
                model="any",
                prompt=OPENERS[(i + k) % 16],
                max_tokens=max_tokens,
                seed=i * each + k,
                stream=True,
                temperature=0.8,
                extra_body={"ignore_eos": True},
                stream_options={"include_usage": True},
            )
            for chunk in stream:
                if first is None and chunk.choices and chunk.choices[0].text:
                    first = time.perf_counter() - started
                if chunk.usage is not None:
                    n = chunk.usage.completion_tokens
            with lock:
                latencies.append(time.perf_counter() - started)
                firsts.append(first or 0.0)
                tokens[0] += n

    _clients_once(base_url)
    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    q = statistics.quantiles(latencies, n=20)
    return {
        "tok_s": tokens[0] / wall,
        "p50": statistics.median(latencies),
        "p95": q[18],
        "ttft50": statistics.median(firsts),
        "ttft95": statistics.quantiles(firsts, n=20)[18],
    }


def _one_token_latency(base_url: str, n: int = 60) -> float:
    """Median seconds of a non-streamed one-token completion, one request at a time (the first few warm up)."""
    client = openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=60)
    seconds = []
    for i in range(n):
        started = time.perf_counter()
        client.completions.create(model="any", prompt="Once upon a time", max_tokens=1, seed=i)
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds[10:])


def _clients_once(base_url: str) -> None:
    """A warm-up request (the model loads)."""
    openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=600).completions.create(
        model="any", prompt="Hi", max_tokens=2
    )


def b7_concurrent_clients(name: str, path: Path, reps: int) -> list[Result]:
    per_slot = 256
    runs: dict[str, list[dict[str, float]]] = {"16": [], "1": [], "llama-server": []}
    one_token: dict[str, list[float]] = {"16": [], "llama-server": []}
    binary = llama_tools.build("llama-server")
    for _ in range(reps):
        for parallel in (16, 1):
            with _lmbench_server(path, parallel, per_slot) as url:
                runs[str(parallel)].append(_clients(url))
                if parallel == 16:
                    one_token["16"].append(_one_token_latency(url))
        if binary is not None:
            with _llama_server(binary, path, 16, per_slot) as url:
                runs["llama-server"].append(_clients(url))
                one_token["llama-server"].append(_one_token_latency(url))

    def median(side: str, key: str) -> float:
        return statistics.median(r[key] for r in runs[side])

    results = [
        Result(
            "B7 concurrent clients",
            name,
            "16 clients x 4 requests, aggregate tok/s: --parallel 16 vs 1",
            median("16", "tok_s"),
            median("1", "tok_s"),
            "tok/s",
            ">= 2.5",
        )
    ]
    if runs["llama-server"]:
        results.append(
            Result(
                "B7 concurrent clients",
                name,
                "the same, lmbench serve vs llama-server (--parallel 16)",
                median("16", "tok_s"),
                median("llama-server", "tok_s"),
                "tok/s",
                ">= 0.8",
            )
        )
    if one_token["llama-server"]:
        results.append(
            Result(
                "B7 concurrent clients",
                name,
                "per-request overhead: one-token completion, one client, p50 (lmbench serve vs llama-server)",
                statistics.median(one_token["16"]),
                statistics.median(one_token["llama-server"]),
                "s",
                "report",
            )
        )
    for side in runs:
        if runs[side]:
            label = "llama-server" if side == "llama-server" else f"lmbench --parallel {side}"
            results.append(
                Result(
                    "B7 concurrent clients",
                    name,
                    f"{label}: request latency p50 (p95 "
                    f"{median(side, 'p95'):.2f} s), time to first token p50 (p95 "
                    f"{median(side, 'ttft95'):.2f} s) {median(side, 'ttft50'):.2f} s",
                    median(side, "p50"),
                    None,
                    "s",
                )
            )
    return results
