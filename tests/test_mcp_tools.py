"""MCP servers as tool sources: real server processes written with the `mcp` SDK (tests/mcp_calc_server.py)."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.user_env import UserToolError, user_env_factory
from pact_cotrain.tools.mcp import MCPServerError

SERVER = str(Path(__file__).with_name("mcp_calc_server.py"))
STDIO = {"name": "calc", "command": sys.executable, "args": [SERVER]}


def call(tool_name, **arguments):
    return "<tool_call>\n" + json.dumps({"name": tool_name, "arguments": arguments}) + "\n</tool_call>"


def task(task_id="t0"):
    return Task(task_id, [{"role": "user", "content": "Compute."}], [])


def double(x: int) -> int:
    """Double a number.

    Args:
        x: the number
    """
    return 2 * x


@pytest.fixture(scope="module")
def calc():
    return user_env_factory(tools=[double], mcp_servers=[STDIO], tool_timeout_s=30)


def test_stdio_server_tools_join_the_episode(calc):
    names = [s["function"]["name"] for s in calc.tool_schemas()]
    assert names == ["double", "add", "whoami", "slow", "fail", "die"]
    add = calc.tool_schemas()[1]["function"]
    assert add["description"] == "Add two integers." and add["parameters"]["required"] == ["a", "b"]
    env = calc(task())
    env.reset(task())
    result = env.step(call("add", a=2, b=3) + call("double", x=4) + call("fail", reason="nope"))
    contents = [m["content"] for m in result.tool_messages]
    assert contents[:2] == ["5", "8"]
    assert contents[2].startswith("an error occurred when calling fail: ")  # isError: just a tool message
    metrics = env.metrics()
    assert metrics["n_calls"] == 3 and metrics["tool_errors"] == 1 and not result.done


def test_one_server_process_serves_every_factory_and_episode(calc):
    pid = calc.call_tool(None, "whoami", {})
    again = user_env_factory(mcp_servers=[dict(STDIO)])  # the same spec: the same server
    assert again.call_tool(task("x"), "whoami", {}) == pid != str(os.getpid())


def test_concurrent_episodes_do_not_wait_on_each_other(calc):
    envs = [calc(task(f"e{i}")) for i in range(6)]
    for env in envs:
        env.reset(task())
    results = [None] * len(envs)

    def run(i):
        results[i] = json.loads(envs[i].step(call("slow", seconds=1.0)).tool_messages[0]["content"])

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(envs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # Every call started (in the server) before any of them ended: they were all in flight together.
    assert max(r["start"] for r in results) < min(r["end"] for r in results)


def test_killed_server_is_one_line_naming_it():
    victim = dict(STDIO, env={"CALC_ROLE": "victim"})  # its own process, not the shared one
    factory = user_env_factory(mcp_servers=[victim])
    env = factory(task())
    env.reset(task())
    pid = int(factory.call_tool(None, "whoami", {}))
    os.kill(pid, signal.SIGKILL)
    with pytest.raises(MCPServerError) as err:
        env.step(call("add", a=1, b=2))
    message = str(err.value)
    assert message.startswith("MCP server 'calc' (stdio: ") and " died: " in message and "\n" not in message
    with pytest.raises(MCPServerError, match="died"):  # every later call too: never answered as if it worked
        factory.call_tool(None, "add", {"a": 1, "b": 2})


def test_server_that_dies_during_a_call():
    factory = user_env_factory(mcp_servers=[dict(STDIO, env={"CALC_ROLE": "crash"})])
    with pytest.raises(MCPServerError, match=r"MCP server 'calc' .* died: "):
        factory.call_tool(None, "die", {})


def test_server_that_cannot_start_and_bad_specs():
    broken = {"name": "broken", "command": sys.executable, "args": ["-c", "import sys; sys.exit('no tools here')"]}
    with pytest.raises(MCPServerError, match=r"^MCP server 'broken' \(stdio: .*\) failed to start: .*no tools here"):
        user_env_factory(mcp_servers=[broken])
    with pytest.raises(UserToolError, match=r"mcp_servers\[0\] \('x'\): unknown key 'cmd'"):
        user_env_factory(mcp_servers=[{"name": "x", "command": "python", "cmd": "y"}])
    with pytest.raises(UserToolError, match=r"exactly one of `command` \(stdio\) or `url`"):
        user_env_factory(mcp_servers=[{"name": "x"}])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def http_server():
    port = free_port()
    proc = subprocess.Popen([sys.executable, SERVER, "http", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert proc.poll() is None, "the HTTP MCP server exited"
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


def test_streamable_http_server_on_loopback(http_server):
    factory = user_env_factory(mcp_servers=[{"name": "web", "url": http_server}])
    assert [s["function"]["name"] for s in factory.tool_schemas()][:2] == ["add", "whoami"]
    env = factory(task())
    env.reset(task())
    assert [m["content"] for m in env.step(call("add", a=20, b=22)).tool_messages] == ["42"]
    factory.close()  # before the fixture stops the server
