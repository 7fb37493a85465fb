"""The example's tools served over MCP (stdio by default, or streamable HTTP with --http PORT).

    python examples/room_booking/mcp_server.py --calendar-seed 7
    pact tools list --config examples/room_booking/mcp.yaml

The server holds one calendar (chosen by --calendar-seed) for as long as it runs, shared by every
client: it is for agents whose tools live behind a server and for trying the tools by hand. Training
uses `RoomBookingEnv`, which gives each episode its own calendar.
"""

import argparse
import os
import sys

from mcp.server import MCPServer

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent import RoomBookingEnv  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--calendar-seed", type=int, default=0)
parser.add_argument("--http", type=int, default=None, help="serve streamable HTTP on 127.0.0.1:PORT")
args = parser.parse_args()

env = RoomBookingEnv()
env.reset(calendar_seed=args.calendar_seed, people=1, day="Monday", hour=9, title="")
server = MCPServer("room-booking")
for tool in (env.find_rooms, env.is_free, env.book):  # the same functions, schemas from the same docstrings
    server.tool()(tool)

if args.http is None:
    server.run("stdio")
else:
    server.run("streamable-http", host="127.0.0.1", port=args.http)
