"""A small MCP server for the tests and the tool-overhead benchmark, written with the official SDK.

    python tests/mcp_calc_server.py                   # stdio
    python tests/mcp_calc_server.py http PORT         # streamable HTTP on 127.0.0.1:PORT/mcp
"""

import asyncio
import json
import os
import sys
import time

from mcp.server.mcpserver import MCPServer

server = MCPServer("calc", log_level="WARNING")


@server.tool()
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


@server.tool()
def whoami() -> str:
    """The server's process id."""
    return str(os.getpid())


@server.tool()
async def slow(seconds: float) -> str:
    """Sleep, then answer with when the call started and ended (wall clock)."""
    start = time.time()
    await asyncio.sleep(seconds)
    return json.dumps({"start": start, "end": time.time()})


@server.tool()
def fail(reason: str) -> str:
    """Always raise."""
    raise ValueError(reason)


@server.tool()
def die() -> str:
    """End the server process at once (a crash mid-run)."""
    os._exit(3)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
