"""MCP servers as tool sources, through the official `mcp` SDK client.

    mcp_servers = [{"name": "calc", "command": "python", "args": ["srv.py"], "env": {...}},   # stdio
                   {"name": "web", "url": "http://127.0.0.1:8000/mcp"}]                     # streamable HTTP
    source = MCPToolSource(mcp_servers)
    source.schemas                          # OpenAI-style schemas of every server's tools (list_tools)
    source.call("add", {"a": 1}, 30.0)      # (text, is_error, timed_out)

A server starts once per process (the same spec twice is the same server) and is reused by every
episode. All sessions live on one background asyncio loop thread; a call from an episode's thread is
submitted to it, so calls of concurrent episodes are in flight together and do not wait on each other.

Failures: a server that cannot start, or that dies mid-run, raises `MCPServerError`, one line naming
it (`MCP server 'calc' (stdio: python srv.py) died: ...`): the rollout stops rather than score an
episode as if its call had worked. When a call fails without a result, or runs past its timeout, the
server is pinged: no answer means it died; an answer means the failure was the call's own (a protocol
error for bad arguments becomes the tool message; a slow call becomes a timeout message). A result
with `isError` is an ordinary tool message. Servers are shut down at exit.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import shlex
import tempfile
import threading
from typing import Any

from pact_cotrain.tools.functions import UserToolError, timeout_reason
from pact_cotrain.tools.loop import BackgroundLoop

STDIO_KEYS = {"name", "command", "args", "env", "cwd"}
HTTP_KEYS = {"name", "url"}
START_TIMEOUT_S = 60.0  # a server has this long to start and list its tools
PING_TIMEOUT_S = 5.0  # a server that does not answer a ping within this is taken for dead


class MCPServerError(UserToolError):
    """An MCP server that cannot start or has died; the message is one line naming it."""


def _check_spec(spec: Any, i: int) -> dict:
    where = f"mcp_servers[{i}]"
    if not isinstance(spec, dict):
        raise UserToolError(f"{where}: must be a mapping with `name` and `command` (stdio) or `url` (streamable HTTP)")
    name = spec.get("name")
    if not isinstance(name, str) or not name.strip():
        raise UserToolError(f"{where}: `name` must be a non-empty string")
    if ("command" in spec) == ("url" in spec):
        raise UserToolError(f"{where} ({name!r}): give exactly one of `command` (stdio) or `url` (streamable HTTP)")
    known = STDIO_KEYS if "command" in spec else HTTP_KEYS
    unknown = sorted(set(spec) - known)
    if unknown:
        raise UserToolError(f"{where} ({name!r}): unknown key {unknown[0]!r} (known: {', '.join(sorted(known))})")
    if "url" in spec:
        url = spec["url"]
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise UserToolError(f"{where} ({name!r}): `url` must be an http:// or https:// address, got {url!r}")
        return {"name": name, "url": url}
    command, args, env, cwd = spec["command"], spec.get("args", []), spec.get("env") or {}, spec.get("cwd")
    if not isinstance(command, str) or not command:
        raise UserToolError(f"{where} ({name!r}): `command` must be a non-empty string")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise UserToolError(f"{where} ({name!r}): `args` must be a list of strings")
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise UserToolError(f"{where} ({name!r}): `env` must map strings to strings")
    if cwd is not None and not isinstance(cwd, str):
        raise UserToolError(f"{where} ({name!r}): `cwd` must be a string")
    return {"name": name, "command": command, "args": list(args), "env": dict(env), "cwd": cwd}


def result_text(result) -> str:
    """A CallToolResult as the tool message: its text blocks joined; other blocks (images, resources)
    and a structured-only result as JSON."""
    parts = []
    for block in result.content or []:
        text = getattr(block, "text", None)
        parts.append(text if isinstance(text, str) else json.dumps(block.model_dump(mode="json", exclude_none=True)))
    if not parts and result.structured_content is not None:
        parts.append(json.dumps(result.structured_content, ensure_ascii=False))
    return "\n".join(parts)


def _one_line(exc: BaseException) -> str:
    if isinstance(exc, BaseExceptionGroup):  # anyio task groups wrap the real error
        return "; ".join(_one_line(e) for e in exc.exceptions)
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _Server:
    """One running server: its session lives in a task on the MCP loop until `close()`."""

    def __init__(self, spec: dict, loop: BackgroundLoop):
        self.spec = spec
        self.name = spec["name"]
        if "url" in spec:
            self.label = f"streamable HTTP: {spec['url']}"
        else:
            self.label = "stdio: " + " ".join(shlex.quote(p) for p in [spec["command"], *spec["args"]])
        self.loop = loop
        self.session = None
        self.tools: list = []
        self.dead: str | None = None  # why the server is gone, once it is
        self._stop: asyncio.Event | None = None
        self._task: asyncio.Future | None = None
        self._errlog = None

    def describe(self) -> str:
        return f"MCP server {self.name!r} ({self.label})"

    def start(self) -> None:
        started = self.loop.submit(self._start())
        try:
            started.result(START_TIMEOUT_S + 5)
        except Exception as exc:  # noqa: BLE001 - one line naming the server
            tail = self._stderr_tail()
            self.close()
            raise MCPServerError(f"{self.describe()} failed to start: {_one_line(exc)}{tail}") from None

    async def _start(self) -> None:
        ready = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.ensure_future(self._serve(ready))
        await asyncio.wait_for(asyncio.shield(ready), START_TIMEOUT_S)

    def _transport(self):
        if "url" in self.spec:
            from mcp.client.streamable_http import streamable_http_client

            return streamable_http_client(self.spec["url"])
        from mcp.client.stdio import StdioServerParameters, stdio_client

        self._errlog = tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace", prefix="pact-mcp-")
        params = StdioServerParameters(command=self.spec["command"], args=self.spec["args"], env=self.spec["env"],
                                       cwd=self.spec["cwd"])
        return stdio_client(params, errlog=self._errlog)

    async def _serve(self, ready: asyncio.Future) -> None:
        from mcp import ClientSession

        try:
            async with self._transport() as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    tools, cursor = [], None
                    while True:
                        from mcp import types

                        page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                        tools += page.tools
                        cursor = page.next_cursor
                        if not cursor:
                            break
                    self.session, self.tools = session, tools
                    ready.set_result(None)
                    await self._stop.wait()
        except BaseException as exc:  # noqa: BLE001 - kept as the reason the server is gone
            self.dead = self.dead or _one_line(exc)
            if not ready.done():
                ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(_one_line(exc)))
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.dead = self.dead or "the connection ended"
            self.session = None

    def _stderr_tail(self) -> str:
        if self._errlog is None:
            return ""
        try:
            self._errlog.flush()
            self._errlog.seek(0)
            lines = [line.strip() for line in self._errlog.read()[-4000:].splitlines() if line.strip()]
        except (OSError, ValueError):
            return ""
        return f" (its stderr ends: {lines[-1][:300]})" if lines else ""

    def died(self, why: str) -> MCPServerError:
        self.dead = self.dead or why
        return MCPServerError(f"{self.describe()} died: {why}{self._stderr_tail()}")

    # -- calls (from any thread)

    def call(self, tool: str, arguments: dict, timeout_s: float) -> tuple[str, bool, bool]:
        """(text, is_error, timed_out) of one call; MCPServerError when the server is gone."""
        if self.dead is not None or self.session is None:
            raise self.died(self.dead or "it is not running")
        future = self.loop.submit(self._call(tool, arguments))
        try:
            result = future.result(timeout_s)
            return result_text(result), bool(result.is_error), False
        except TimeoutError:
            if not future.done():
                future.cancel()
                self._check_alive()
                return timeout_reason(timeout_s), True, True
            failure: BaseException = TimeoutError("the call raised TimeoutError")
        except Exception as exc:  # noqa: BLE001 - a protocol error or a lost connection
            failure = exc
        if self.dead is not None:
            raise self.died(self.dead)
        self._check_alive(failure)
        return _one_line(failure), True, False  # the server answers: the failure was this call's own

    async def _call(self, tool: str, arguments: dict):
        session = self.session
        if session is None:
            raise RuntimeError(self.dead or "the session is closed")
        return await session.call_tool(tool, arguments)

    def _check_alive(self, failure: BaseException | None = None) -> None:
        """Raise MCPServerError unless the server answers a ping."""
        session = self.session
        why = None
        if session is None:
            why = self.dead or "the session is closed"
        else:
            try:
                self.loop.submit(asyncio.wait_for(session.send_ping(), PING_TIMEOUT_S)).result(PING_TIMEOUT_S + 1)
            except Exception as exc:  # noqa: BLE001
                why = _one_line(failure) if failure is not None else f"no answer to a ping ({_one_line(exc)})"
        if why is not None:
            raise self.died(why)

    def close(self) -> None:
        """Stop the session (which stops a stdio server's process); waits a few seconds at most."""
        if self._stop is not None and self._task is not None and not self._task.done():
            async def stop():
                self._stop.set()
                try:
                    await asyncio.wait_for(asyncio.shield(self._task), 10)
                except BaseException:  # noqa: BLE001 - shutting down
                    self._task.cancel()

            try:
                self.loop.submit(stop()).result(15)
            except Exception:  # noqa: BLE001 - the loop may already be gone at exit
                pass
        self.dead = self.dead or "closed"
        if self._errlog is not None:
            try:
                self._errlog.close()
            except OSError:
                pass


class _Registry:
    """The process's servers, by spec: each starts once and serves every factory and episode."""

    def __init__(self):
        self.loop = BackgroundLoop("pact-mcp")
        self.lock = threading.Lock()
        self.servers: dict[str, _Server] = {}

    def get(self, spec: dict) -> _Server:
        key = json.dumps(spec, sort_keys=True)
        with self.lock:
            server = self.servers.get(key)
            if server is None or server.dead is not None:
                server = _Server(spec, self.loop)
                server.start()
                self.servers[key] = server
            return server

    def close(self, server: _Server) -> None:
        with self.lock:
            for key, known in list(self.servers.items()):
                if known is server:
                    del self.servers[key]
        server.close()

    def shutdown(self) -> None:
        with self.lock:
            servers, self.servers = list(self.servers.values()), {}
        for server in servers:
            server.close()
        self.loop.stop()


REGISTRY = _Registry()
atexit.register(REGISTRY.shutdown)


def tool_schema(tool) -> dict:
    """An MCP Tool as the OpenAI-style schema our template and parser use."""
    parameters = tool.input_schema if isinstance(tool.input_schema, dict) else {"type": "object", "properties": {}}
    return {"type": "function", "function": {"name": tool.name, "description": tool.description or "",
                                             "parameters": parameters}}


class MCPToolSource:
    """The tools of some MCP servers, started (or reused) at construction."""

    def __init__(self, specs):
        if not isinstance(specs, (list, tuple)):
            raise UserToolError(f"mcp_servers must be a list of server specs, got {type(specs).__name__}")
        specs = [_check_spec(s, i) for i, s in enumerate(specs)]
        names = [s["name"] for s in specs]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise UserToolError(f"mcp_servers: two servers are named {duplicate!r}")
        self.servers = [REGISTRY.get(spec) for spec in specs]
        self.schemas: list[dict] = []
        self._owner: dict[str, _Server] = {}
        for server in self.servers:
            for tool in server.tools:
                if tool.name in self._owner:
                    raise UserToolError(f"mcp_servers: tool {tool.name!r} is offered by both "
                                        f"{self._owner[tool.name].name!r} and {server.name!r}")
                self._owner[tool.name] = server
                self.schemas.append(tool_schema(tool))

    def offers(self, name: str) -> bool:
        return name in self._owner

    def server_of(self, name: str) -> str:
        return self._owner[name].name

    def call(self, name: str, arguments: dict, timeout_s: float) -> tuple[str, bool, bool]:
        """(the result's text, whether it is an error, whether it timed out); MCPServerError when the
        server is gone."""
        return self._owner[name].call(name, arguments, timeout_s)

    def close(self) -> None:
        """Stop these servers now (they are otherwise stopped at exit); a later source starts them afresh."""
        for server in self.servers:
            REGISTRY.close(server)
