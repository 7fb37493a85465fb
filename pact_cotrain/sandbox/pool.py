"""A pool of reused sandbox worker processes that execute dataset tool code.

    with ToolSandbox(n_workers=2, timeout_s=10.0) as sandbox:
        result = sandbox.call(codes, "tool_name", {"arg": 1})
        result.output   # the observation the agent sees

Dataset code never runs in the calling process. Every failure (tool exception, timeout, memory
exhaustion, crash, exit, print flood, protocol damage) comes back as a ``SandboxResult`` with
``ok=False`` and the observation ``an error occurred when calling NAME: REASON``; ``call`` never
raises. A worker that timed out, crashed or reported a fatal error is killed and replaced in the
background by a long-lived spawner thread (bubblewrap's --die-with-parent and PR_SET_PDEATHSIG
follow the *thread* that started a process, so workers are never started from caller threads).
"""

from __future__ import annotations

import ast
import itertools
import json
import logging
import os
import queue
import select
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass

from .limits import Isolation, SandboxLimits, choose_isolation, python_command
from .worker import HEADER

logger = logging.getLogger(__name__)

MAX_REPLY_BYTES = 16 * 1024 * 1024


@dataclass
class SandboxResult:
    output: str                # what the agent observes (the tool output or the error observation)
    ok: bool                   # the tool returned normally
    error: str | None          # the REASON of a failed call
    elapsed_s: float           # wall clock of the call as the caller saw it
    truncated: bool = False    # the output was cut to max_output_chars


def error_observation(tool: str, reason: str) -> str:
    return f"an error occurred when calling {tool}: {reason}"


def codes_from_functions(functions: list[str]) -> dict[str, str]:
    """ToolHop's `functions` (a list of sources, one def each) as {function name: source}.

    The name is read with ast (nothing is executed); a source that does not parse is skipped,
    so calling its tool yields a 'not defined' observation.
    """
    codes: dict[str, str] = {}
    for source in functions:
        try:
            tree = ast.parse(source)
        except (SyntaxError, ValueError):
            continue
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                codes.setdefault(node.name, source)
                break
    return codes


class _WorkerFailure(Exception):
    pass


class _Worker:
    """One worker process and the parent's ends of its pipes."""

    def __init__(self, proc: subprocess.Popen, workdir: str | None):
        self.proc = proc
        self.workdir = workdir  # host directory to remove afterwards (rlimits mode only)
        self.wfd = proc.stdin.fileno()
        self.rfd = proc.stdout.fileno()
        self.calls = 0
        self.info: dict = {}
        self._kill_lock = threading.Lock()
        self._killed = False

    def read_frame(self, deadline: float) -> dict:
        header = self._read_exact(HEADER.size, deadline)
        (length,) = HEADER.unpack(header)
        if length > MAX_REPLY_BYTES:
            raise _WorkerFailure(f"sandbox protocol error: reply of {length} bytes")
        body = self._read_exact(length, deadline)
        try:
            reply = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _WorkerFailure("sandbox protocol error: undecodable reply") from None
        if not isinstance(reply, dict):
            raise _WorkerFailure("sandbox protocol error: reply is not an object")
        return reply

    def _read_exact(self, n: int, deadline: float) -> bytes:
        chunks, remaining = [], n
        while remaining:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            ready, _, _ = select.select([self.rfd], [], [], left)
            if not ready:
                raise TimeoutError
            chunk = os.read(self.rfd, min(remaining, 1 << 20))
            if not chunk:
                raise _WorkerFailure(self.death_reason())
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)

    def send(self, payload: bytes) -> None:
        view = memoryview(payload)
        try:
            while view:
                view = view[os.write(self.wfd, view):]
        except OSError:  # EPIPE: the worker is gone
            raise _WorkerFailure(self.death_reason()) from None

    def death_reason(self) -> str:
        try:
            code = self.proc.wait(timeout=1.0)
        except subprocess.TimeoutExpired:
            return "the sandboxed process closed its output and stopped responding"
        if code < 0:
            return f"the sandboxed process was killed by {_signal_name(-code)}"
        if code > 128:  # bubblewrap reports a signal death of its child as 128 + signal
            return f"the sandboxed process died (exit status {code}, {_signal_name(code - 128)})"
        return f"the sandboxed process exited with status {code}"

    def kill(self) -> None:
        with self._kill_lock:
            if self._killed:
                return
            self._killed = True
        if self.proc.returncode is None:  # never signal a reaped (possibly reused) pid
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except OSError:
                try:
                    self.proc.kill()
                except OSError:
                    pass
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            logger.error("sandbox worker %d did not die after SIGKILL", self.proc.pid)
        if self.workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


class ToolSandbox:
    """Execute dataset tool code in a pool of reused, isolated worker processes.

    use_bwrap: "auto" (bubblewrap when usable, else a loud warning and rlimits+seccomp only),
    True (require bubblewrap; RuntimeError at construction otherwise), False (rlimits+seccomp).
    limits: a full SandboxLimits; when given, timeout_s/memory_mb/max_output_chars are ignored.
    Thread-safe: concurrent calls each get their own worker (callers wait when all are busy).
    """

    def __init__(self, n_workers: int = 2, timeout_s: float = 10.0, memory_mb: int = 1024,
                 max_output_chars: int = 8192, use_bwrap: bool | str = "auto",
                 limits: SandboxLimits | None = None):
        if n_workers < 1:
            raise ValueError(f"n_workers must be >= 1, got {n_workers}")
        if limits is None:
            limits = SandboxLimits(timeout_s=timeout_s, memory_mb=memory_mb, max_output_chars=max_output_chars)
        self.limits = limits
        self.n_workers = n_workers
        self.isolation: Isolation = choose_isolation(use_bwrap, limits)
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._closed = False
        self._start()

    # -- lifecycle ---------------------------------------------------------------------------

    def _start(self) -> None:
        self._pid = os.getpid()
        self._idle: queue.Queue[_Worker] = queue.Queue()
        self._spawn_requests: queue.Queue[int | None] = queue.Queue()
        self._all: set[_Worker] = set()
        self._last_spawn_error: str | None = None
        self._spawner = threading.Thread(target=self._spawn_loop, name="tool-sandbox-spawner", daemon=True)
        self._spawner.start()
        for _ in range(self.n_workers):
            self._spawn_requests.put(1)

    def _check_fork(self) -> None:
        """After os.fork() in the caller the inherited pool belongs to the parent: start afresh."""
        if os.getpid() != self._pid:
            # Only the forking thread exists in the child; the inherited lock may be held forever.
            self._lock = threading.Lock()
            self._start()

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            workers = list(self._all)
            self._all.clear()
        self._spawn_requests.put(None)
        for worker in workers:
            worker.kill()
        self._spawner.join(timeout=10)

    def __enter__(self) -> "ToolSandbox":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and os.getpid() == self._pid:
                self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

    def wait_ready(self, timeout_s: float | None = None) -> bool:
        """Block until all n_workers are started (or the timeout passes)."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.limits.spawn_timeout_s)
        while time.monotonic() < deadline:
            if self._idle.qsize() >= self.n_workers:
                return True
            time.sleep(0.01)
        return False

    # -- spawning (only ever on the spawner thread) ------------------------------------------

    def _spawn_loop(self) -> None:
        failures = 0
        while True:
            request = self._spawn_requests.get()
            if request is None or self._closed:
                return
            try:
                worker = self._spawn()
            except Exception as exc:  # noqa: BLE001 - keep the pool alive, retry with backoff
                failures += 1
                self._last_spawn_error = str(exc)
                logger.error("sandbox worker failed to start (%d in a row): %s", failures, exc)
                time.sleep(min(5.0, 0.1 * 2 ** min(failures, 6)))
                self._spawn_requests.put(1)
                continue
            failures = 0
            with self._lock:
                if self._closed:
                    worker.kill()
                    return
                self._all.add(worker)
            self._idle.put(worker)

    def _spawn(self) -> _Worker:
        config = self.limits.worker_config()
        workdir = None
        if self.isolation.kind == "bwrap":
            config.update(bwrap=True, workdir="/tmp/work")
        else:
            workdir = tempfile.mkdtemp(prefix="pact-sandbox-")
            config.update(bwrap=False, workdir=workdir, parent_pid=os.getpid())
        cmd = [*self.isolation.prefix, *python_command(json.dumps(config))]
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                bufsize=0, close_fds=True, start_new_session=True, cwd=workdir or "/")
        worker = _Worker(proc, workdir)
        try:
            info = worker.read_frame(time.monotonic() + self.limits.spawn_timeout_s)
            if not info.get("ready"):
                raise _WorkerFailure(f"unexpected first frame {info!r}")
        except (TimeoutError, _WorkerFailure) as exc:
            try:
                stderr = proc.stderr.read1(4096).decode(errors="replace") if proc.poll() is not None else ""
            except (OSError, ValueError):
                stderr = ""
            worker.kill()
            raise RuntimeError(f"worker did not start ({exc or 'timeout'}): {stderr.strip()}") from None
        proc.stderr.close()  # the worker sends its own stderr to /dev/null; nothing more will come
        worker.info = info
        if info.get("rlimit_problems"):
            logger.warning("sandbox worker limits not fully applied: %s", info["rlimit_problems"])
        if info.get("seccomp") != "on":
            logger.warning("sandbox worker seccomp filter %s", info.get("seccomp"))
        return worker

    def _retire(self, worker: _Worker) -> None:
        with self._lock:
            self._all.discard(worker)
            closed = self._closed
        worker.kill()
        if not closed:
            self._spawn_requests.put(1)

    # -- calls ---------------------------------------------------------------------------------

    def _acquire(self, deadline: float) -> _Worker | None:
        """An idle worker; one that died while idle (OOM killer, ...) is replaced, not used."""
        while True:
            try:
                worker = self._idle.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return None
            if worker.proc.poll() is None:
                return worker
            logger.warning("sandbox worker %d died while idle (%s)", worker.proc.pid, worker.death_reason())
            self._retire(worker)

    def call(self, codes: dict[str, str] | list[str], tool: str, arguments: dict) -> SandboxResult:
        """Run `tool(**arguments)` from `codes` ({name: source}, or ToolHop's list of sources)."""
        start = time.monotonic()

        def fail(reason: str) -> SandboxResult:
            return SandboxResult(error_observation(tool, reason), False, reason, time.monotonic() - start)

        if self._closed:
            return fail("the sandbox is closed")
        self._check_fork()
        if isinstance(codes, list):
            codes = codes_from_functions(codes)
        if not isinstance(codes, dict):
            return fail("no tool code given")
        source = codes.get(tool)
        if not isinstance(source, str):
            return fail(f"name {tool} is not defined")
        if not isinstance(arguments, dict):
            return fail("arguments must be a JSON object")
        req_id = next(self._ids)
        try:
            body = json.dumps({"id": req_id, "codes": {tool: source}, "tool": tool, "arguments": arguments},
                              ensure_ascii=True).encode("ascii")
        except (TypeError, ValueError) as exc:
            return fail(f"arguments are not JSON-serializable ({exc})")
        payload = HEADER.pack(len(body)) + body

        worker = self._acquire(time.monotonic() + self.limits.spawn_timeout_s + self.limits.timeout_s)
        if worker is None:
            detail = f" (last start error: {self._last_spawn_error})" if self._last_spawn_error else ""
            return fail(f"no sandbox worker became available{detail}")
        deadline = time.monotonic() + self.limits.timeout_s
        try:
            worker.send(payload)
            reply = worker.read_frame(deadline)
            if reply.get("id") != req_id:
                raise _WorkerFailure("sandbox protocol error: reply to another request")
        except TimeoutError:
            self._retire(worker)
            return fail(f"timeout: the call did not finish within {self.limits.timeout_s:g} s")
        except _WorkerFailure as exc:
            self._retire(worker)
            return fail(str(exc))
        except (OSError, ValueError) as exc:  # pipes closed under us (close() from another thread)
            self._retire(worker)
            return fail(f"the sandboxed process was lost ({exc})")
        except BaseException:  # e.g. KeyboardInterrupt in the caller: do not leak a half-used worker
            self._retire(worker)
            raise

        worker.calls += 1
        if reply.get("fatal") or worker.calls >= self.limits.max_calls_per_worker:
            self._retire(worker)
        elif self._closed:
            worker.kill()
        else:
            self._idle.put(worker)
        elapsed = time.monotonic() - start
        if reply.get("ok"):
            output = reply.get("output")
            if not isinstance(output, str):
                return fail("sandbox protocol error: reply without output")
            return SandboxResult(output, True, None, elapsed, bool(reply.get("truncated")))
        reason = str(reply.get("error") or "unknown error")
        return SandboxResult(error_observation(tool, reason), False, reason, elapsed)

    def __repr__(self) -> str:
        return (f"ToolSandbox(n_workers={self.n_workers}, isolation={self.isolation.kind!r} "
                f"[{self.isolation.detail}], timeout_s={self.limits.timeout_s:g})")
