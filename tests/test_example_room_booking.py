"""The example agent (examples/room_booking): its expert traces replay to reward 1 through the same
adapter training uses, its rows validate, and its MCP server offers the same tools."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import render_assistant_text
from pact_cotrain.envs.user_env import user_env_factory

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "room_booking"
sys.path.insert(0, str(EXAMPLE))
from agent import RoomBookingEnv, make_tasks  # noqa: E402


def as_task(row: dict) -> Task:
    rest = {k: v for k, v in row.items() if k not in ("id", "prompt", "trace")}
    return Task(row["id"], row["prompt"], [], row["trace"], rest)


def replay(factory, task: Task, trace: list[dict]):
    env = factory(task)
    env.reset(task)
    outputs = []
    for message in trace:
        if message["role"] == "assistant":
            result = env.step(render_assistant_text(message))
            outputs += [m["content"] for m in result.tool_messages]
    return env, outputs


def test_every_expert_trace_replays_to_reward_1_with_the_tool_outputs_it_records():
    factory = user_env_factory(environment_factory=RoomBookingEnv)
    for split in ("train", "test"):
        rows = [json.loads(line) for line in open(EXAMPLE / "data" / f"{split}.jsonl")]
        assert rows == make_tasks(len(rows), {"train": 0, "test": 1}[split], f"rooms_{split}")  # regenerable
        for row in rows:
            task = as_task(row)
            factory.check_task(task)
            env, outputs = replay(factory, task, row["trace"])
            assert env.metrics()["reward"] == 1.0, row["id"]
            assert outputs == [m["content"] for m in row["trace"] if m["role"] == "tool"]


def test_the_reward_is_per_episode_state():
    factory = user_env_factory(environment_factory=RoomBookingEnv)
    row = make_tasks(1, 5, "t")[0]
    task = as_task(row)
    last_book = [m for m in row["trace"] if m.get("tool_calls") and m["tool_calls"][0]["name"] == "book"][0]
    env, _ = replay(factory, task, [last_book, last_book])  # booking twice: the second fails, one booking
    assert env.metrics()["reward"] == 1.0
    fresh, _ = replay(factory, task, [])  # a new episode starts from the row's calendar: nothing booked
    assert fresh.metrics()["reward"] == 0.0


def test_the_mcp_server_offers_the_same_tools(tmp_path):
    factory = user_env_factory(mcp_servers=[{"name": "room-booking", "command": sys.executable,
                                             "args": [str(EXAMPLE / "mcp_server.py"), "--calendar-seed", "7"]}])
    env_tools = user_env_factory(environment_factory=RoomBookingEnv).tool_schemas(None)
    try:
        served = factory.tool_schemas(None)
        def signature(schemas):  # name -> {argument: type}; descriptions are each SDK's own rendering
            return {s["function"]["name"]: {k: v["type"] for k, v in s["function"]["parameters"]["properties"].items()}
                    for s in schemas}

        assert signature(served) == signature(env_tools)
        rooms = json.loads(factory.call_tool(None, "find_rooms", {"min_capacity": 1}))
        assert len(rooms) == 6
    finally:
        factory.close()
