"""Try a model file in a child process before this process loads it: llama.cpp aborts on some bad files.

A crafted GGUF file can pass every check lmbench makes in Python and still make llama.cpp abort
(SIGABRT) while loading or at the first decode, which would take the notebook kernel or the API
server with it. So a file lmbench has not seen before is loaded, and one token decoded, in a child
process first; a crash there becomes ``ModelLoadError`` with llama.cpp's last log lines. The
verdict is cached per file digest and llama.cpp version in ``$XDG_CACHE_HOME/lmbench``, so each
file pays this once per machine.

Run as a script (``python _probe.py MODEL [--repack]``) it is the child: it imports nothing but
llama-cpp-python and prints ``ok`` when the model loaded and decoded.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import subprocess
import sys
import threading
from pathlib import Path

import llama_cpp

TIMEOUT_S = 300
_verified: set[str] = set()
_lock = threading.Lock()


def _child(path: str, repack: bool) -> int:
    llama_cpp.llama_backend_init()
    params = llama_cpp.llama_model_default_params()
    params.use_extra_bufts = repack
    model = llama_cpp.llama_model_load_from_file(path.encode(), params)
    if not model:
        print("llama.cpp could not load the model", flush=True)
        return 2
    context_params = llama_cpp.llama_context_default_params()
    context_params.n_ctx = context_params.n_batch = context_params.n_ubatch = 64
    context_params.n_threads = context_params.n_threads_batch = 1
    ctx = llama_cpp.llama_init_from_model(model, context_params)
    if not ctx:
        print("llama.cpp could not make a context for the model", flush=True)
        return 2
    vocab = llama_cpp.llama_model_get_vocab(model)
    text = b"Hello"
    tokens = (llama_cpp.llama_token * 16)()
    n = llama_cpp.llama_tokenize(vocab, text, len(text), tokens, 16, True, False)
    if n <= 0:
        print("the model's tokenizer produced no tokens", flush=True)
        return 2
    if llama_cpp.llama_decode(ctx, llama_cpp.llama_batch_get_one(tokens, n)) != 0:
        print("llama.cpp could not decode with the model", flush=True)
        return 2
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    logits = llama_cpp.llama_get_logits_ith(ctx, -1)
    best = max(range(n_vocab), key=lambda i: logits[i])
    piece = ctypes.create_string_buffer(256)
    llama_cpp.llama_token_to_piece(vocab, best, piece, 256, 0, False)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    print("ok", flush=True)
    return 0


def _cache_file() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "lmbench" / "verified-models.json"


def verify(path: Path, digest: str, *, repack: bool) -> None:
    """Raise ``ModelLoadError`` if loading ``path`` and decoding one token crashes or fails a child process."""
    from .. import _jsonfile
    from ..errors import ModelLoadError, StoreError

    key = f"{digest}|{llama_cpp.__version__}|{'repack' if repack else 'plain'}"
    with _lock:
        if key in _verified:
            return
        cache = _jsonfile.read(_cache_file(), cache=True)
        verdict = cache.get(key)
        if verdict is None:
            verdict = _run_child(path, repack)
            cache = _jsonfile.read(_cache_file(), cache=True)
            cache[key] = verdict
            with contextlib.suppress(StoreError):  # an unwritable cache only costs time
                _jsonfile.write(_cache_file(), cache)
        if verdict != "ok":
            raise ModelLoadError(path, verdict)
        _verified.add(key)


def _run_child(path: Path, repack: bool) -> str:
    """``ok``, or why the model cannot be used, with llama.cpp's last words."""
    # Run by path, not as part of the package (so the child imports nothing else), from a neutral folder.
    launcher = f"import runpy; runpy.run_path({__file__!r}, run_name='__main__')"
    command = [sys.executable, "-c", launcher, str(path.resolve()), *(["--repack"] if repack else [])]
    try:
        result = subprocess.run(
            command,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=TIMEOUT_S,
            cwd=os.path.abspath(os.sep),
            env={**os.environ, "GGML_NO_BACKTRACE": "1"},  # the reason, not a debugger's stack dump
        )
    except subprocess.TimeoutExpired:
        return f"llama.cpp did not finish loading it within {TIMEOUT_S} s in a test process"
    if result.returncode == 0 and result.stdout.strip().endswith("ok"):
        return "ok"
    last = last_words(result.stderr + result.stdout)
    if result.returncode < 0:
        return f"llama.cpp crashed on it (signal {-result.returncode}) in a test process; its last lines: {last}"
    return f"llama.cpp refused it in a test process: {last}"


def last_words(output: str) -> str:
    """llama.cpp's last telling lines in a process's output (errors and failed assertions first)."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    telling = [line for line in lines if any(w in line.lower() for w in ("error", "assert", "failed", "abort"))]
    return " | ".join((telling or lines)[-3:]) or "no output"


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1], "--repack" in sys.argv[2:]))
