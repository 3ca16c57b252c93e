"""B10: how long a person waits for the model list with 20 models in the folders (cold, then warm)."""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Result
from bench.synth import synthesize

N_MODELS = 20


def b10_model_list(reps: int) -> list[Result]:
    folder = Path(tempfile.mkdtemp(prefix="lmbench-models-"))
    for i in range(N_MODELS):
        synthesize(folder / f"model-{i:02d}.gguf", n_embd=64, n_layer=2, n_head=4, n_ff=128, seed=i)
    home = tempfile.mkdtemp(prefix="lmbench-home-")
    env = {**os.environ, "LMBENCH_MODEL_PATH": str(folder), "LMBENCH_HOME": home}
    cli = [sys.executable, "-m", "lmbench.cli", "models", "list"]
    panel = [
        sys.executable,
        "-c",
        "import time, lmbench; t = time.perf_counter(); lmbench.panel(); "
        "u = time.perf_counter(); lmbench.panel(); print(u - t, time.perf_counter() - u)",
    ]

    def wall(command: list[str]) -> float:
        started = time.perf_counter()
        subprocess.run(command, env=env, check=True, capture_output=True)
        return time.perf_counter() - started

    def in_process(command: list[str]) -> tuple[float, float]:
        out = subprocess.run(command, env=env, check=True, capture_output=True, text=True).stdout
        first, again = map(float, out.strip().splitlines()[-1].split())
        return first, again

    cold = wall(cli)  # reads every header once, caches the facts per file version in $LMBENCH_HOME
    warm = statistics.median(wall(cli) for _ in range(reps))
    python_only = statistics.median(wall([sys.executable, "-c", "import lmbench.cli"]) for _ in range(reps))
    panels = [in_process(panel) for _ in range(reps)]
    name = f"{N_MODELS} models"
    return [
        Result("B10 model list", name, "`lmbench models list`, first time (headers read)", cold, None, "s"),
        Result(
            "B10 model list",
            name,
            "`lmbench models list`, warm, vs `import lmbench.cli` alone",
            warm,
            python_only,
            "s",
            "< 0.3 s more than start-up",
        ),
        Result(
            "B10 model list",
            name,
            "lmbench.panel(), the first in a process (imports the UI)",
            statistics.median(p[0] for p in panels),
            None,
            "s",
        ),
        Result(
            "B10 model list",
            name,
            "lmbench.panel(), another one (models listed again)",
            statistics.median(p[1] for p in panels),
            None,
            "s",
            "< 0.3 s",
        ),
    ]
