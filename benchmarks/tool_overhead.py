"""Latency of one tool call of a user's tools: in process, and through a stdio MCP server.

    python benchmarks/tool_overhead.py [--calls 200] [--episodes 8]

Each of `--episodes` episodes (a `UserEnv` from `user_env_factory`, reset as in a rollout) calls the
tool `add(a, b)` from its own thread, all at once, `--calls` times; one call is timed around
`UserEnv.run_call`, the path every parsed call of an episode takes (dispatch, execution, rendering
of the tool message). The MCP server is tests/mcp_calc_server.py (the official SDK's MCPServer) over
stdio. For reference it also times one episode calling alone, the SDK's own round trip
(`ClientSession.call_tool` awaited on the MCP loop, without our thread hop), and a sync server tool:
MCPServer runs a sync tool on a worker thread (anyio.to_thread), an `async def` tool on its loop.

With one server process every call waits for the others' server CPU, so on few cores the median with many
episodes is bounded below by (episodes x server CPU per call); the SDK-floor line prints the official
SDK's own round trip at the same concurrency beside ours.

Prints median and p95 latency in ms per setting (with the calls per second of the whole run where
episodes call from threads), and the CPU time per call of both processes; the last line
is `mcp_call_ms_median: X`, the median with `--episodes` episodes calling the async tool at once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pact_cotrain.data.trace_format import Task  # noqa: E402
from pact_cotrain.envs.user_env import user_env_factory  # noqa: E402

SERVER = str(ROOT / "tests" / "mcp_calc_server.py")


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: the first integer
        b: the second integer
    """
    return a + b


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values_s: list[float]) -> tuple[float, float]:
    ms = [v * 1000 for v in values_s]
    return statistics.median(ms), percentile(ms, 0.95)


def time_calls(factory, episodes: int, calls: int, tool: str = "add", warmup: int = 5) -> tuple[list[float], float]:
    """(per-call latencies, wall time of the run) in s, of `episodes` episodes calling `tool` at once, each
    from its own thread."""
    task = Task("bench", [{"role": "user", "content": "Add."}], [])
    envs = [factory(task) for _ in range(episodes)]
    for env in envs:
        env.reset(task)
        for _ in range(warmup):
            env.run_call(tool, {"a": 1, "b": 2})
    times: list[list[float]] = [[] for _ in envs]
    go = threading.Barrier(len(envs))

    def run(i: int) -> None:
        env, out = envs[i], times[i]
        go.wait()
        for j in range(calls):
            start = time.perf_counter()
            result = env.run_call(tool, {"a": j, "b": 1})
            out.append(time.perf_counter() - start)
            assert result.ok and result.output == str(j + 1), result

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(envs))]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    for env in envs:
        env.close()
    return [v for per in times for v in per], wall


def time_sdk_direct(factory, calls: int, tool: str, concurrent: int = 1) -> tuple[list[float], None]:
    """The SDK's own round trip: `concurrent` tasks on the MCP loop each awaiting call_tool back to back
    (no thread hop, none of our code on the path)."""
    server = factory.mcp.servers[0]

    async def one(out: list[float]) -> None:
        for j in range(calls):
            start = time.perf_counter()
            await server.session.call_tool(tool, {"a": j, "b": 1})
            out.append(time.perf_counter() - start)

    async def run() -> list[float]:
        outs = [[] for _ in range(concurrent)]
        await asyncio.gather(*(one(out) for out in outs))
        return [v for out in outs for v in out]

    return server.loop.submit(run()).result(), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=200, help="calls per episode")
    parser.add_argument("--episodes", type=int, default=8, help="episodes calling at once")
    args = parser.parse_args()

    in_process = user_env_factory(tools=[add])
    mcp = user_env_factory(mcp_servers=[{"name": "calc", "command": sys.executable, "args": [SERVER]}])
    server_pid = int(mcp.call_tool(None, "whoami", {}))
    n = args.episodes
    rows = [
        ("in process, 1 episode", time_calls(in_process, 1, args.calls)),
        (f"in process, {n} episodes at once", time_calls(in_process, n, args.calls)),
        ("MCP stdio, async tool, SDK round trip alone (no thread hop)", time_sdk_direct(mcp, args.calls, "add_async")),
        (f"MCP stdio, async tool, SDK round trip, {n} tasks at once on the loop (no thread hop)",
         time_sdk_direct(mcp, args.calls, "add_async", n)),
        ("MCP stdio, async tool, 1 episode", time_calls(mcp, 1, args.calls, "add_async")),
        (f"MCP stdio, sync tool (server runs it on a worker thread), {n} episodes at once",
         time_calls(mcp, n, args.calls, "add")),
    ]
    cpu = CpuMeter(server_pid)
    rows.append((f"MCP stdio, async tool, {n} episodes at once", time_calls(mcp, n, args.calls, "add_async")))
    client_cpu_ms, server_cpu_ms = (v / (n * (args.calls + 5)) * 1000 for v in cpu.read())
    width = max(len(label) for label, _ in rows)
    print(f"one tool call, {args.calls} calls per episode, ms (taken on {os.cpu_count()} cores that may be shared "
          f"with other work; load average {os.getloadavg()[0]:.1f})")
    for label, (values, wall) in rows:
        median, p95 = summary(values)
        rate = f"  {len(values) / wall:7.0f} calls/s" if wall else ""
        print(f"  {label:<{width}}  median {median:8.3f}  p95 {p95:8.3f}  (n={len(values)}){rate}")
    print(f"CPU per call in the last setting: this process {client_cpu_ms:.3f} ms, the MCP server {server_cpu_ms:.3f} ms "
          "(the server is one process: with every episode waiting on it, a call waits for the others' CPU)")
    in_med, mcp_med = summary(rows[1][1][0])[0], summary(rows[-1][1][0])[0]
    print(f"MCP / in process (medians, {n} episodes at once): {mcp_med / in_med:.1f}x")
    # The floor any client built on the official SDK meets here: its own round trip, n calls in flight on its
    # loop, none of our code. What our path adds is the difference.
    sdk_med = summary(rows[3][1][0])[0]
    print(f"SDK floor, {n} calls in flight (no code of ours): median {sdk_med:.3f} ms; our path adds "
          f"{mcp_med - sdk_med:+.3f} ms (ours / SDK: {mcp_med / sdk_med:.2f}x)")
    mcp.close()
    print(f"mcp_call_ms_median: {mcp_med:.3f}")


class CpuMeter:
    """CPU seconds used since construction by this process and by another one (from /proc)."""

    def __init__(self, pid: int):
        self.pid = pid
        self.start = (self._self(), self._other())

    def _self(self) -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def _other(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def read(self) -> tuple[float, float]:
        return self._self() - self.start[0], self._other() - self.start[1]

if __name__ == "__main__":
    main()
