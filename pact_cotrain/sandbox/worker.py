"""The sandbox worker: a long-lived process that executes dataset-supplied tool code.

Run as a script (``python -I -B worker.py CONFIG_JSON``) by :mod:`pact_cotrain.sandbox.pool`,
normally under bubblewrap. It imports nothing but the standard library, so importing this module
in the training process is harmless: only :func:`format_tool_output` is used there.

Protocol (both directions): a 4-byte big-endian length, then that many bytes of UTF-8 JSON.
The worker dups its original stdin/stdout to private descriptors before any tool code runs and
points fds 0/1/2 at /dev/null, and ``sys.stdout``/``sys.stderr`` at a bounded sink, so whatever
tool code prints (at import time or call time, through Python or ``os.write``) cannot reach the
protocol stream.

    parent -> worker  {"id": int, "codes": {name: source}, "tool": name, "arguments": {...}}
    worker -> parent  {"id": int, "ok": true, "output": str, "truncated": bool}
                    | {"id": int, "ok": false, "error": str, "fatal": bool}
    worker -> parent  (once, at start) {"ready": true, "pid": int, "uid": int, "seccomp": str, ...}

``fatal`` means the worker is about to exit (SystemExit, MemoryError, print flood, ...) and must
be replaced. Everything else (a hard crash, a signal, a timeout) is noticed by the parent.

Inside the worker, before the first request: resource limits (RLIMIT_AS, RLIMIT_CPU per call,
RLIMIT_NPROC 0, RLIMIT_FSIZE, RLIMIT_CORE 0, RLIMIT_NOFILE), a private temporary working
directory, and (on x86_64/aarch64 Linux) a seccomp filter that makes process creation, exec,
sockets, signals to other processes, namespace and mount syscalls, ptrace and similar fail with
EPERM. The seccomp filter is what blocks fork when the worker runs as uid 0, where the kernel does
not enforce RLIMIT_NPROC.
"""

from __future__ import annotations

import builtins
import ctypes
import hashlib
import io
import json
import os
import platform
import resource
import shutil
import signal
import struct
import sys
import tempfile
from collections import OrderedDict
from typing import Any

HEADER = struct.Struct(">I")
MAX_REQUEST_BYTES = 64 * 1024 * 1024

# Standard-library modules the dataset tools import most; loading them before the limits and the
# filter are in place makes the first call of every worker as fast as the others.
PRELOAD_MODULES = ("json", "re", "math", "datetime", "random", "string", "collections", "itertools",
                   "calendar", "decimal", "fractions", "statistics", "functools", "operator", "cmath",
                   "unicodedata", "csv", "copy", "time", "typing")


def format_tool_output(value: Any) -> str:
    """Render a tool's return value the way FTRL does: dicts and lists as JSON, anything else as str()."""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, default=str)
    if isinstance(value, str):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------
# Framing


def _read_exact(fd: int, n: int) -> bytes | None:
    chunks, remaining = [], n
    while remaining:
        chunk = os.read(fd, min(remaining, 1 << 20))
        if not chunk:
            return None
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)


def _read_frame(fd: int) -> dict | None:
    header = _read_exact(fd, HEADER.size)
    if header is None:
        return None
    (length,) = HEADER.unpack(header)
    if length > MAX_REQUEST_BYTES:
        raise ValueError(f"request frame of {length} bytes is too large")
    body = _read_exact(fd, length)
    if body is None:
        return None
    return json.loads(body.decode("utf-8"))


def _write_frame(fd: int, obj: dict) -> None:
    # ensure_ascii keeps lone surrogates from tool output encodable.
    body = json.dumps(obj, ensure_ascii=True).encode("ascii")
    data = HEADER.pack(len(body)) + body
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


# ---------------------------------------------------------------------------------------------
# Limits


class OutputLimitExceeded(BaseException):
    """Raised by the print sink; a BaseException so that `except Exception` in tool code misses it."""


class _PrintSink(io.TextIOBase):
    """Stands in for sys.stdout/sys.stderr: discards text, raises once a call printed too much."""

    def __init__(self, limit: int):
        super().__init__()
        self.limit = limit
        self.count = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.count += len(text)
        if self.count > self.limit:
            raise OutputLimitExceeded(f"output too large: the tool printed more than {self.limit} characters")
        return len(text)

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _set_limit(name: str, soft: int, hard: int | None = None) -> str | None:
    which = getattr(resource, name, None)
    if which is None:
        return f"{name}: not available"
    hard = soft if hard is None else hard
    try:
        cur_soft, cur_hard = resource.getrlimit(which)
        if cur_hard != resource.RLIM_INFINITY:
            hard = min(hard, cur_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))
        return None
    except (ValueError, OSError) as exc:
        return f"{name}: {exc}"


def apply_rlimits(config: dict) -> list[str]:
    """Set the worker's resource limits; return the ones that could not be set."""
    mb = 1024 * 1024
    problems = [
        _set_limit("RLIMIT_AS", int(config["memory_mb"]) * mb),
        _set_limit("RLIMIT_CPU", int(config["cpu_per_call_s"]), int(config["cpu_lifetime_s"])),
        _set_limit("RLIMIT_FSIZE", int(config["fsize_mb"]) * mb),
        _set_limit("RLIMIT_CORE", 0),
        _set_limit("RLIMIT_NOFILE", int(config.get("nofile", 64))),
        _set_limit("RLIMIT_NPROC", 0),  # not enforced for uid 0: the seccomp filter covers that case
    ]
    return [p for p in problems if p]


def _cpu_used() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _arm_cpu_limit(budget_s: int) -> None:
    """RLIMIT_CPU counts the whole life of the process: move the soft limit to now + budget."""
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(_cpu_used()) + budget_s + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ValueError, OSError):
        pass


# seccomp: a classic-BPF program returning EPERM for a deny-list of syscalls.
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_DENY = {
    # name: (x86_64, aarch64); None where the architecture has no such syscall
    "socket": (41, 198), "socketpair": (53, 199), "clone": (56, 220), "fork": (57, None),
    "vfork": (58, None), "execve": (59, 221), "ptrace": (101, 117), "pivot_root": (155, 41),
    "chroot": (161, 51), "mount": (165, 40), "umount2": (166, 39), "kexec_load": (246, 104),
    "unshare": (272, 97), "perf_event_open": (298, 241), "setns": (308, 268),
    "process_vm_readv": (310, 270), "process_vm_writev": (311, 271), "bpf": (321, 280),
    "execveat": (322, 281), "userfaultfd": (323, 282), "io_uring_setup": (425, 425), "clone3": (435, 435),
    # signals to other processes: without bubblewrap's pid namespace the parent would be in reach
    "kill": (62, 129), "tkill": (200, 130), "tgkill": (234, 131), "rt_sigqueueinfo": (129, 138),
    "rt_tgsigqueueinfo": (297, 240), "pidfd_send_signal": (424, 424), "pidfd_open": (434, 434),
}
_BPF_LD_W_ABS, _BPF_JEQ_K, _BPF_JGE_K, _BPF_RET_K = 0x20, 0x15, 0x35, 0x06
_SECCOMP_RET_ALLOW, _SECCOMP_RET_ERRNO, _SECCOMP_RET_KILL_PROCESS = 0x7FFF0000, 0x00050000, 0x80000000
_EPERM = 1


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_ushort), ("jt", ctypes.c_ubyte), ("jf", ctypes.c_ubyte), ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


def install_seccomp() -> str:
    """Install the deny-list filter; return 'on' or the reason it is off."""
    machine = platform.machine()
    if sys.platform != "linux" or machine not in _AUDIT_ARCH:
        return f"off (unsupported platform {sys.platform}/{machine})"
    column = 0 if machine == "x86_64" else 1
    denied = sorted({nrs[column] for nrs in _DENY.values() if nrs[column] is not None})
    prog: list[tuple[int, int, int, int]] = [
        (_BPF_LD_W_ABS, 0, 0, 4),  # seccomp_data.arch
        (_BPF_JEQ_K, 1, 0, _AUDIT_ARCH[machine]),
        (_BPF_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS),  # foreign ABI (e.g. int 0x80): kill
        (_BPF_LD_W_ABS, 0, 0, 0),  # seccomp_data.nr
    ]
    if machine == "x86_64":  # x32 syscalls carry bit 30
        prog += [(_BPF_JGE_K, 0, 1, 0x40000000), (_BPF_RET_K, 0, 0, _SECCOMP_RET_KILL_PROCESS)]
    for i, nr in enumerate(denied):
        # on match jump to the EPERM return that follows the remaining tests and the ALLOW
        prog.append((_BPF_JEQ_K, len(denied) - i, 0, nr))
    prog += [(_BPF_RET_K, 0, 0, _SECCOMP_RET_ALLOW), (_BPF_RET_K, 0, 0, _SECCOMP_RET_ERRNO | _EPERM)]
    filters = (_SockFilter * len(prog))(*[_SockFilter(*ins) for ins in prog])
    fprog = _SockFprog(len(prog), ctypes.cast(filters, ctypes.POINTER(_SockFilter)))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
        prctl.restype = ctypes.c_int
        prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
        if prctl(38, 1, None, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
            return f"off (PR_SET_NO_NEW_PRIVS failed: errno {ctypes.get_errno()})"
        if prctl(22, 2, ctypes.addressof(fprog), 0, 0) != 0:  # PR_SET_SECCOMP, SECCOMP_MODE_FILTER
            return f"off (PR_SET_SECCOMP failed: errno {ctypes.get_errno()})"
    except (OSError, AttributeError) as exc:
        return f"off ({exc})"
    return "on"


def _set_parent_death_signal() -> None:
    """Die with the parent even outside bubblewrap (PR_SET_PDEATHSIG)."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


# ---------------------------------------------------------------------------------------------
# Execution


class Worker:
    def __init__(self, config: dict, workdir: str):
        self.config = config
        self.workdir = workdir
        self.max_output_chars = int(config["max_output_chars"])
        self.cpu_per_call_s = int(config["cpu_per_call_s"])
        self.sink = _PrintSink(int(config["max_print_chars"]))
        self.code_cache: OrderedDict[str, Any] = OrderedDict()
        self.code_cache_size = int(config.get("code_cache_size", 256))

    def _compiled(self, tool: str, source: str):
        key = hashlib.sha256(source.encode("utf-8", "surrogatepass")).hexdigest()
        code = self.code_cache.get(key)
        if code is None:
            code = compile(source, f"<tool {tool}>", "exec")
            self.code_cache[key] = code
            if len(self.code_cache) > self.code_cache_size:
                self.code_cache.popitem(last=False)
        else:
            self.code_cache.move_to_end(key)
        return code

    def run(self, request: dict) -> dict:
        req_id = request.get("id")
        tool = request.get("tool")
        codes = request.get("codes")
        arguments = request.get("arguments")
        if not isinstance(tool, str) or not isinstance(codes, dict):
            return {"id": req_id, "ok": False, "error": "malformed request", "fatal": False}
        if not isinstance(arguments, dict):
            return {"id": req_id, "ok": False, "error": "arguments must be a JSON object", "fatal": False}
        source = codes.get(tool)
        if not isinstance(source, str):
            return {"id": req_id, "ok": False, "error": f"name {tool} is not defined", "fatal": False}
        self.sink.count = 0
        _arm_cpu_limit(self.cpu_per_call_s)
        try:
            code = self._compiled(tool, source)
            # A fresh namespace per call, as FTRL does: module-level state never leaks between calls.
            namespace: dict[str, Any] = {"__name__": "__sandbox__", "__builtins__": builtins}
            exec(code, namespace, namespace)
            fn = namespace.get(tool)
            if not callable(fn):
                return {"id": req_id, "ok": False, "error": f"name {tool} is not defined", "fatal": False}
            text = format_tool_output(fn(**arguments))
            if self.sink.count > self.sink.limit:  # the tool swallowed OutputLimitExceeded
                raise OutputLimitExceeded(f"output too large: the tool printed more than {self.sink.limit} characters")
        except (MemoryError, RecursionError) as exc:
            return {"id": req_id, "ok": False, "error": _reason(exc), "fatal": True}
        except Exception as exc:  # noqa: BLE001 - any tool error becomes an observation
            return {"id": req_id, "ok": False, "error": _reason(exc), "fatal": False}
        except SystemExit as exc:
            return {"id": req_id, "ok": False, "error": f"the tool called sys.exit({exc.code!r})", "fatal": True}
        except OutputLimitExceeded as exc:
            return {"id": req_id, "ok": False, "error": str(exc), "fatal": True}
        except BaseException as exc:  # KeyboardInterrupt, GeneratorExit, ...
            return {"id": req_id, "ok": False, "error": f"{type(exc).__name__}: {exc}", "fatal": True}
        finally:
            self._clean_workdir()
        truncated = len(text) > self.max_output_chars
        if truncated:
            text = (text[: self.max_output_chars]
                    + f"... [output truncated: {len(text)} characters, limit {self.max_output_chars}]")
        return {"id": req_id, "ok": True, "output": text, "truncated": truncated}

    def _clean_workdir(self) -> None:
        try:
            os.chdir(self.workdir)
            with os.scandir(self.workdir) as entries:
                leftovers = [e.path for e in entries]
        except OSError:
            return
        for path in leftovers:
            try:
                if os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    os.unlink(path)
            except OSError:
                pass


def _reason(exc: BaseException) -> str:
    text = str(exc)
    return text if text else type(exc).__name__


def main(argv: list[str]) -> int:
    config = json.loads(argv[1])
    proto_in, proto_out = os.dup(0), os.dup(1)  # non-inheritable duplicates
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
    sys.stdin = io.StringIO("")
    _set_parent_death_signal()
    if config.get("parent_pid") and os.getppid() != config["parent_pid"] and not config.get("bwrap"):
        return 0  # the parent is already gone
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an oversized file write fails with EFBIG instead
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # a vanished parent ends the worker

    workdir = config.get("workdir") or tempfile.mkdtemp(prefix="pact-tool-")
    os.makedirs(workdir, exist_ok=True)
    os.chdir(workdir)
    os.environ.update(HOME=workdir, TMPDIR=workdir, TMP=workdir, TEMP=workdir)
    tempfile.tempdir = workdir

    for name in PRELOAD_MODULES:
        try:
            __import__(name)
        except ImportError:
            pass
    problems = apply_rlimits(config)
    seccomp = install_seccomp() if config.get("seccomp", True) else "off (disabled)"
    worker = Worker(config, workdir)
    sys.stdout = sys.stderr = worker.sink
    sys.__stdout__ = sys.__stderr__ = worker.sink  # type: ignore[misc]

    _write_frame(proto_out, {"ready": True, "pid": os.getpid(), "uid": os.getuid(), "cwd": workdir,
                             "seccomp": seccomp, "rlimit_problems": problems})
    while True:
        try:
            request = _read_frame(proto_in)
        except (ValueError, UnicodeDecodeError):
            return 3
        if request is None:
            return 0
        reply = worker.run(request)
        try:
            _write_frame(proto_out, reply)
        except MemoryError:
            os._exit(4)
        if reply.get("fatal"):
            return 5


if __name__ == "__main__":
    try:
        code = main(sys.argv)
    except BaseException:  # noqa: BLE001 - never let a traceback reach the (closed) streams
        code = 6
    os._exit(code)
