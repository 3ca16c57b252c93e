"""llama.cpp's own tools (``llama-batched-bench``, ``llama-server``, ``llama-perplexity``), built from the
llama.cpp sources inside llama-cpp-python's source package.

The build lands in ``bench/.build`` (not committed) and takes a few minutes on two cores, once.
``LMBENCH_BATCHED_BENCH`` / ``LMBENCH_LLAMA_SERVER`` / ``LMBENCH_LLAMA_PERPLEXITY`` may name already built
binaries instead.
"""

from __future__ import annotations

import functools
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import llama_cpp

from lmbench.engine._engine import cpu_has_amx

BUILD = Path(__file__).resolve().parent / ".build"
ENVIRONMENT = {
    "llama-batched-bench": "LMBENCH_BATCHED_BENCH",
    "llama-server": "LMBENCH_LLAMA_SERVER",
    "llama-perplexity": "LMBENCH_LLAMA_PERPLEXITY",
}


def batched_bench() -> Path | None:
    """The llama-batched-bench binary, building it on first use; None (with the reason printed) if that fails."""
    return build("llama-batched-bench")


def build(target: str) -> Path | None:
    """A llama.cpp tool, building it on first use; None (with the reason printed) if that fails."""
    given = os.environ.get(ENVIRONMENT.get(target, ""))
    if given:
        return Path(given)
    binary = BUILD / "llama.cpp" / "bin" / target
    if binary.exists():
        return binary
    version = llama_cpp.__version__
    BUILD.mkdir(parents=True, exist_ok=True)
    try:
        archive = next(BUILD.glob(f"llama_cpp_python-{version}.tar.gz"), None)
        if archive is None:
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pip",
                    "download",
                    f"llama-cpp-python=={version}",
                    "--no-binary",
                    ":all:",
                    "--no-deps",
                    "-d",
                    str(BUILD),
                ],
                check=True,
                capture_output=True,
            )
            archive = next(BUILD.glob(f"llama_cpp_python-{version}.tar.gz"))
        source = BUILD / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
        if not source.exists():
            with tarfile.open(archive) as tar:
                tar.extractall(BUILD, filter="data")
        options = [
            "-DCMAKE_BUILD_TYPE=Release",
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_OPENSSL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_SERVER=ON",
            "-DLLAMA_BUILD_TOOLS=ON",
            "-DBUILD_SHARED_LIBS=OFF",
        ]
        subprocess.run(
            ["cmake", "-S", str(source), "-B", str(BUILD / "llama.cpp"), *options], check=True, capture_output=True
        )
        jobs = str(os.cpu_count() or 2)
        subprocess.run(
            ["cmake", "--build", str(BUILD / "llama.cpp"), "--target", target, "-j", jobs],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError, StopIteration, tarfile.TarError) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        print(f"could not build {target}: {exc} {detail.decode(errors='replace')[-500:]}")
        return None
    return binary


def features(system_info: str) -> dict[str, str]:
    """The ``NAME = value`` CPU features of a llama.cpp ``system_info`` line (SSE3, AVX2, OPENMP, REPACK, ...)."""
    line = next((part for part in system_info.splitlines() if "CPU :" in part or "system_info" in part), "")
    return dict(re.findall(r"([A-Z][A-Z0-9_]*) = (\w+)", line))


def library_features() -> dict[str, str]:
    """The CPU features of the llama.cpp inside the installed llama-cpp-python."""
    return features(llama_cpp.llama_print_system_info().decode())


def same_features(tool: str, output: str) -> str:
    """The tool's system_info line, after checking its CPU features equal llama-cpp-python's; a fair comparison
    needs the same kernels on both sides, so a difference stops the benchmark."""
    theirs, ours = features(output), library_features()
    if not theirs:
        raise RuntimeError(f"{tool} printed no system_info line: cannot check its CPU features")
    differ = {k: (ours.get(k), theirs.get(k)) for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k)}
    if differ:
        raise RuntimeError(
            f"refusing to compare: {tool} was built with other CPU features than llama-cpp-python {differ}"
        )
    return " | ".join(f"{k} = {v}" for k, v in sorted(theirs.items()))


def as_lmbench_loads() -> list[str]:
    """The tools' options that load a model as lmbench does: where the CPU has AMX, no weight repacking
    (``lmbench.engine``'s default there; this llama.cpp's AMX kernels crash the tools on quantized weights)."""
    return ["--no-repack"] if cpu_has_amx() else []


@functools.cache
def sibling_system_info(binary: Path, model: Path) -> str:
    """The system_info line of ``llama-perplexity`` built beside ``binary``, for a tool that prints none of its
    own (llama-batched-bench): both link the same static ggml of one build, so they have the same kernels."""
    sibling = binary.parent / "llama-perplexity"
    if not sibling.exists():
        return ""
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as text:
        text.write("Once upon a time there was a little girl who liked to play in the park. " * 20)
        text.flush()
        out = subprocess.run(
            [str(sibling), "-m", str(model), "-f", text.name, "-c", "32", "-t", "1", *as_lmbench_loads()],
            capture_output=True,
            text=True,
        )
    return out.stdout + out.stderr


def s_tg(binary: Path, model: Path, *, n_prompt: int, n_gen: int, n_seq: int, threads: int, reps: int) -> float:
    """Median S_TG (generated tokens/s over all sequences) for ``n_seq`` sequences sharing one prompt.

    The tool skips its first configuration's numbers, so a 1-sequence run goes first.
    """
    command = [
        str(binary),
        "-m",
        str(model),
        "-c",
        str(1 << (n_prompt + n_seq * (n_gen + 1)).bit_length()),
        "-b",
        "2048",
        "-ub",
        "512",
        "-npp",
        str(n_prompt),
        "-ntg",
        str(n_gen),
        "-npl",
        f"1,{n_seq}",
        "-t",
        str(threads),
        "-pps",
        *as_lmbench_loads(),
    ]
    speeds = []
    for _ in range(reps):
        for _attempt in range(3):  # the tool now and then ends after its first configuration, silently
            out = subprocess.run(command, check=True, capture_output=True, text=True)
            rows = [
                cells
                for line in (out.stdout + out.stderr).splitlines()
                if re.match(r"\|\s+\d", line) and int((cells := line.split("|"))[3]) == n_seq
            ]
            if rows:
                break
        else:
            raise RuntimeError(f"llama-batched-bench gave no result:\n{out.stdout}\n{out.stderr}")
        printed = out.stdout + out.stderr
        same_features("llama-batched-bench", printed if features(printed) else sibling_system_info(binary, model))
        speeds.append(float(rows[-1][8]))
    return statistics.median(speeds)
