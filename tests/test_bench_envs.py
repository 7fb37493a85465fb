"""FTRL and ToolHop environments, expert-trace mining and the two recipes.

Hand-made rows check every scoring rule of /work/shared/data/README.md through the environments;
a few real rows of the shared files check trace mining and replay (skipped without the files).
All tool code runs in one small sandbox shared by the module.
"""

from __future__ import annotations

import json
import textwrap

import pytest

from pact_cotrain.data.trace_mining import build_traces, replay, strong_match
from pact_cotrain.data.trace_format import Task, load_tasks, task_from_record
from pact_cotrain.envs.ftrl import FtrlEnv, default_ftrl_path, shared_sandbox
from pact_cotrain.envs.parsing import format_tool_call
from pact_cotrain.envs.toolhop import ToolHopEnv, default_toolhop_path, parse_calls
from pact_cotrain.errors import UserError
from pact_cotrain.eval.benchmarks import BENCHMARKS
from pact_cotrain.sandbox import ToolSandbox


@pytest.fixture(scope="module")
def sandbox():
    with ToolSandbox(n_workers=1, timeout_s=3.0) as box:
        assert box.wait_ready(30)
        yield box


def src(text: str) -> str:
    return textwrap.dedent(text).strip() + "\n"


def schema(name: str, props: dict, required: list[str]) -> dict:
    return {"type": "function", "function": {"name": name, "description": name,
                                             "parameters": {"type": "object", "properties": props, "required": required}}}


# ----------------------------------------------------------------------------------- FTRL rows

CODES = {
    "get_population": src("""
        def get_population(city):
            table = {'Varnhold': 'Varnhold has 1234 inhabitants.', 'Osk': 'Osk has 77 inhabitants.'}
            return table.get(city, 'No city named ' + city)
    """),
    # listed twice in unsolved_set: must be solved by two different successful calls
    "get_year": src("""
        def get_year(event):
            if event == 'founding':
                return {'year': 1990}
            if event == 'flood':
                return {'year': 2001}
            return {'error': 'unknown event'}
    """),
    "broken": src("""
        def broken(x):
            raise RuntimeError('boom')
    """),
}
TOOLS = [
    schema("get_population", {"city": {"type": "string"}}, ["city"]),
    schema("get_year", {"event": {"type": "string"}}, ["event"]),
    schema("broken", {"x": {"type": "integer"}}, ["x"]),
]


def ftrl_task(answer: str = "3991") -> Task:
    return Task(id="hand_ftrl", messages=[{"role": "user", "content": "Question: ?"}], tools=TOOLS,
                metadata={"benchmark": "ftrl", "codes": CODES, "answer": answer,
                          "unsolved_set": {"get_population": ["1,234"], "get_year": ["1990", "2001"]}})


def call(tool: str, /, **arguments) -> str:
    return format_tool_call(tool, arguments)


def test_ftrl_perfect_episode_and_tool_solved_twice(sandbox):
    env = FtrlEnv(sandbox)
    env.reset(ftrl_task())
    r1 = env.step(call("get_population", city="Varnhold") + call("get_year", event="founding"))
    assert not r1.done and r1.reward == pytest.approx(2 * 2 / 3)  # n=2 calls, k=2 solved
    assert r1.tool_messages[0] == {"role": "tool", "name": "get_population", "content": "Varnhold has 1234 inhabitants."}
    # the same call again solves nothing (1990 is solved, 2001 is still open) ...
    r2 = env.step(call("get_year", event="founding"))
    assert r2.reward == 0.0 and r2.info["n_solved"] == 0
    # ... a different one solves the tool's second string
    r3 = env.step(call("get_year", event="flood"))
    assert r3.reward == pytest.approx(1.0)
    r4 = env.step("The answer is 3,991.")
    assert r4.done and r4.reward == pytest.approx(1 / (1 + 0))  # answer given, nothing remaining
    m = env.metrics()
    assert (m["solve_r"], m["n_calls"]) == (1.0, 4.0)
    assert m["solve_p"] == pytest.approx(3 / 4)
    assert m["solve_f1"] == pytest.approx(2 * 3 / (4 + 3))
    assert m["answer_correct"] == 1.0 and m["format_errors"] == 0.0
    assert m["reward"] == m["solve_f1"]
    assert m["step_mean"] == pytest.approx((4 / 3 + 0 + 1 + 1) / 4)


def test_ftrl_no_call_step_rewards(sandbox):
    cases = [
        ("", -0.5),  # empty
        ("<think>only thinking</think>", -0.5),  # nothing visible
        ("<tool_call>{not json</tool_call>", -0.3),  # malformed block
        ("It is 3991.", 1 / (1 + 3)),  # answer, 3 expected strings remaining
        ("I do not know.", 0.0),
    ]
    for text, expected in cases:
        env = FtrlEnv(sandbox)
        env.reset(ftrl_task())
        result = env.step(text)
        assert result.reward == pytest.approx(expected), text
    env = FtrlEnv(sandbox)
    env.reset(ftrl_task())
    for text in (call("get_population", city="Varnhold"), call("get_year", event="founding"), call("get_year", event="flood")):
        env.step(text)
    assert env.step("Done, no answer here.").reward == 0.5  # everything already solved
    # malformed markup in a turn: that turn is not done (it holds call markup), C unchanged
    env = FtrlEnv(sandbox)
    env.reset(ftrl_task())
    result = env.step("<tool_call>{not json</tool_call>")
    assert not result.done and env.metrics()["n_calls"] == 0 and env.metrics()["format_errors"] == 1


def test_ftrl_no_calls_and_rejected_calls(sandbox):
    env = FtrlEnv(sandbox)
    env.reset(ftrl_task())
    env.step("No tools today.")
    m = env.metrics()
    assert (m["solve_p"], m["solve_r"], m["solve_f1"], m["n_calls"]) == (1.0, 0.0, 0.0, 0.0)  # P = 1 when C = 0

    env = FtrlEnv(sandbox)
    env.reset(ftrl_task())
    # schema-rejected (wrong type), unknown tool, tool exception, wrong argument: 4 calls, 0 solved
    result = env.step(call("get_population", city=5) + call("nope") + call("broken", x=1) + call("get_population", city="Osk"))
    obs = [msg["content"] for msg in result.tool_messages]
    assert obs[0].startswith("an error occurred when calling get_population: parameter 'city' must be of type string")
    assert obs[1].startswith("an error occurred when calling nope: unknown tool")
    assert obs[2] == "an error occurred when calling broken: boom"
    assert obs[3] == "Osk has 77 inhabitants."
    assert result.reward == 0.0 and result.info["n_tool_errors"] == 1
    m = env.metrics()
    assert (m["n_calls"], m["format_errors"], m["solve_p"]) == (4.0, 2.0, 0.0)
    assert m["solve_f1"] == 0.0


def test_ftrl_episode_limits_and_reward_modes(sandbox):
    env = FtrlEnv(sandbox, max_steps=2, reward="step_mean")
    env.reset(ftrl_task())
    assert not env.step(call("get_year", event="x")).done
    assert env.step(call("get_year", event="y")).done  # the step limit ends the episode
    assert env.metrics()["reward"] == env.metrics()["step_mean"] == 0.0
    with pytest.raises(ValueError):
        FtrlEnv(sandbox, reward="nope")


GARBAGE = ["", None, 12345, "<tool_call>", "</tool_call>", "<tool_call></tool_call>" * 50,
           '<tool_call>{"name": "get_year", "arguments": "not an object"}</tool_call>',
           '<tool_call>{"name": "get_year", "arguments": {"event": ["deep"] }}</tool_call>',
           "<think>" + "[" * 5000, "\x00\udcff\u202e" * 100, '<tool_call>{"name": ' + "[" * 3000 + "</tool_call>",
           '<tool_call>{"name": "get_population", "arguments": {"city": "' + "x" * 100000 + '"}}</tool_call>']


def test_envs_never_raise_on_garbage(sandbox):
    for text in GARBAGE:
        env = FtrlEnv(sandbox)
        env.reset(ftrl_task())
        result = env.step(text)  # type: ignore[arg-type]
        assert isinstance(result.reward, float)
        assert set(env.metrics()) >= {"solve_r", "solve_p", "solve_f1", "answer_correct", "n_calls",
                                      "format_errors", "reward", "step_mean"}
        for scenario in ("free", "mandatory", "direct"):
            henv = ToolHopEnv(sandbox, scenario=scenario)
            henv.reset(toolhop_task())
            henv.step(text)  # type: ignore[arg-type]
            assert set(henv.metrics()) >= {"answer_correct", "n_calls", "format_errors", "reward"}
    # before reset: still no exception
    assert FtrlEnv(sandbox).step("x").done and ToolHopEnv(sandbox).step("x").done


# --------------------------------------------------------------------------------- ToolHop rows

FUNCTIONS = [
    src("""
        def father_of(name: str):
            return {'father': 'Oliver Russell'} if name == 'John Russell' else {'error': 'not found'}
    """),
    src("""
        def last_name(full_name: str):
            return full_name.split()[-1]
    """),
    # a second, different tool under the same name (ToolHop has a few)
    src("""
        def last_name(person: str, style: str):
            return person.split()[0] if style == 'eastern' else person.split()[-1]
    """),
]


def toolhop_task(answer: str = "Russell") -> Task:
    tools = [schema("father_of", {"name": {"type": "string"}}, ["name"]),
             schema("last_name", {"full_name": {"type": "string"}}, ["full_name"]),
             schema("last_name", {"person": {"type": "string"}, "style": {"type": "string"}}, ["person", "style"])]
    from pact_cotrain.data.readers import FTRL_INSTRUCTION

    return Task(id="hand_toolhop", messages=[{"role": "user", "content": FTRL_INSTRUCTION + "Question: ?"}],
                tools=tools, metadata={"benchmark": "toolhop", "functions": FUNCTIONS, "answer": answer,
                                       "sub_task": {"Who is the father of John Russell?": "Oliver Russell",
                                                    "What is the last name of Oliver Russell?": "Russell"},
                                       "subtask_tools": {"Who is the father of John Russell?": "father_of",
                                                         "What is the last name of Oliver Russell?": "last_name"}})


def test_toolhop_answer_correctness(sandbox):
    # answer in the final content (normalised: case and commas)
    env = ToolHopEnv(sandbox)
    messages, tools = env.reset(toolhop_task())
    assert tools and "decide for yourself" in messages[0]["content"]
    assert env.step(call("father_of", name="John Russell")).tool_messages[0]["content"] == '{"father": "Oliver Russell"}'
    env.step(call("last_name", full_name="Oliver Russell"))
    result = env.step("So the answer is RUSSELL.")
    assert result.done and result.reward == 1.0
    assert env.metrics() == {"answer_correct": 1.0, "n_calls": 2.0, "format_errors": 0.0, "n_steps": 3.0, "reward": 1.0}
    # answer only in the tool output just before the final turn
    env = ToolHopEnv(sandbox)
    env.reset(toolhop_task())
    env.step(call("last_name", full_name="Oliver Russell"))
    assert env.step("See above.").reward == 1.0
    # ... but not in an older one
    env = ToolHopEnv(sandbox)
    env.reset(toolhop_task())
    env.step(call("last_name", full_name="Oliver Russell"))
    env.step(call("father_of", name="Nobody"))
    assert env.step("See above.").reward == 0.0
    # wrong answer
    env = ToolHopEnv(sandbox)
    env.reset(toolhop_task())
    assert env.step("Smith").reward == 0.0


def test_toolhop_scenarios_and_duplicate_names(sandbox):
    env = ToolHopEnv(sandbox, scenario="mandatory")
    env.reset(toolhop_task())
    assert env.step("Russell").reward == 0.0  # right answer, but no tool was used
    env = ToolHopEnv(sandbox, scenario="free")
    env.reset(toolhop_task())
    assert env.step("Russell").reward == 1.0
    env = ToolHopEnv(sandbox, scenario="direct")
    messages, tools = env.reset(toolhop_task())
    assert tools == [] and "directly" in messages[0]["content"]
    result = env.step(call("last_name", full_name="Oliver Russell"))
    assert "unknown tool" in result.tool_messages[0]["content"] and env.metrics()["format_errors"] == 1.0
    # either definition of `last_name` can be called; each runs its own code
    env = ToolHopEnv(sandbox, max_steps=9)
    env.reset(toolhop_task())
    result = env.step(call("last_name", person="Russell Oliver", style="eastern") + call("last_name", full_name="Ann Lee"))
    assert [m["content"] for m in result.tool_messages] == ["Russell", "Lee"]
    assert len(parse_calls(call("last_name", style="eastern"), toolhop_task().tools).errors) == 1
    with pytest.raises(ValueError):
        ToolHopEnv(sandbox, scenario="nope")


def test_strong_match_for_short_strings():
    assert strong_match("s", '{"last_letter": "s"}') and not strong_match("s", '{"results": "l"}')
    assert strong_match("2", "{'casualties': '2', 'year': 1949}") and not strong_match("2", "{'year': 2023}")
    assert strong_match("Lake Crescent", "Lake Crescent is known for its crescent shape.")


def test_mining_hand_made_rows(sandbox, tmp_path):
    from pact_cotrain.data.trace_mining import trace_for_task

    task, record = trace_for_task(ftrl_task(), "ftrl", sandbox)
    assert task is not None, record
    calls = [c for m in task.trace if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert {json.dumps(c["arguments"]) for c in calls if c["name"] == "get_year"} == {'{"event": "founding"}', '{"event": "flood"}'}
    assert task.trace[-1] == {"role": "assistant", "content": "3991", "reasoning": task.trace[-1]["reasoning"]}
    assert all(m["reasoning"].startswith("To find") for m in task.trace[:-1] if m["role"] == "assistant")
    task_from_record(task.to_record())

    task, record = trace_for_task(toolhop_task(), "toolhop", sandbox)
    assert task is not None, record
    names = [c["name"] for m in task.trace if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert names == ["father_of", "last_name"]  # the hop that needs "Oliver Russell" comes second


# ------------------------------------------------------------------------------ the shared files

needs_data = pytest.mark.skipif(not (default_ftrl_path().exists() and default_toolhop_path().exists()),
                                reason="shared benchmark data not present")

FTRL_ROWS = ["ftrl_test_000", "ftrl_test_134", "ftrl_test_150", "ftrl_test_009"]  # 009: its tool can't produce the gold date
TOOLHOP_ROWS = ["toolhop-015", "toolhop-035", "toolhop-009"]  # 015 has gold calls, 035 a duplicated tool name


@needs_data
def test_real_ftrl_traces_replay(sandbox):
    tasks, report = build_traces("ftrl", ids=FTRL_ROWS, sandbox=sandbox)
    assert report["rows"] == 4 and report["verified"] >= 3 and report["coverage"] > 0
    assert "ftrl_test_009" in report["failed"]
    for task in tasks:
        env = FtrlEnv(sandbox)
        full, metrics, _ = replay(env, task, task.trace)
        assert metrics["solve_r"] == 1.0 and metrics["answer_correct"] == 1.0
        assert [m["content"] for m in full] == [m["content"] for m in task.trace]  # outputs are reproducible
    multi = next(t for t in tasks if t.id == "ftrl_test_150")
    steps = [m for m in multi.trace if m["role"] == "assistant" and m.get("tool_calls")]
    assert len(steps[0]["tool_calls"]) >= 2  # independent calls share a step
    assert steps[-1]["tool_calls"][0]["name"] == "enhanced_calculator"  # the sum comes last


@needs_data
def test_real_toolhop_traces_replay(sandbox):
    tasks, report = build_traces("toolhop", ids=TOOLHOP_ROWS, sandbox=sandbox)
    assert report["verified"] == 3, report["failed"]
    for task in tasks:
        env = ToolHopEnv(sandbox, scenario="mandatory")
        _, metrics, _ = replay(env, task, task.trace)
        assert metrics["answer_correct"] == 1.0 and metrics["n_calls"] == len(task.metadata["sub_task"])
        assert task.trace[-1]["content"] == task.metadata["answer"]
    gold = next(t for t in tasks if t.id == "toolhop-015")
    calls = [c for m in gold.trace if m["role"] == "assistant" for c in m.get("tool_calls", [])]
    assert calls == [{"name": c["name"], "arguments": c["arguments"]} for c in gold.metadata["gold_tool_calls"]]


@needs_data
def test_registry_and_recipes(sandbox, tmp_path, capsys, monkeypatch):
    assert {"ftrl", "toolhop", "toolhop_mandatory", "toolhop_direct"} <= set(BENCHMARKS)
    assert BENCHMARKS["toolhop"].columns == ("answer_correct",) and BENCHMARKS["ftrl"].max_turns == 20
    import pact_cotrain.envs.ftrl as ftrl_module

    monkeypatch.setattr(ftrl_module, "_shared", sandbox)  # the recipes' environments use this sandbox
    assert shared_sandbox() is sandbox
    task = next(t for t in BENCHMARKS["ftrl"].load(None) if t.id == "ftrl_test_000")
    assert isinstance(BENCHMARKS["ftrl"].make_env(task), FtrlEnv)

    from pact_cotrain.recipes.tools_call import run_tools_call
    from pact_cotrain.recipes.traces import run_traces

    args = json.dumps({"keywords": "wikileaks leak the standard us army protocol at guantanamo bay"})
    assert run_tools_call("ftrl", None, "ftrl_test_000", "historical_event_finder", args) == 0
    assert "2007-11-7" in capsys.readouterr().out
    assert run_tools_call("ftrl", None, "ftrl_test_000", "historical_event_finder", "{}") == 1
    with pytest.raises(UserError, match="no_such_row"):  # the CLI prints it as one line, exit 2
        run_tools_call("ftrl", None, "no_such_row", "x", "{}")
    assert run_tools_call("toolhop", None, "toolhop-015", "extract_last_name", '{"full_name": "Oliver Russell"}') == 0

    out = tmp_path / "traces.jsonl"
    report = run_traces("ftrl", str(out), ids=["ftrl_test_000", "ftrl_test_009"])
    assert report["verified"] == 1 and "1/2 rows" in capsys.readouterr().out
    (loaded,) = load_tasks(out)
    assert loaded.id == "ftrl_test_000" and loaded.trace and loaded.metadata["expert_trace"]["metrics"]["solve_r"] == 1.0
