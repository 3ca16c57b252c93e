"""llama.cpp's quantizer (``llama_model_quantize``) in a child process, reporting each tensor as it goes.

Quantizing runs for minutes on a large model and llama.cpp aborts the process on some inputs, so
it never runs in the notebook kernel or the API server: a child process does it and prints
llama.cpp's log, whose ``[  i/  n]`` lines tell the parent how far it got.

Run as a script (``python _quantizer.py SOURCE OUT FTYPE THREADS REQUANTIZE [IMATRIX]``) it is the child:
it imports nothing but llama-cpp-python (and numpy, which it needs) and prints ``done`` when the file was
written. ``IMATRIX`` is an ``.npz`` of importance values per weight name (already divided by their counts,
as ``llama-quantize`` does when it reads ``llama-imatrix``'s file), handed to llama.cpp through
``llama_model_quantize_params.imatrix``, a null-terminated array of ``llama_model_imatrix_data``.
"""

from __future__ import annotations

import ctypes
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import llama_cpp
import numpy as np

# llama.cpp's file types by the name people use (Q8_0, Q4_K_M, ...), from llama-cpp-python's constants.
FILE_TYPES: dict[str, int] = {
    name.removeprefix("LLAMA_FTYPE_MOSTLY_"): value
    for name, value in vars(llama_cpp).items()
    if name.startswith("LLAMA_FTYPE_MOSTLY_") and isinstance(value, int)
}
FILE_TYPES["F32"] = llama_cpp.LLAMA_FTYPE_ALL_F32
# Tensor types a file may hold and still be quantized from without loss of what is there.
FULL_PRECISION = frozenset({"F32", "F16", "BF16"})
_STEP = re.compile(r"^\[\s*(\d+)/\s*(\d+)\]")


def _imatrix_entries(npz: str) -> tuple[ctypes.Array[llama_cpp.llama_model_imatrix_data], list[np.ndarray]]:
    """llama.cpp's importance matrix array from an ``.npz`` of name -> float32 values; the arrays must outlive it."""
    with np.load(npz) as saved:
        values = {name: np.ascontiguousarray(saved[name], dtype=np.float32) for name in saved.files}
    entries = (llama_cpp.llama_model_imatrix_data * (len(values) + 1))()  # the last one, all null, ends it
    for entry, (name, data) in zip(entries, values.items(), strict=False):
        entry.name = name.encode()
        entry.data = data.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        entry.size = data.size
    return entries, list(values.values())


def _child(source: str, out: str, ftype: int, threads: int, requantize: bool, imatrix: str | None) -> int:
    @llama_cpp.llama_log_callback  # type: ignore[untyped-decorator]  # a ctypes callback type
    def echo(level: int, text: bytes, data: ctypes.c_void_p) -> None:
        sys.stdout.write(text.decode("utf-8", errors="replace"))
        sys.stdout.flush()

    llama_cpp.llama_log_set(echo, ctypes.c_void_p(0))
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = threads
    params.allow_requantize = requantize
    if imatrix is not None:
        entries, _kept = _imatrix_entries(imatrix)
        params.imatrix = ctypes.cast(entries, ctypes.POINTER(llama_cpp.llama_model_imatrix_data))
    status = llama_cpp.llama_model_quantize(source.encode(), out.encode(), ctypes.byref(params))
    print("done" if status == 0 else f"\nllama_model_quantize failed with status {status}", flush=True)
    return 0 if status == 0 else 2


def run(
    source: Path,
    out: Path,
    ftype: int,
    *,
    threads: int,
    requantize: bool,
    step: Callable[[int, int], None],
    imatrix: Path | None = None,
) -> str | None:
    """Quantize ``source`` into ``out`` in a child process; ``None`` when done, else why not (llama.cpp's words).

    ``step(i, n)`` is called as llama.cpp finishes tensor ``i`` of ``n``. ``imatrix``: an ``.npz`` of
    importance values by weight name (see the module's docstring). A failed run leaves no file.
    """
    launcher = f"import runpy; runpy.run_path({__file__!r}, run_name='__main__')"
    args = [
        str(source),
        str(out),
        str(ftype),
        str(threads),
        "1" if requantize else "0",
        *([str(imatrix)] if imatrix else []),
    ]
    lines: list[str] = []
    with subprocess.Popen(
        [sys.executable, "-c", launcher, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        cwd=os.path.abspath(os.sep),
        env={**os.environ, "GGML_NO_BACKTRACE": "1"},
    ) as child:
        assert child.stdout is not None
        for line in child.stdout:
            lines.append(line)
            found = _STEP.match(line)
            if found:
                step(int(found[1]), int(found[2]))
        code = child.wait()
    if code == 0 and lines and lines[-1].strip() == "done":
        return None
    out.unlink(missing_ok=True)
    from .engine._probe import last_words  # not at the top: the child imports nothing of lmbench

    signal = f" (killed by signal {-code})" if code < 0 else ""
    return f"llama.cpp could not quantize it{signal}: {last_words(''.join(lines))}"


if __name__ == "__main__":
    source_arg, out_arg, ftype_arg, threads_arg, requantize_arg = sys.argv[1:6]
    imatrix_arg = sys.argv[6] if len(sys.argv) > 6 else None
    sys.exit(_child(source_arg, out_arg, int(ftype_arg), int(threads_arg), requantize_arg == "1", imatrix_arg))
