"""Sandbox limits and the bubblewrap command line (parent side).

The worker applies the resource limits to itself (see ``worker.py``); this module only decides
their values and how the worker process is started: under bubblewrap when it is installed and
usable, else (with a loud warning, logged once per process) as a plain child process with the
rlimits and the seccomp filter only.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

WORKER_PATH = str(Path(__file__).resolve().with_name("worker.py"))
SANDBOX_UID = 65534  # "nobody" inside the user namespace
SANDBOX_WORKDIR = "/tmp/work"

# The command the project asks for; every variant below starts with it.
BWRAP_BASE = ("--ro-bind", "/", "/", "--tmpfs", "/tmp", "--unshare-net", "--dev", "/dev",
              "--proc", "/proc", "--die-with-parent")


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0          # per-call wall clock, enforced by the parent (FTRL used 10 s)
    memory_mb: int = 1024            # RLIMIT_AS of the worker
    max_output_chars: int = 8192     # longer tool results are truncated (with a marker)
    max_print_chars: int = 1_000_000  # printing more than this in one call is a violation
    fsize_mb: int = 16               # RLIMIT_FSIZE: largest file the tool may write
    nofile: int = 64                 # RLIMIT_NOFILE
    tmpfs_mb: int = 64               # size of the private /tmp under bubblewrap
    cpu_lifetime_s: int = 3600       # hard RLIMIT_CPU over a worker's whole life
    max_calls_per_worker: int = 2000  # a worker is recycled after this many calls
    spawn_timeout_s: float = 30.0    # how long a new worker may take to report ready

    def __post_init__(self) -> None:
        for name in ("timeout_s", "memory_mb", "max_output_chars", "max_print_chars", "fsize_mb",
                     "nofile", "tmpfs_mb", "cpu_lifetime_s", "max_calls_per_worker", "spawn_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SandboxLimits.{name} must be positive, got {getattr(self, name)!r}")

    @property
    def cpu_per_call_s(self) -> int:
        """Soft RLIMIT_CPU armed before each call: a backstop behind the parent's wall-clock timeout."""
        return int(math.ceil(self.timeout_s)) + 1

    def worker_config(self) -> dict:
        return {
            "memory_mb": self.memory_mb,
            "max_output_chars": self.max_output_chars,
            "max_print_chars": self.max_print_chars,
            "fsize_mb": self.fsize_mb,
            "nofile": self.nofile,
            "cpu_per_call_s": self.cpu_per_call_s,
            "cpu_lifetime_s": max(self.cpu_lifetime_s, self.cpu_per_call_s + 1),
        }


def python_command(config_json: str) -> list[str]:
    """The worker's own command: isolated mode (no script dir, no user site, no PYTHON* env)."""
    return [sys.executable, "-I", "-B", WORKER_PATH, config_json]


def _paths_hidden_by_tmpfs() -> list[str]:
    """Interpreter or package directories under /tmp would vanish behind --tmpfs /tmp: bind them back."""
    roots = {os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, os.path.dirname(sys.executable),
                                            os.path.dirname(os.path.realpath(sys.executable)),
                                            str(Path(WORKER_PATH).parents[2]))}
    return sorted(p for p in roots if p == "/tmp" or p.startswith("/tmp/"))


def bwrap_variants(bwrap: str, limits: SandboxLimits) -> list[tuple[str, list[str]]]:
    """Candidate bwrap prefixes, strongest first."""
    rebinds: list[str] = []
    for path in _paths_hidden_by_tmpfs():
        rebinds += ["--ro-bind", path, path]
    workdir = ["--dir", SANDBOX_WORKDIR, "--chdir", SANDBOX_WORKDIR]
    hardened = [bwrap, "--ro-bind", "/", "/", "--size", str(limits.tmpfs_mb * 1024 * 1024), "--tmpfs", "/tmp",
                *BWRAP_BASE[5:], *rebinds, *workdir,
                "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try", "--hostname", "sandbox",
                "--unshare-user", "--uid", str(SANDBOX_UID), "--gid", str(SANDBOX_UID),
                "--new-session", "--cap-drop", "ALL", "--"]
    plain = [bwrap, *BWRAP_BASE, *rebinds, *workdir, "--unshare-pid", "--new-session", "--cap-drop", "ALL", "--"]
    variants = [("hardened", hardened), ("basic", plain)]
    if os.geteuid() != 0:  # as root, the bare command would keep every capability inside
        variants.append(("minimal", [bwrap, *BWRAP_BASE, *rebinds, *workdir, "--"]))
    return variants


@dataclass(frozen=True)
class Isolation:
    kind: str                 # "bwrap" or "rlimits"
    prefix: tuple[str, ...]   # command prefix before the python command (empty for "rlimits")
    detail: str               # the variant used, or why bubblewrap is not used


_probe_lock = threading.Lock()
_probe_cache: dict[tuple, Isolation] = {}
_fallback_warned = False


def probe_bwrap(limits: SandboxLimits) -> Isolation | None:
    """Find a bubblewrap variant that can start the worker's interpreter; None when none can."""
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        return None
    key = (bwrap, sys.executable, limits.tmpfs_mb)
    with _probe_lock:
        if key in _probe_cache:
            return _probe_cache[key]
        result: Isolation | None = None
        failures = []
        for name, prefix in bwrap_variants(bwrap, limits):
            cmd = [*prefix, sys.executable, "-I", "-B", "-c", "import os; assert os.path.exists(%r)" % WORKER_PATH]
            try:
                proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
            except (OSError, subprocess.TimeoutExpired) as exc:
                failures.append(f"{name}: {exc}")
                continue
            if proc.returncode == 0:
                result = Isolation("bwrap", tuple(prefix), name)
                break
            failures.append(f"{name}: exit {proc.returncode}: {proc.stderr.decode(errors='replace').strip()[:300]}")
        if result is None:
            logger.debug("bubblewrap probe failed: %s", "; ".join(failures))
            result = Isolation("rlimits", (), "bubblewrap is installed but unusable here: " + "; ".join(failures))
        _probe_cache[key] = result
        return result


def choose_isolation(use_bwrap: bool | str, limits: SandboxLimits) -> Isolation:
    """use_bwrap: "auto" (bwrap when usable, else warn and fall back), True (require it), False."""
    if use_bwrap not in ("auto", True, False):
        raise ValueError(f"use_bwrap must be 'auto', True or False, got {use_bwrap!r}")
    if use_bwrap is False:
        iso = Isolation("rlimits", (), "bubblewrap disabled by use_bwrap=False")
    else:
        probed = probe_bwrap(limits)
        if probed is None:
            iso = Isolation("rlimits", (), "bubblewrap (bwrap) is not installed")
        else:
            iso = probed
        if iso.kind != "bwrap" and use_bwrap is True:
            raise RuntimeError(f"use_bwrap=True but {iso.detail}")
    if iso.kind != "bwrap":
        warn_fallback_once(iso.detail)
    return iso


def warn_fallback_once(reason: str) -> None:
    global _fallback_warned
    with _probe_lock:
        if _fallback_warned:
            return
        _fallback_warned = True
    logger.warning(
        "!!! SANDBOX DEGRADED: %s. Dataset tool code will run in plain child processes with resource "
        "limits and a seccomp filter only: NO filesystem isolation (it can read, and write, whatever "
        "uid %d can) and no network namespace. Install bubblewrap (apt-get install bubblewrap) and allow "
        "user namespaces to restore isolation. !!!", reason, os.geteuid())
