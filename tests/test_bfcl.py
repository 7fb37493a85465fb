"""BFCL multi-turn: loader, schema conversion, the env + BFCL's checker on every ground truth,
isolation between episodes, robustness to garbage, expert traces, registration."""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from types import SimpleNamespace

import pytest

pytest.importorskip("bfcl_eval.eval_checker.multi_turn_eval.multi_turn_checker",
                    reason="bfcl_eval is not installed (pip install --no-deps bfcl-eval==2026.3.23 mpmath)")

from pact_cotrain.data.trace_format import task_from_record  # noqa: E402
from pact_cotrain.envs import bfcl  # noqa: E402
from pact_cotrain.envs.bfcl import (  # noqa: E402
    CATEGORIES,
    BfclEnv,
    bfcl_doc_to_tool,
    bfcl_expert_traces,
    gold_calls,
    gold_turn_text,
    load_bfcl,
    parse_bfcl_call,
    to_bfcl_call,
)
from pact_cotrain.envs.parsing import format_tool_call, parse_tool_calls  # noqa: E402

BFCL_TYPES = {"dict", "float", "tuple", "any", "list", "bool", "int", "str"}


@pytest.fixture(scope="module")
def tasks():
    return load_bfcl()


@pytest.fixture(scope="module")
def by_id(tasks):
    return {t.id: t for t in tasks}


def _our_keys() -> list[str]:
    return [k for k in bfcl._bfcl()["globals"] if isinstance(k, str) and k.startswith("pact_bfcl_")]


def replay(task, gold=None, env=None) -> BfclEnv:
    """Play the ground truth through the env: per user turn one step with all gold calls (when the
    turn has any) and one step without a call that ends the turn."""
    env = env or BfclEnv()
    env.reset(task)
    for t, turn in enumerate(gold if gold is not None else gold_calls(task)):
        if turn:
            result = env.step(gold_turn_text(turn))
            assert not result.done and len(result.tool_messages) == len(turn)
            assert all(m["role"] == "tool" for m in result.tool_messages)
        result = env.step("The request is handled.")
        last = t == len(task.metadata["ground_truth"]) - 1
        assert result.done == last
        if not last:
            assert result.tool_messages and all(m["role"] == "user" for m in result.tool_messages)
    return env


def _assert_all_valid(tasks):
    failed, per_category = [], Counter()
    for task in tasks:
        env = replay(task)
        metrics = env.metrics()
        per_category[metrics["category"]] += 1
        if metrics["valid"] != 1.0 or metrics["reward"] != 1.0:
            failed.append((task.id, env.score()))
        assert metrics["format_errors"] == 0
        assert metrics["n_calls"] == sum(len(t) for t in task.metadata["ground_truth"])
    assert not failed, failed[:3]
    return per_category


# ---------------------------------------------------------------------------------------------
# (a) every ground truth passes BFCL's checker through our env


def test_every_ground_truth_is_valid(tasks):
    """All 800 entries of the four categories: ~5 s on one CPU core."""
    start = time.time()
    counts = _assert_all_valid(tasks)
    assert counts == {c: 200 for c in CATEGORIES}
    assert time.time() - start < 120
    assert _our_keys() == []


def test_ground_truth_fast_sample(tasks):
    sample = [t for c in CATEGORIES for t in [t for t in tasks if t.metadata["category"] == c][:10]]
    assert _assert_all_valid(sample) == {c: 10 for c in CATEGORIES}


def test_checker_rejects_wrong_episodes(tasks):
    """The same path fails an episode missing one gold call, or making no calls at all."""
    sample = [t for c in CATEGORIES for t in [t for t in tasks if t.metadata["category"] == c][:10]]
    for task in sample:
        gold = gold_calls(task)
        first = next(i for i, turn in enumerate(gold) if turn)
        gold[first] = gold[first][:-1]
        assert replay(task, gold).metrics()["valid"] == 0.0, task.id
        lazy = replay(task, [[] for _ in gold]).metrics()
        assert lazy["valid"] == 0.0 and lazy["n_calls"] == 0


def test_call_strings_round_trip(tasks):
    task = tasks[0]
    involved = task.metadata["involved_classes"]
    assert parse_bfcl_call("sort('final_report.pdf')", involved) == {"name": "sort",
                                                                      "arguments": {"file_name": "final_report.pdf"}}
    assert to_bfcl_call("cd", {"folder": "x"}) == "cd(folder='x')"
    assert to_bfcl_call("f", {"a": [1, 2.5, None, True], "b": {"k": "v"}}) == "f(a=[1, 2.5, None, True],b={'k': 'v'})"
    for bad_name, bad_args in (("open(", {}), ("class", {}), ("f", {"a=open('x','w'),b": 1}), ("f", {"1a": 1})):
        with pytest.raises(ValueError):
            to_bfcl_call(bad_name, bad_args)


# ---------------------------------------------------------------------------------------------
# (b) isolation


def test_two_envs_of_one_entry_do_not_share_state(by_id):
    task = by_id["multi_turn_base_0"]
    a, b = BfclEnv(), BfclEnv()
    a.reset(task)
    b.reset(task)
    a.step(format_tool_call("cd", {"folder": "document"}) + format_tool_call("mkdir", {"dir_name": "temp"}))
    out = b.step(format_tool_call("cd", {"folder": "document"}) + format_tool_call("ls", {}))
    assert "temp" not in out.tool_messages[1]["content"]
    assert "final_report.pdf" in out.tool_messages[1]["content"]
    out = a.step(format_tool_call("ls", {}))
    assert "temp" in out.tool_messages[0]["content"]
    # Nothing of either episode stays in BFCL's module globals between steps.
    assert _our_keys() == []
    # A third env of the same entry starts from the initial state again.
    c = BfclEnv()
    c.reset(task)
    out = c.step(format_tool_call("cd", {"folder": "document"}) + format_tool_call("ls", {}))
    assert "temp" not in out.tool_messages[1]["content"]
    for env in (a, b, c):
        env.metrics()
        env.close()
    assert _our_keys() == []


def test_interleaved_samples_of_one_entry_are_all_valid(by_id):
    """K samples stepped in lockstep, as the rollout engine does, each scored on its own state."""
    for entry in ("multi_turn_base_2", "multi_turn_miss_func_5", "multi_turn_long_context_0"):
        task = by_id[entry]
        gold = gold_calls(task)
        envs = [BfclEnv() for _ in range(4)]
        for env in envs:
            env.reset(task)
        for turn in gold:
            for env in envs:
                if turn:
                    env.step(gold_turn_text(turn))
            for env in envs:
                env.step("done")
        assert [env.metrics()["valid"] for env in envs] == [1.0] * 4, entry
        assert _our_keys() == []


def test_long_context_constants_do_not_leak_between_episodes(by_id):
    """BFCL's long-context TravelAPI shares the extension cards' dicts with a module constant."""
    task = by_id["multi_turn_long_context_150"]
    card = "1234567812345678"  # one of long_context.CREDIT_CARD_EXTENSION's cards
    balance = format_tool_call("get_credit_card_balance", {"access_token": "abc123token", "card_id": card})
    book = (format_tool_call("set_budget_limit", {"access_token": "abc123token", "budget_limit": 100.0})
            + format_tool_call("book_flight", {"access_token": "abc123token", "card_id": card,
                                               "travel_date": "2026-10-06", "travel_from": "RMS",
                                               "travel_to": "SBK", "travel_class": "economy"}))
    a, b = BfclEnv(), BfclEnv()
    a.reset(task)
    b.reset(task)
    assert json.loads(a.step(book).tool_messages[1]["content"])["booking_status"] is True
    assert json.loads(a.step(balance).tool_messages[0]["content"]) == {"card_balance": 4780.0}
    assert json.loads(b.step(balance).tool_messages[0]["content"]) == {"card_balance": 5000.0}
    for _ in task.metadata["ground_truth"]:
        a.step("ok")
    a.metrics()  # the checker re-executes a's calls on fresh instances
    c = BfclEnv()
    c.reset(task)
    assert json.loads(c.step(balance).tool_messages[0]["content"]) == {"card_balance": 5000.0}


def test_metrics_midway_does_not_break_the_episode(by_id):
    task = by_id["multi_turn_base_0"]
    gold = gold_calls(task)
    env = BfclEnv()
    env.reset(task)
    for turn in gold:
        env.step(gold_turn_text(turn))
        assert env.metrics()["valid"] == 0.0  # unfinished
        env.step("ok")
    assert env.metrics()["valid"] == 1.0


# ---------------------------------------------------------------------------------------------
# (c) model output never raises


GARBAGE = [
    "", "   ", None, 12345, "plain text answer", "<tool_call>", "</tool_call>", "<tool_call></tool_call>",
    "<tool_call>{not json}</tool_call>", '<tool_call>{"name": 5}</tool_call>', '<tool_call>[1,2]</tool_call>',
    '<tool_call>{"name": "cd", "arguments": "nope"}</tool_call>',
    '<tool_call>{"name": "cd", "arguments": {"folder": 3}}</tool_call>',
    '<tool_call>{"name": "cd", "arguments": {"nonexistent_arg": "x"}}</tool_call>',
    '<tool_call>{"name": "no_such_tool", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "open", "arguments": {"file": "/tmp/pact_bfcl_pwned", "mode": "w"}}</tool_call>',
    '<tool_call>{"name": "__import__", "arguments": {"name": "os"}}</tool_call>',
    '<tool_call>{"name": "exit", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "cd", "arguments": {"a=open(\'/tmp/pact_bfcl_pwned\',\'w\'),b": 1}}</tool_call>',
    '<tool_call>{"name": "cd(folder=open(\'/tmp/pact_bfcl_pwned\',\'w\'))#", "arguments": {}}</tool_call>',
    '<tool_call>{"name": "cd", "arguments": {"folder": "ls(a=True)"}}</tool_call>',
    '<tool_call>{"name": "power", "arguments": {"base": 12345, "exponent": 1000000000}}</tool_call>',
    '<tool_call>{"name": "logarithm", "arguments": {"value": 10, "base": 2, "precision": 100000000}}</tool_call>',
    '<tool_call>{"name": "round_number", "arguments": {"number": 5, "decimal_places": -1000000000}}</tool_call>',
    '<tool_call>{"name": "mean", "arguments": {"numbers": ' + "[" * 300 + "]" * 300 + "}}</tool_call>",
    '<tool_call>{"name": "cd", "arguments": {"folder": ' + "[" * 5000 + "]" * 5000 + "}}</tool_call>",
    "<think>hidden <tool_call>{\"name\": \"ls\"}</tool_call></think>",
    "<tool_call>\n" * 50,
    "\x00\udcff" * 10,
]


def test_garbage_text_never_raises(by_id):
    if os.path.exists("/tmp/pact_bfcl_pwned"):
        os.remove("/tmp/pact_bfcl_pwned")
    for entry in ("multi_turn_base_0", "multi_turn_base_15", "multi_turn_miss_func_3", "multi_turn_long_context_5"):
        env = BfclEnv(max_steps_per_turn=100, max_total_steps=1000)
        env.reset(by_id[entry])
        start = time.time()
        for text in GARBAGE:
            result = env.step(text)
            assert isinstance(result.tool_messages, list)
            assert all(isinstance(m.get("content"), str) for m in result.tool_messages)
            if result.done:
                env.reset(by_id[entry])
        assert time.time() - start < 20
        metrics = env.metrics()
        assert metrics["valid"] in (0.0, 1.0) and "reward" in metrics
        env.close()
    assert not os.path.exists("/tmp/pact_bfcl_pwned")
    assert _our_keys() == []


def test_unknown_and_refused_calls_get_error_observations(by_id):
    env = BfclEnv()
    env.reset(by_id["multi_turn_base_0"])
    out = env.step(format_tool_call("open", {"file": "x"}) + format_tool_call("ls", {}))
    assert out.tool_messages[0]["content"] == "Error during execution: name 'open' is not defined"
    assert "final_report" not in out.tool_messages[1]["content"]  # ls at the root, not in document/
    out = env.step("<tool_call>{broken</tool_call>")
    assert out.tool_messages[0]["name"] == "tool_call_error" and not out.done
    metrics = env.metrics()
    assert metrics["n_calls"] == 2 and metrics["format_errors"] == 1


def test_calls_that_would_hang_are_refused(by_id):
    task = by_id["multi_turn_base_15"]  # GorillaFileSystem + MathAPI
    env = BfclEnv()
    env.reset(task)
    start = time.time()
    out = env.step(format_tool_call("power", {"base": 12345, "exponent": 10**9})
                   + format_tool_call("logarithm", {"value": 10, "base": 2, "precision": 10**8})
                   + format_tool_call("square_root", {"number": 2, "precision": 10**8})
                   + format_tool_call("round_number", {"number": 5, "decimal_places": -10**9})
                   + format_tool_call("power", {"base": 2.0, "exponent": 10.0})
                   + format_tool_call("cd", {"folder": "ls(a=True)"}))
    assert time.time() - start < 5
    contents = [m["content"] for m in out.tool_messages]
    assert all(c.startswith("Error during execution: ") and "at most" in c for c in contents[:4])
    assert json.loads(contents[4]) == {"result": 1024.0}
    assert "pact_bfcl_" not in contents[5]  # BFCL's instance-name rewriting shows a fixed name
    assert env.decoded[0] == [["power(base=2.0,exponent=10.0)", "cd(folder='ls(a=True)')"]]


def test_step_after_done_and_limits(by_id):
    task = by_id["multi_turn_base_0"]
    n_turns = len(task.metadata["ground_truth"])
    env = BfclEnv()
    env.reset(task)
    for _ in range(n_turns):
        result = env.step("nothing to do")
    assert result.done and env.step("again").done
    assert env.metrics()["valid"] == 0.0 and env.metrics()["completed_turns"] == n_turns

    # BFCL force-quits a turn after 20 steps with calls: the 21st ends the episode, invalid.
    env = BfclEnv(max_steps_per_turn=20)
    env.reset(task)
    results = [env.step(format_tool_call("pwd", {})) for _ in range(21)]
    assert not any(r.done for r in results[:20]) and results[20].done
    assert env.metrics()["force_quit"] == 1.0 and env.metrics()["valid"] == 0.0

    # The total step budget ends an unfinished episode, invalid.
    env = BfclEnv(max_total_steps=3)
    env.reset(task)
    assert [env.step("x").done for _ in range(3)] == [False, False, True]
    assert env.metrics()["valid"] == 0.0


# ---------------------------------------------------------------------------------------------
# (d) schemas and tasks


def _walk_types(schema, found):
    if isinstance(schema, dict):
        if isinstance(schema.get("type"), str):
            found.add(schema["type"])
        for prop in (schema.get("properties") or {}).values():
            _walk_types(prop, found)
        if isinstance(schema.get("items"), dict):
            _walk_types(schema["items"], found)


def test_schema_conversion():
    doc = {
        "name": "f", "description": "d",
        "parameters": {"type": "dict", "required": ["a"], "properties": {
            "a": {"type": "float", "description": "x"},
            "b": {"type": "tuple", "items": {"type": "integer"}},
            "c": {"type": "any", "description": "anything"},
            "d": {"type": "dict", "properties": {"e": {"type": "array", "items": {"type": "dict", "properties": {
                "g": {"type": "bool"}}}}}},
            "h": {"type": "string", "enum": ["x", "y"], "default": "x"},
        }},
        "response": {"type": "dict", "properties": {}},
    }
    tool = bfcl_doc_to_tool(doc)
    fn = tool["function"]
    assert tool["type"] == "function" and fn["name"] == "f" and "response" not in fn
    params = fn["parameters"]
    assert params["type"] == "object" and params["required"] == ["a"]
    props = params["properties"]
    assert props["a"] == {"type": "number", "description": "x"}
    assert props["b"] == {"type": "array", "items": {"type": "integer"}}
    assert props["c"] == {"description": "anything"}  # any: no type constraint
    assert props["d"]["type"] == "object" and props["d"]["properties"]["e"]["items"]["type"] == "object"
    assert props["d"]["properties"]["e"]["items"]["properties"]["g"]["type"] == "boolean"
    assert props["h"] == {"type": "string", "enum": ["x", "y"], "default": "x"}
    assert doc["parameters"]["type"] == "dict"  # the doc itself is not modified
    call = parse_tool_calls(format_tool_call("f", {"a": 1.5, "c": [1]}), [tool])
    assert call.calls and not call.errors


def test_loaded_tasks(tasks):
    assert Counter(t.metadata["category"] for t in tasks) == {c: 200 for c in CATEGORIES}
    assert len({t.id for t in tasks}) == 800
    assert len(load_bfcl(("multi_turn_miss_param",), limit_per_category=3)) == 3
    json_types = {"object", "number", "integer", "string", "boolean", "array"}
    for task in tasks:
        meta = task.metadata
        assert meta["benchmark"] == "bfcl" and meta["bfcl_id"] == task.id
        assert task.messages == meta["user_turns"][0] and task.messages[0]["role"] == "user"
        assert len(meta["user_turns"]) == len(meta["ground_truth"])
        found: set[str] = set()
        for tool in task.tools:
            _walk_types(tool["function"]["parameters"], found)
        assert found <= json_types and not found & BFCL_TYPES
        names = set(task.tool_names)
        for turn, missed in meta["missed_function"].items():
            assert meta["user_turns"][int(turn)] == []
            assert not set(missed) & names
            assert [t["function"]["name"] for t in meta["missed_function_tools"][turn]] == missed
        assert task_from_record(json.loads(json.dumps(task.to_record()))).metadata == meta
    assert all(t.metadata["missed_function"] for t in tasks if t.metadata["category"] == "multi_turn_miss_func")
    assert all(t.metadata["long_context"] == (t.metadata["category"] == "multi_turn_long_context") for t in tasks)


def test_miss_func_reveals_tools_in_a_user_message(by_id):
    task = by_id["multi_turn_miss_func_0"]
    held_turn = int(next(iter(task.metadata["missed_function"])))
    env = BfclEnv()
    env.reset(task)
    gold = gold_calls(task)
    for t in range(held_turn):
        if gold[t]:
            env.step(gold_turn_text(gold[t]))
        result = env.step("done")
    assert not result.done and [m["role"] for m in result.tool_messages] == ["user"]
    text = result.tool_messages[0]["content"]
    assert text.startswith("New tools available:\n<tools>\n") and '"name": "sort"' in text
    assert text.endswith(bfcl.ADDITIONAL_FUNCTION_PROMPT)
    assert "sort" in [t["function"]["name"] for t in env.tools]
    assert "sort" not in task.tool_names


# ---------------------------------------------------------------------------------------------
# Expert traces


def test_expert_traces(tasks):
    sample = [t for c in CATEGORIES for t in [t for t in tasks if t.metadata["category"] == c][:10]]
    traced = bfcl_expert_traces(sample)
    for task in traced:
        task_from_record(task.to_record())  # a valid trace record
        gold = gold_calls(task)[0]
        calls = [c for m in task.trace if m["role"] == "assistant" for c in m.get("tool_calls", [])]
        assert [{"name": c["name"], "arguments": c["arguments"]} for c in calls] == gold
        if not gold:
            assert len(task.trace) == 1 and task.trace[0]["content"]
            continue
        # The outputs are what the env returns for the same calls on a fresh episode.
        env = BfclEnv()
        env.reset(task)
        outputs = [m["content"] for m in env.step(gold_turn_text(gold)).tool_messages]
        assert [m["content"] for m in task.trace if m["role"] == "tool"] == outputs
        assert task.trace[0]["reasoning"] and task.trace[-1]["role"] == "assistant"
    episode = bfcl_expert_traces(sample[:3], scope="episode")
    for task in episode:
        task_from_record(task.to_record())
        calls = [c["name"] for m in task.trace if m["role"] == "assistant" for c in m.get("tool_calls", [])]
        assert calls == [c["name"] for turn in gold_calls(task) for c in turn]
    assert _our_keys() == []


# ---------------------------------------------------------------------------------------------
# Registration, summary and the rollout engine


def test_benchmark_registration_and_summary():
    from pact_cotrain.eval.benchmarks import BENCHMARKS

    bench = BENCHMARKS["bfcl"]
    assert bench.columns == ("multi_turn_base", "multi_turn_miss_func", "multi_turn_miss_param",
                             "multi_turn_long_context", "bfcl_avg")
    episodes = ([{"category": "multi_turn_base", "valid": 1.0}] * 3 + [{"category": "multi_turn_base", "valid": 0.0}]
                + [{"category": "multi_turn_miss_func", "valid": 0.0}] * 2)
    summary = bench.summarize(episodes)
    assert summary == {"multi_turn_base": 0.75, "multi_turn_miss_func": 0.0, "bfcl_avg": 0.375}
    two_user_turns = SimpleNamespace(messages=[], metadata={"user_turns": [["a"], ["b"]]})
    env = bench.make_env(two_user_turns)  # BFCL's limit: 20 steps per user turn, plus the turn's last
    assert isinstance(env, BfclEnv) and env.max_total_steps == 2 * 21


def test_rollout_engine_drives_user_turns(tokenizer, by_id):
    """The engine inserts the env's user messages and ends on done; scripted turns, no model."""
    from pact_cotrain.rollout.backends import TurnOutput
    from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

    task = by_id["multi_turn_miss_func_1"]
    script = []
    for turn in gold_calls(task):
        script += ([gold_turn_text(turn)] if turn else []) + ["Done."]

    class Scripted:
        calls = 0

        def generate(self, prompts, max_new_tokens, temperature, top_p, greedy):
            text = script[self.calls]
            self.calls += 1
            ids = tokenizer.encode(text, add_special_tokens=False) + [tokenizer.eos_token_id]
            return [TurnOutput(list(ids), [0.0] * len(ids), True) for _ in prompts]

    sampling = SamplingConfig(max_turns=50, max_new_tokens_per_turn=100_000, max_completion_tokens=1_000_000)
    engine = RolloutEngine(None, tokenizer, lambda t: BfclEnv(), sampling, backend=Scripted())
    episodes = engine.rollout([task], k=2)
    for ep in episodes:
        assert ep.stop_reason == "done" and ep.reward == 1.0 and ep.metrics["valid"] == 1.0
        users = [m["content"] for m in ep.messages if m["role"] == "user"]
        assert len(users) == len(task.metadata["user_turns"])
        assert any(u.startswith("New tools available") for u in users)
        inserted = tokenizer.decode([i for i, g in zip(ep.completion_ids, ep.generated_mask) if not g])
        assert "New tools available" in inserted
    assert _our_keys() == []
