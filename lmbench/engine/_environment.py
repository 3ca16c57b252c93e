"""What shapes a run's numbers besides its parameters: the machine, llama.cpp's build and the versions.

These facts are the same for every run of a process, so a run keeps a short id of them
(``environment``) and the store keeps the facts once per id (``lmbench.environments()``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import platform

import llama_cpp

from .._version import __version__


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            return next((line.partition(":")[2].strip() for line in fh if line.startswith("model name")), "")
    except OSError:
        return ""


@functools.cache
def facts() -> dict[str, str]:
    """This process's environment: llama.cpp's system info (its CPU features), versions, platform, CPU."""
    return {
        "system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip(),
        "llama_cpp_python": llama_cpp.__version__,
        "lmbench": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": _cpu() or platform.processor(),
    }


def identify(values: dict[str, str]) -> str:
    """The id of an environment: 12 hex digits of the digest of its facts."""
    return hashlib.sha1(json.dumps(values, sort_keys=True).encode()).hexdigest()[:12]


@functools.cache
def current() -> str:
    """The id of this process's environment."""
    return identify(facts())
