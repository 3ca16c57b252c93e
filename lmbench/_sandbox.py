"""A child process for untrusted Python (generated code and its tests): no network, no lasting writes, rlimits.

``execute(program, limits)`` runs ``program`` in a fresh interpreter (``python -I``, an empty
environment) inside new Linux namespaces, made by a small runner before any of the program runs:

- a network namespace (``unshare(CLONE_NEWNET)``): only a loopback device that is down, so every
  connection fails, to the internet and to this machine's own services alike;
- a mount namespace in which every mount is read-only and ``/tmp``, ``/var/tmp`` and ``/dev/shm``
  are fresh size-limited tmpfs, so nothing written outside the scratch directory (``/tmp/scratch``,
  the working directory) outlasts the run, and the scratch directory goes with it;
- a PID namespace whose first process runs the program: when it ends or is killed, every process it
  started dies with it.

Then the program's process becomes user ``nobody`` (so the process limit holds: Linux never limits
root's) keeping one capability, ``CAP_DAC_READ_SEARCH``, so it can still read the interpreter
wherever it is installed (``/root/.pyenv``); with ``no_new_privs`` set it cannot gain more or
undo the mounts. Rlimits bound its address space, CPU seconds, file size, open files and processes. The runner
enforces the wall-clock limit itself and reports ``passed`` (the program ran to its end),
``failed`` (an ``AssertionError``), ``timeout`` (wall clock or CPU) or ``error`` (any other
exception, a signal, or a setup step that failed), with a message.

The namespaces need Linux and the right to make them (root); where the
machine refuses, ``check()`` raises ``SandboxError`` naming why, and nothing runs.
``network="allowed"`` skips only the network namespace (an explicit opt-out, never the default).
This protects the machine from generated code; it does not stop deliberately deceptive code from
faking its own result.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from typing import Any, Literal

from .errors import SandboxError

Network = Literal["none", "allowed"]
Status = Literal["passed", "failed", "timeout", "error"]
STATUSES = ("passed", "failed", "timeout", "error")


@dataclass(frozen=True)
class Limits:
    """What one program may use: wall-clock and CPU seconds, memory, file size, open files, extra processes."""

    timeout_s: float = 10.0
    cpu_s: int = 10
    memory_mb: int = 1024
    file_size_mb: int = 16
    open_files: int = 64
    processes: int = 4
    network: Network = "none"


@dataclass(frozen=True)
class Outcome:
    """What became of one program: its status, a message (the failing assertion, the error), its output."""

    status: Status
    message: str = ""
    output: str = ""
    duration_s: float = 0.0


# The runner: the child's own program. It reads the program on stdin, makes the namespaces, forks the PID
# namespace's first process, which drops its capabilities, sets the rlimits and runs the program; the runner
# waits for it under the wall-clock limit and writes one JSON result to the parent's pipe.
_RUNNER = r"""
import ctypes, json, linecache, os, resource, select, signal, sys, time, traceback
config = json.loads(sys.argv[1])
report = config["report"]
program = sys.stdin.read()
libc = ctypes.CDLL(None, use_errno=True)

def done(result):
    os.write(report, json.dumps(result).encode())
    os._exit(0)

def fail(step):
    done({"status": "error", "message": f"sandbox setup: {step}: {os.strerror(ctypes.get_errno())}", "setup": True})

def mount(source, target, kind, flags, data):
    return libc.mount(source, target.encode(), kind, flags, data) == 0

NEWNS, NEWNET, NEWPID = 0x00020000, 0x40000000, 0x20000000
RDONLY, NOSUID, NODEV, REMOUNT, BIND, REC, PRIVATE = 1, 2, 4, 32, 4096, 16384, 1 << 18
flags = NEWNS | NEWPID | (NEWNET if config["network"] == "none" else 0)
if libc.unshare(flags) != 0:
    fail("unshare(CLONE_NEWNS | CLONE_NEWPID" + (" | CLONE_NEWNET)" if flags & NEWNET else ")"))
if not mount(None, "/", None, REC | PRIVATE, None):
    fail("making / a private mount")
points = [line.split()[4] for line in open("/proc/self/mountinfo")]
for point in points:
    if point == "/proc" or point.startswith(("/proc/", "/sys", "/dev")):
        continue
    if not mount(None, point, None, BIND | REMOUNT | RDONLY | NOSUID | NODEV, None) and point == "/":
        fail("remounting / read-only")
size = f"size={config['tmpfs_mb']}m,mode=1777".encode()
for point in ("/tmp", "/var/tmp", "/dev/shm"):
    if os.path.isdir(point) and not mount(b"tmpfs", point, b"tmpfs", NOSUID | NODEV, size):
        fail(f"mounting a tmpfs on {point}")
os.mkdir("/tmp/scratch")
NOBODY, READ_SEARCH = 65534, 2
os.chown("/tmp/scratch", NOBODY, NOBODY)
done_r, done_w = os.pipe()
child = os.fork()
if child == 0:
    os.close(done_r)
    os.close(report)
    report = done_w
    os.chdir("/tmp/scratch")
    for cap in range(64):
        if cap != READ_SEARCH and libc.prctl(24, cap, 0, 0, 0) != 0:
            break
    if libc.prctl(38, 1, 0, 0, 0) != 0 or libc.prctl(8, 1, 0, 0, 0) != 0:
        fail("prctl(PR_SET_NO_NEW_PRIVS, PR_SET_KEEPCAPS)")
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    header = (ctypes.c_uint32 * 2)(0x20080522, 0)
    kept = 1 << READ_SEARCH
    if libc.capset(header, (ctypes.c_uint32 * 6)(kept, kept, 0, 0, 0, 0)) != 0:
        fail("dropping capabilities (capset)")
    uid = os.getuid()
    tasks = 0
    for pid in os.listdir("/proc"):
        try:
            status = open(f"/proc/{pid}/status").read()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        if fields.get("Uid", "").split()[:1] == [str(uid)]:
            tasks += int(fields.get("Threads", "1"))
    mb = 1024 * 1024
    for kind, value in (
        (resource.RLIMIT_AS, config["memory_mb"] * mb),
        (resource.RLIMIT_CPU, config["cpu_s"]),
        (resource.RLIMIT_FSIZE, config["file_size_mb"] * mb),
        (resource.RLIMIT_NOFILE, config["open_files"]),
        (resource.RLIMIT_NPROC, tasks + config["processes"]),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(kind, (value, value))
    linecache.cache["<program>"] = (len(program), None, program.splitlines(True), "<program>")
    try:
        exec(compile(program, "<program>", "exec"), {"__name__": "__main__"})
        result = {"status": "passed", "message": ""}
    except AssertionError as exc:
        where = traceback.extract_tb(exc.__traceback__)[-1]
        result = {"status": "failed", "message": str(exc) or f"line {where.lineno}: {(where.line or '').strip()}"}
    except MemoryError:
        result = {"status": "error", "message": f"MemoryError: past the {config['memory_mb']} MB address-space limit"}
    except BaseException as exc:
        result = {"status": "error", "message": f"{type(exc).__name__}: {exc}"[:2000]}
    sys.stdout.flush()
    sys.stderr.flush()
    os.write(done_w, json.dumps(result).encode())
    os._exit(0)
os.close(done_w)
deadline = time.monotonic() + config["timeout_s"]
message = b""
while True:
    left = deadline - time.monotonic()
    ready = select.select([done_r], [], [], max(left, 0))[0] if left > 0 else []
    if not ready:
        os.kill(child, signal.SIGKILL)
        os.waitpid(child, 0)
        done({"status": "timeout", "message": f"ran past the {config['timeout_s']:g} s wall-clock limit"})
    chunk = os.read(done_r, 65536)
    if not chunk:
        break
    message += chunk
_, code = os.waitpid(child, 0)
if os.WIFSIGNALED(code):
    number = os.WTERMSIG(code)
    if number in (signal.SIGXCPU, signal.SIGKILL):
        done({"status": "timeout", "message": f"ran past the {config['cpu_s']} CPU-second limit"})
    done({"status": "error", "message": f"killed by signal {signal.Signals(number).name}"})
try:
    done(json.loads(message))
except ValueError:
    done({"status": "error", "message": "the program ended without a result (it exited early)"})
"""

# Seconds the parent waits beyond the program's wall-clock limit for the runner's own steps.
_GRACE_S = 5.0
# Characters of the program's output an outcome keeps (the end of it).
OUTPUT_CHARS = 4000


def execute(program: str, limits: Limits | None = None) -> Outcome:
    """Run ``program`` in the sandbox under ``limits`` and say how it went (see the module docstring)."""
    limits = limits or Limits()
    start = time.monotonic()
    read_end, write_end = os.pipe()
    config = {**asdict(limits), "report": write_end, "tmpfs_mb": max(limits.file_size_mb * 4, 64)}
    try:
        child = subprocess.Popen(
            [sys.executable, "-I", "-c", _RUNNER, json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env={},
            cwd="/",
            pass_fds=(write_end,),
            start_new_session=True,
        )
    finally:
        os.close(write_end)
    try:
        try:
            output, _ = child.communicate(program.encode(), timeout=limits.timeout_s + _GRACE_S)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            output, _ = child.communicate()
        result = _read(read_end)
    finally:
        os.close(read_end)
    text = output.decode(errors="replace")[-OUTPUT_CHARS:]
    duration = time.monotonic() - start
    if result is None:
        return Outcome("error", f"the sandbox runner ended without a result: {text.strip()[-300:]}", text, duration)
    if result.get("setup"):
        raise SandboxError(str(result["message"]))
    return Outcome(result["status"], str(result.get("message", "")), text, duration)


def _read(fd: int) -> dict[str, Any] | None:
    data = b""
    while select.select([fd], [], [], 0)[0]:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    try:
        parsed = json.loads(data)
    except ValueError:
        return None
    return parsed if isinstance(parsed, dict) and parsed.get("status") in STATUSES else None


@functools.cache
def _probe(network: Network) -> str | None:
    """Why the sandbox cannot run here (None when it can): a trivial program, once per process."""
    if not sys.platform.startswith("linux"):
        return f"it needs Linux namespaces, and this is {sys.platform}"
    try:
        outcome = execute("pass", Limits(timeout_s=20, network=network))
    except SandboxError as exc:
        hint = "" if os.geteuid() == 0 else " (run as root, or with CAP_SYS_ADMIN)"
        return f"{exc}{hint}"
    return None if outcome.status == "passed" else f"a trivial program did not pass: {outcome.message}"


def check(network: Network = "none") -> None:
    """``SandboxError`` naming why, unless untrusted code can run here with the isolation the module describes."""
    if network not in ("none", "allowed"):
        raise SandboxError(f"network must be 'none' or 'allowed', not {network!r}")
    reason = _probe(network)
    if reason is not None:
        what = "without network" if network == "none" else "in its own namespaces"
        raise SandboxError(f"cannot run generated code {what} on this machine: {reason}")
