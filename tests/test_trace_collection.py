"""`pact data traces collect`: expert traces from a teacher run through the environment, the best
trajectory per task at or above the reward kept, resumable, against a local model and against an
OpenAI-compatible server on the loopback address."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from pact_cotrain.data.trace_collection import (LocalTeacher, OpenAITeacher, Trajectory, best_kept,
                                                collect_traces, collection_report)
from pact_cotrain.data.trace_format import load_tasks, write_tasks
from pact_cotrain.envs.toolworld import ToolworldEnv, generate_tasks
from pact_cotrain.errors import UserError
from tests.openai_replay_server import ReplayServer


def make_env(task):
    return ToolworldEnv(max_steps=10)


@pytest.fixture()
def tasks():
    """Toolworld tasks whose traces the teacher knows; the rows handed to collection have none."""
    traced = generate_tasks(4, seed=3, split="train")
    return traced, [replace(t, trace=None) for t in traced]


def replay_traces(traced):
    return {next(m["content"] for m in t.messages if m["role"] == "user"): t.trace for t in traced}


def test_an_openai_teacher_traces_every_task_with_the_environment_s_own_tool_messages(tmp_path, tasks):
    traced, untraced = tasks
    out = str(tmp_path / "traces.jsonl")
    with ReplayServer(replay_traces(traced)) as server:
        report = collect_traces(untraced, make_env, OpenAITeacher(server.url, "teacher"), out, samples=1,
                                min_reward=1.0, progress=False)
    assert report["traced"] == 4 and report["yield"] == 1.0 and report["reward"]["mean"] == 1.0
    rows = load_tasks(out)  # what `pact data validate` accepts
    assert [r.id for r in rows] == [t.id for t in untraced]
    for row, expert in zip(rows, traced):
        calls = [(c["name"], c["arguments"]) for m in row.trace for c in m.get("tool_calls") or []]
        assert calls == [(c["name"], c["arguments"]) for m in expert.trace for c in m.get("tool_calls") or []]
        # the tool messages are what the environment returned, each linked to its call
        assert [m["content"] for m in row.trace if m["role"] == "tool"] == \
               [m["content"] for m in expert.trace if m["role"] == "tool"]
        ids = [c["id"] for m in row.trace for c in m.get("tool_calls") or []]
        assert [m["tool_call_id"] for m in row.trace if m["role"] == "tool"] == ids
        assert row.trace[-1]["role"] == "assistant" and not row.trace[-1].get("tool_calls")


def test_collection_resumes_where_it_stopped_and_never_writes_a_task_twice(tmp_path, tasks):
    traced, untraced = tasks
    out = str(tmp_path / "traces.jsonl")
    with ReplayServer(replay_traces(traced)) as server:
        collect_traces(untraced[:2], make_env, OpenAITeacher(server.url, "teacher"), out, samples=1, progress=False)
        first = server.chat_requests
        # a kill after a row was written but before its log line, with a half-written row after it
        with open(out, "a") as handle:
            handle.write(json.dumps(replace(traced[2], trace=traced[2].trace).to_record()) + "\n")
            handle.write('{"id": "cut-by-a-kill", "mess')
        report = collect_traces(untraced, make_env, OpenAITeacher(server.url, "teacher"), out, samples=1,
                                progress=False)
        asked_again = {next(m["content"] for m in r["messages"] if m["role"] == "user")
                       for r in server.requests[first:]}
    assert asked_again == {next(m["content"] for m in untraced[3].messages if m["role"] == "user")}
    assert sorted(r.id for r in load_tasks(out)) == sorted(t.id for t in untraced)
    assert report["traced"] == 3 and report["tried"] == 3  # the row written before the kill has no log line


def test_failed_requests_are_retried_by_the_client_then_counted_not_scored(tmp_path, tasks):
    traced, untraced = tasks
    out = str(tmp_path / "traces.jsonl")
    with ReplayServer(replay_traces(traced), fail_first=1) as server:  # one 500, retried by the client
        report = collect_traces(untraced[:1], make_env, OpenAITeacher(server.url, "teacher", max_retries=2),
                                out, samples=1, progress=False)
    assert report["traced"] == 1
    out2 = str(tmp_path / "failed.jsonl")
    with ReplayServer(replay_traces(traced), always_fail=True) as server:
        teacher = OpenAITeacher(server.url, "teacher", max_retries=1)
        report = collect_traces(untraced[:2], make_env, teacher, out2, samples=2, progress=False)
        assert server.chat_requests == 2 * 2 * 2  # 2 tasks x 2 samples x (1 try + 1 retry)
    assert report["failed"] == 2 and report["traced"] == 0 and report["failed_samples"] == 4
    assert "reward" not in report  # a failed sample has no reward: it is not scored as 0
    with ReplayServer(replay_traces(traced)) as server:  # a rerun tries the failed tasks again
        report = collect_traces(untraced[:2], make_env, OpenAITeacher(server.url, "teacher"), out2, samples=1,
                                progress=False)
    assert report["traced"] == 2


def test_an_unreachable_teacher_or_an_unserved_model_is_one_line_before_any_task(tasks):
    with pytest.raises(UserError, match=r"--teacher-url http://127\.0\.0\.1:9/v1: cannot be reached"):
        OpenAITeacher("http://127.0.0.1:9/v1", "teacher", max_retries=0)
    with ReplayServer({}) as server, pytest.raises(UserError, match="'other' is not served .* serves teacher"):
        OpenAITeacher(server.url, "other")


def test_only_a_clean_trajectory_at_or_above_the_reward_is_kept():
    low, high, dirty = Trajectory(reward=0.5), Trajectory(reward=0.9), Trajectory(reward=1.0)
    dirty.reject("turn 1: bad call")
    assert best_kept([low, dirty, high], 0.5) is high
    assert best_kept([low, dirty], 0.6) is None


def test_a_teacher_call_the_schema_rejects_makes_the_trajectory_unclean(tmp_path, tasks):
    traced, untraced = tasks
    broken = [replace(t, trace=[dict(m) for m in t.trace]) for t in traced]
    first_call = next(m for m in broken[0].trace if m.get("tool_calls"))
    first_call["tool_calls"] = [dict(first_call["tool_calls"][0], arguments={"no_such_argument": 1})]
    out = str(tmp_path / "traces.jsonl")
    with ReplayServer(replay_traces(broken)) as server:
        report = collect_traces(untraced[:1], make_env, OpenAITeacher(server.url, "teacher"), out, samples=1,
                                min_reward=0.0, progress=False)
    assert report["traced"] == 0 and report["below_min_reward"] == 1
    assert any("turn 1" in p for p in report["problems"])


def test_a_local_teacher_writes_rows_that_validate(tmp_path, tasks, model, tokenizer):
    _, untraced = tasks
    out = str(tmp_path / "traces.jsonl")
    teacher = LocalTeacher(model, tokenizer, max_turns=2, max_new_tokens_per_turn=8, max_completion_tokens=64)
    report = collect_traces(untraced[:2], make_env, teacher, out, samples=2, min_reward=0.0, progress=False)
    assert report["tried"] == 2 and report["samples"] == 4
    assert report["traced"] + report["below_min_reward"] == 2
    if report["traced"]:
        assert all(r.trace for r in load_tasks(out))
    log = collection_report(out + ".collect.jsonl", 0.0)
    assert log["tried"] == 2


def test_the_cli_collects_from_an_openai_compatible_endpoint(tmp_path, tasks, capsys):
    from pact_cotrain.cli import main

    traced, untraced = tasks
    source = tmp_path / "tasks.jsonl"
    write_tasks(source, untraced)
    out = tmp_path / "traces.jsonl"
    with ReplayServer(replay_traces(traced)) as server:
        rc = main(["data", "traces", "collect", "--tasks", str(source), "--teacher-url", server.url,
                   "--teacher-model", "teacher", "--samples", "1", "--min-reward", "1", "--out", str(out)])
    assert rc == 0
    assert len(load_tasks(out)) == 4
    assert "traced 4 of 4 tasks tried (yield 100.0%" in capsys.readouterr().err


def test_collect_through_your_own_environment_from_the_command_line(tmp_path, capsys, monkeypatch):
    """The example agent's rows (TRL's `prompt` column, no trace) traced through its environment class."""
    from pathlib import Path

    from pact_cotrain.cli import main

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root)  # `examples.room_booking.agent:RoomBookingEnv` imports from the current directory
    rows = [json.loads(line) for line in open(root / "examples" / "room_booking" / "data" / "test.jsonl")][:3]
    source = tmp_path / "rows.jsonl"
    source.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "trace"}) + "\n" for r in rows))
    traces = {r["prompt"][0]["content"]: r["trace"] for r in rows}
    out = tmp_path / "traced.jsonl"
    with ReplayServer(traces) as server:
        rc = main(["data", "traces", "collect", "--tasks", str(source), "--env", "examples.room_booking.agent:RoomBookingEnv",
                   "--teacher-url", server.url, "--teacher-model", "teacher", "--samples", "1", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    written = load_tasks(out)
    assert [t.id for t in written] == [r["id"] for r in rows]
    assert all(t.metadata["calendar_seed"] == r["calendar_seed"] for t, r in zip(written, rows))
    assert [m["content"] for m in written[0].trace if m["role"] == "tool"] == \
           [m["content"] for m in rows[0]["trace"] if m["role"] == "tool"]
