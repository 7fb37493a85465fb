"""ToolWorld: deterministic generation, disjoint splits, JSONL round trip, expert-trace replay."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import subprocess
import sys
from collections import Counter

import pytest

from pact_cotrain.data.trace_format import load_tasks, write_tasks
from pact_cotrain.envs.parsing import format_tool_call, render_assistant_text
from pact_cotrain.envs.toolworld import (
    RELATION_BY_TOOL,
    SCENARIOS,
    ToolworldEnv,
    generate_tasks,
    make_env,
    split_of,
)
from pact_cotrain.rewards.ftrl import matches

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


@pytest.fixture(scope="module")
def train_tasks():
    return generate_tasks(400, seed=0, split="train")


def _digest(tasks) -> str:
    return hashlib.sha256(json.dumps([t.to_record() for t in tasks], sort_keys=True).encode()).hexdigest()


def _names(tasks) -> set[str]:
    """Every entity name in the tasks: table keys and string values of table outputs."""
    names = set()
    for task in tasks:
        for entries in task.metadata["toolworld_tables"].values():
            for key, output in entries.items():
                names.add(key)
                names.update(v for v in json.loads(output).values() if isinstance(v, str) and not _DATE.match(v))
    return names


def _replay(task, env):
    """Feed the expert trace's assistant turns to env; return the (env tool messages, trace tool messages) per turn."""
    env.reset(task)
    pairs, results, trace, i = [], [], task.trace, 0
    while i < len(trace):
        result = env.step(render_assistant_text(trace[i]))
        i += 1
        expected = []
        while i < len(trace) and trace[i]["role"] == "tool":
            expected.append(trace[i])
            i += 1
        pairs.append((result.tool_messages, expected))
        results.append(result)
    return pairs, results


# ------------------------------------------------------------------- generation


def test_deterministic_given_seed(train_tasks):
    assert _digest(generate_tasks(400, seed=0)) == _digest(train_tasks)
    assert _digest(generate_tasks(40, seed=1)) != _digest(train_tasks[:40])
    assert _digest(generate_tasks(40, seed=0)) == _digest(train_tasks[:40])  # a longer run extends a shorter one


def test_deterministic_across_processes():
    code = ("import hashlib, json; from pact_cotrain.envs.toolworld import generate_tasks; "
            "print(hashlib.sha256(json.dumps([t.to_record() for t in generate_tasks(40, seed=3, split='test')], "
            "sort_keys=True).encode()).hexdigest())")
    env = dict(os.environ, PYTHONHASHSEED="12345")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(generate_tasks(40, seed=3, split="test"))


def test_train_and_test_entity_pools_are_disjoint(train_tasks):
    train = _names(train_tasks) | _names(generate_tasks(200, seed=7, split="train"))
    test = _names(generate_tasks(200, seed=0, split="test")) | _names(generate_tasks(200, seed=7, split="test"))
    assert len(train) > 3000 and len(test) > 1500
    assert not {n.casefold() for n in train} & {n.casefold() for n in test}
    assert {split_of(n) for n in train} == {"train"} and {split_of(n) for n in test} == {"test"}


def test_scenario_coverage_and_shapes(train_tasks):
    counts = Counter(t.metadata["scenario"] for t in train_tasks)
    assert counts == {s: 100 for s in SCENARIOS}
    for task in train_tasks:
        scenario = task.metadata["scenario"]
        call_turns = [m for m in task.trace if m["role"] == "assistant" and m.get("tool_calls")]
        width = len(call_turns[0]["tool_calls"])
        assert width == (1 if scenario in ("single_hop", "multi_hop") else width) and 1 <= width <= 3
        assert len(call_turns) == {"single_hop": 1, "parallel_single_hop": 1}.get(scenario, len(call_turns))
        if scenario in ("multi_hop", "parallel_multi_hop"):
            assert 2 <= len(call_turns) <= 3
        if scenario.startswith("parallel"):
            assert width >= 2
        needed = set(task.metadata["unsolved_set"])
        assert needed <= set(task.tool_names) and len(task.tool_names) >= len(needed) + 2  # distractors offered
        assert len(task.tool_names) == len(set(task.tool_names))
        assert set(task.metadata["toolworld_tables"]) == set(task.tool_names)
        assert task.messages[0]["content"].startswith("Please call given tools to answer the question.")
        assert task.id.startswith("toolworld_train_0_")
        assert task.metadata["benchmark"] == "toolworld"
        assert sum(map(len, task.metadata["unsolved_set"].values())) == sum(len(m["tool_calls"]) for m in call_turns)
    assert len({json.dumps(t.tools) for t in train_tasks}) > 300  # tool sets vary


def test_knobs():
    for task in generate_tasks(12, seed=2, scenarios=("multi_hop", "parallel_multi_hop"), hops=3, branches=3, n_distractors=0):
        call_turns = [m for m in task.trace if m.get("tool_calls")]
        assert len(call_turns) == 3
        assert len(call_turns[0]["tool_calls"]) == (3 if task.metadata["scenario"] == "parallel_multi_hop" else 1)
        assert set(task.tool_names) == set(task.metadata["unsolved_set"])  # no distractors
    for task in generate_tasks(8, seed=2, scenarios=("single_hop",), n_distractors=5):
        assert len(task.tool_names) == 6
        # at least one distractor is a confusable relative of the needed tool when one exists
        (needed,) = task.metadata["unsolved_set"]
        family = RELATION_BY_TOOL[needed].family
        relatives = [r for r in RELATION_BY_TOOL.values() if r.family == family and r.tool != needed]
        if relatives:
            assert any(RELATION_BY_TOOL[t].family == family for t in task.tool_names if t != needed)
    with pytest.raises(ValueError):
        generate_tasks(1, split="dev")
    with pytest.raises(ValueError):
        generate_tasks(1, scenarios=("nonsense",))


def test_expected_strings_match_only_their_gold_outputs(train_tasks):
    for task in train_tasks:
        gold = [(c["name"], c["arguments"]) for m in task.trace for c in m.get("tool_calls", [])]
        tables = task.metadata["toolworld_tables"]
        for tool, expected in task.metadata["unsolved_set"].items():
            gold_outputs = [tables[tool][next(iter(a.values()))] for n, a in gold if n == tool]
            assert [sum(matches(e, o) for e in expected) for o in gold_outputs] == [1] * len(expected)


def test_jsonl_round_trip(tmp_path, train_tasks):
    path = tmp_path / "toolworld.jsonl"
    write_tasks(path, train_tasks[:60])
    loaded = load_tasks(path)
    assert [t.to_record() for t in loaded] == [t.to_record() for t in train_tasks[:60]]
    pairs, _ = _replay(loaded[3], ToolworldEnv())  # the loaded copy still runs
    assert all(a == b for a, b in pairs)


# ------------------------------------------------------------------- environment


def test_expert_traces_replay_perfectly(train_tasks):
    tasks = train_tasks + generate_tasks(100, seed=5, split="test")
    for task in tasks:
        env = make_env(task)
        pairs, results = _replay(task, env)
        assert all(env_msgs == trace_msgs for env_msgs, trace_msgs in pairs), task.id
        assert [r.done for r in results] == [False] * (len(results) - 1) + [True]
        assert all(r.reward > 0 for r in results) and results[-1].reward == 1.0
        m = env.metrics()
        assert (m["solve_r"], m["solve_p"], m["solve_f1"], m["answer_correct"]) == (1.0, 1.0, 1.0, 1.0), task.id
        assert m["format_errors"] == 0 and m["reward"] == 1.0 and m["n_steps"] == len(results)


def test_step_mean_reward_mode(train_tasks):
    task = next(t for t in train_tasks if t.metadata["scenario"] == "parallel_single_hop")
    env = ToolworldEnv(reward="step_mean")
    _, results = _replay(task, env)
    assert env.metrics()["reward"] == pytest.approx(sum(r.reward for r in results) / len(results))
    with pytest.raises(ValueError):
        ToolworldEnv(reward="accuracy")


def _first_call(task):
    return next(m for m in task.trace if m.get("tool_calls"))["tool_calls"][0]


def test_env_behaviours(train_tasks):
    task = next(t for t in train_tasks if t.metadata["scenario"] == "multi_hop")
    call = _first_call(task)
    (param, value), = call["arguments"].items()
    env = ToolworldEnv(max_steps=6)
    messages, tools = env.reset(task)
    assert messages == task.messages and tools == task.tools

    # Unknown key: an API-style error output, no solve; lookups forgive case and spacing.
    r = env.step(format_tool_call(call["name"], {param: "Nobody Here"}))
    assert json.loads(r.tool_messages[0]["content"]) == {"error": f"no {param} named Nobody Here"}
    assert (r.info["n_calls"], r.info["n_solved"], r.reward, r.done) == (1, 0, 0.0, False)
    r = env.step(format_tool_call(call["name"], {param: "  " + value.upper() + " "}))
    assert r.info["n_solved"] == 1 and r.reward == 1.0

    # A schema-invalid call and an unparseable block in one turn: answered in order, one call counted.
    r = env.step(format_tool_call("get_nothing", {}) + "\n<tool_call>{broken\n")
    assert [m["content"].split(":")[0] for m in r.tool_messages] == [
        "an error occurred when calling get_nothing", "an error occurred when parsing the tool call"]
    assert (r.info["n_calls"], r.info["n_format_errors"], r.reward) == (1, 2, 0.0)

    r = env.step("<tool_call>{still broken</tool_call>")  # malformed only: -0.3, the episode goes on
    assert (r.reward, r.done, r.info["n_calls"]) == (-0.3, False, 0)
    r = env.step("<think>" + format_tool_call(call["name"], call["arguments"]) + "</think>")  # calls inside thinking are not made
    assert (r.reward, r.done, r.tool_messages) == (-0.5, True, [])
    m = env.metrics()
    assert (m["n_calls"], m["format_errors"], m["n_steps"]) == (3.0, 3.0, 5.0)
    assert m["solve_r"] == pytest.approx(1 / sum(map(len, task.metadata["unsolved_set"].values())))
    assert m["solve_p"] == pytest.approx(1 / 3)
    assert m["answer_correct"] == 0.0


def test_max_steps_ends_episode(train_tasks):
    task = train_tasks[0]
    env = ToolworldEnv(max_steps=3)
    env.reset(task)
    call = _first_call(task)
    dones = [env.step(format_tool_call(call["name"], call["arguments"])).done for _ in range(3)]
    assert dones == [False, False, True]
    assert env.metrics()["solve_p"] == pytest.approx(1 / 3)  # repeated calls solve once


def test_answer_only_counts_in_final_visible_content(train_tasks):
    task = next(t for t in train_tasks if t.metadata["scenario"] == "single_hop")
    env = ToolworldEnv()
    env.reset(task)
    env.step(f"<think>Maybe it is {task.metadata['answer']}.</think>I cannot tell.")
    assert env.metrics()["answer_correct"] == 0.0
    env.reset(task)
    r = env.step(f"The answer is {task.metadata['answer']}.")
    assert env.metrics()["answer_correct"] == 1.0 and r.reward == pytest.approx(1 / 2)  # 1/(1+remaining), remaining=1


def test_env_never_raises_on_garbage(train_tasks):
    fresh = ToolworldEnv()  # even before reset: every call is an error, nothing crashes
    assert fresh.step(format_tool_call("get_ceo", {"company": "X"})).tool_messages[0]["content"].startswith("an error")
    assert fresh.metrics()["reward"] == 0.0
    rng = random.Random(7)
    pieces = ["<tool_call>", "</tool_call>", "<think>", "</think>", '{"name": "', '", "arguments": {', "}", '"', ":",
              "\x00", "\ud800", "é", " ", "\n"]
    for task in train_tasks[:40]:
        env = ToolworldEnv()
        env.reset(task)
        call = _first_call(task)
        valid = format_tool_call(call["name"], call["arguments"])
        for _ in range(12):
            text = "".join(rng.choice(pieces + task.tool_names + [valid, chr(rng.randint(0, 0x10FFFF))])
                           for _ in range(rng.randint(0, 20)))
            r = env.step(text)
            assert isinstance(r.reward, float) and -0.5 <= r.reward < 2.0
            assert all(isinstance(m["content"], str) and m["role"] == "tool" for m in r.tool_messages)
        env.step(None)  # type: ignore[arg-type]
        env.step(12345)  # type: ignore[arg-type]
        m = env.metrics()
        assert m["n_steps"] == 14.0 and 0.0 <= m["solve_r"] <= 1.0 and 0.0 <= m["solve_p"] <= 1.0 and 0.0 <= m["solve_f1"] <= 1.0


def test_ambiguity_check_rejects_clashing_tables():
    from pact_cotrain.envs.toolworld import _unambiguous

    unsolved, gold = {"get_population": ["4821"]}, {"get_population": {"Varnhold": "4821"}}
    ok = {"get_population": {"Varnhold": '{"population": 4821}', "Kelmere": '{"population": 9930}'}}
    clash = {"get_population": {"Varnhold": '{"population": 4821}', "Kelmere": '{"population": 48210}'}}
    assert _unambiguous(ok, unsolved, gold) and not _unambiguous(clash, unsolved, gold)


def test_warmup_split_shares_no_entity_and_no_tool_with_train_or_test(train_tasks):
    warmup = generate_tasks(200, seed=0, split="warmup")
    main = train_tasks + generate_tasks(200, seed=0, split="test")
    assert not {n.casefold() for n in _names(warmup)} & {n.casefold() for n in _names(main)}
    assert {split_of(n) for n in _names(warmup)} == {"warmup"}
    assert not {t for task in warmup for t in task.tool_names} & {t for task in main for t in task.tool_names}
    assert Counter(t.metadata["scenario"] for t in warmup) == {s: 50 for s in SCENARIOS}


def test_warmup_expert_traces_replay_perfectly():
    for task in generate_tasks(120, seed=0, split="warmup"):
        env = make_env(task)
        pairs, results = _replay(task, env)
        assert all(env_msgs == trace_msgs for env_msgs, trace_msgs in pairs), task.id
        m = env.metrics()
        assert (m["solve_r"], m["solve_p"], m["solve_f1"], m["answer_correct"]) == (1.0, 1.0, 1.0, 1.0), task.id
