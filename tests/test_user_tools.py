"""A user's own tools (TRL's `tools=` and `environment_factory=`) as the project's Environment."""

import asyncio
import json
import os
import sqlite3
import sys
import threading
import time
from pathlib import Path

import pytest

from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.user_env import UserToolError, user_env_factory
from pact_cotrain.errors import UserError
from pact_cotrain.rollout.backends import TurnOutput
from pact_cotrain.rollout.engine import RolloutEngine, SamplingConfig

sys.path.insert(0, str(Path(__file__).parent))
import user_tool_funcs  # noqa: E402  (tools importable by module path, for the sandbox)


def call(tool_name, **arguments):
    return "<tool_call>\n" + json.dumps({"name": tool_name, "arguments": arguments}) + "\n</tool_call>"


def task(task_id="t0", **metadata):
    return Task(task_id, [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Go."}], [],
                metadata=metadata)


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: the first factor
        b: the second factor
    """
    return a * b


def fail(reason: str) -> str:
    """Always raise.

    Args:
        reason: what to say
    """
    raise RuntimeError(reason)


def sleepy(seconds: float) -> str:
    """Sleep, then answer.

    Args:
        seconds: how long to sleep
    """
    time.sleep(seconds)
    return "woke up"


async def async_lookup(key: str) -> dict:
    """Look a key up, asynchronously.

    Args:
        key: the key
    """
    await asyncio.sleep(0.01)
    return {"key": key, "value": key.upper()}


async def async_sleepy(seconds: float) -> str:
    """Sleep asynchronously.

    Args:
        seconds: how long
    """
    await asyncio.sleep(seconds)
    return "woke up"


def big(n: int) -> str:
    """A long output.

    Args:
        n: its length
    """
    return "x" * n


class Counter:
    """A TRL-style environment: per-episode state, a reset observation and its own reward."""

    def reset(self, **row):
        self.row = row
        self.total = 0
        return f" Target: {row.get('target')}."

    def add(self, amount: int) -> str:
        """Add to the running total.

        Args:
            amount: how much to add
        """
        self.total += amount
        return f"total={self.total}"

    def get_reward(self) -> float:
        return 1.0 if self.total == self.row.get("target") else 0.0

    def _helper(self):  # private: not a tool
        return None


class Shop:
    """A per-episode sqlite database opened in reset (sqlite objects are bound to their thread)."""

    def reset(self, **row):
        self.db = sqlite3.connect(":memory:")
        self.db.execute("create table items (name text, price int)")
        self.db.executemany("insert into items values (?, ?)", [("pen", 2), ("book", 12)])

    def price(self, name: str) -> str:
        """The price of an item.

        Args:
            name: the item's name
        """
        row = self.db.execute("select price from items where name = ?", (name,)).fetchone()
        return "unknown item" if row is None else str(row[0])

    async def get_reward(self) -> float:
        return 0.5


# -- function tools ---------------------------------------------------------------------------------


def test_function_schema_comes_from_the_docstring():
    factory = user_env_factory(tools=[multiply])
    (schema,) = factory.tool_schemas()
    assert schema["function"]["name"] == "multiply"
    assert schema["function"]["description"] == "Multiply two integers."
    params = schema["function"]["parameters"]
    assert params["properties"]["a"] == {"type": "integer", "description": "the first factor"}
    assert params["required"] == ["a", "b"]


def test_a_tool_without_docstring_or_type_hint_is_refused_in_one_line():
    def no_doc(x: int) -> int:
        return x

    def no_hint(x):
        """Something.

        Args:
            x: a value
        """

    with pytest.raises(UserToolError, match=r"no_doc.*no docstring") as err:
        user_env_factory(tools=[multiply, no_doc])
    assert "\n" not in str(err.value) and isinstance(err.value, UserError)
    with pytest.raises(UserToolError, match=r"no_hint.*missing a type hint"):
        user_env_factory(tools=[no_hint])
    with pytest.raises(UserToolError, match="no tools given"):
        user_env_factory()
    with pytest.raises(UserToolError, match="two tools are named 'multiply'"):
        user_env_factory(tools=[multiply, multiply])


def test_calls_run_and_a_raising_tool_is_a_message_not_a_crash():
    factory = user_env_factory(tools=[multiply, fail])
    env = factory(task())
    messages, tools = env.reset(task())
    assert [t["function"]["name"] for t in tools] == ["multiply", "fail"]
    result = env.step("Let me compute. " + call("multiply", a=6, b=7) + call("fail", reason="boom")
                      + call("multiply", a="six", b=7))
    assert [m["content"] for m in result.tool_messages[:2]] == ["42", "an error occurred when calling fail: RuntimeError: boom"]
    assert "must be of type integer" in result.tool_messages[2]["content"]  # schema check, not executed
    assert not result.done  # the episode goes on
    assert env.step("The answer is 42.").done
    metrics = env.metrics()
    assert metrics["n_calls"] == 2 and metrics["tool_errors"] == 1 and metrics["format_errors"] == 1
    assert metrics["reward"] == 0.0 and "env_reward" not in metrics  # no get_reward: the reward is reward_funcs'


def test_timeout_then_the_episode_goes_on():
    factory = user_env_factory(tools=[sleepy, async_sleepy, multiply], tool_timeout_s=0.3)
    env = factory(task())
    env.reset(task())
    result = env.step(call("sleepy", seconds=30) + call("async_sleepy", seconds=30) + call("multiply", a=2, b=3))
    contents = [m["content"] for m in result.tool_messages]
    assert contents[0] == contents[1].replace("async_sleepy", "sleepy") == \
        "an error occurred when calling sleepy: timeout: the call did not finish within 0.3 s"
    assert contents[2] == "6"  # the stuck sync call's thread was abandoned; the next call runs on a fresh one
    metrics = env.metrics()
    assert metrics["tool_timeouts"] == 2 and metrics["tool_errors"] == 2


def test_output_cap_truncates_with_a_marker():
    env = user_env_factory(tools=[big], max_tool_output_chars=100)(task())
    env.reset(task())
    (message,) = env.step(call("big", n=5000)).tool_messages
    assert message["content"] == "x" * 100 + "... [output truncated: 5000 characters, limit 100]"
    assert env.metrics()["outputs_truncated"] == 1


def test_async_tool():
    factory = user_env_factory(tools=[async_lookup])
    assert factory.call_tool(None, "async_lookup", {"key": "ab"}) == '{"key": "ab", "value": "AB"}'


@pytest.fixture()
def sandbox_funcs():
    """user_tool_funcs, imported from outside /tmp: the sandbox mounts a private /tmp, so a checkout under
    /tmp (a fresh clone in CI) would hide the module from the worker."""
    import importlib
    import shutil
    import sys
    import uuid
    from pathlib import Path

    source = Path(user_tool_funcs.__file__).resolve()
    if not str(source).startswith("/tmp/"):
        yield user_tool_funcs
        return
    name = f"sandbox_tool_funcs_{uuid.uuid4().hex[:8]}"
    folder = Path.home() / ".cache" / "pact-cotrain" / "test-tools" / name
    folder.mkdir(parents=True)
    shutil.copy(source, folder / f"{name}.py")
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop(name, None)
        shutil.rmtree(folder, ignore_errors=True)


def test_sandboxed_function_runs_in_the_worker(sandbox_funcs):
    user_tool_funcs = sandbox_funcs
    factory = user_env_factory(tools=[user_tool_funcs.add, user_tool_funcs.whoami, user_tool_funcs.explode],
                               sandbox=True, tool_timeout_s=20)
    assert factory.call_tool(None, "add", {"a": 2, "b": 40}) == "42"
    assert json.loads(factory.call_tool(None, "whoami", {}))["pid"] != os.getpid()
    assert factory.call_tool(None, "explode", {"reason": "nope"}) == "an error occurred when calling explode: nope"
    limited = user_env_factory(tools=[user_tool_funcs.nap, user_tool_funcs.long_text], sandbox=True,
                               tool_timeout_s=1, max_tool_output_chars=50)
    env = limited(task())
    env.reset(task())
    contents = [m["content"] for m in env.step(call("nap", seconds=30) + call("long_text", n=500)).tool_messages]
    assert contents == ["an error occurred when calling nap: timeout: the call did not finish within 1 s",
                        "y" * 50 + "... [output truncated: 500 characters, limit 50]"]
    metrics = env.metrics()
    assert metrics["tool_timeouts"] == 1 and metrics["tool_errors"] == 1 and metrics["outputs_truncated"] == 1
    limited.close()

    def nested(x: int) -> int:
        """A function defined inside another.

        Args:
            x: a value
        """
        return x

    with pytest.raises(UserToolError, match=r"sandbox=True: tool .*nested cannot run .*importable by module path"):
        user_env_factory(tools=[nested], sandbox=True)
    with pytest.raises(UserToolError, match=r"async_lookup cannot run .*async"):
        user_env_factory(tools=[async_lookup], sandbox=True)


# -- environment_factory ----------------------------------------------------------------------------


def test_environment_class_state_reset_string_and_reward():
    factory = user_env_factory(environment_factory=Counter)
    row = Task("t1", [{"role": "user", "content": "Reach the target."}], [],
               trace=[{"role": "assistant", "content": "secret plan"}], metadata={"target": 5, "level": "easy"})
    env = factory(row)
    messages, tools = env.reset(row)
    assert messages[-1]["content"] == "Reach the target. Target: 5."
    assert row.messages[-1]["content"] == "Reach the target."  # the task is left untouched
    assert [t["function"]["name"] for t in tools] == ["add"]  # reset, get_reward and _helper are not tools
    assert sorted(env.instance.row) == ["id", "level", "prompt", "target"]  # never the trace
    assert env.instance.row["prompt"] == row.messages
    assert env.step(call("add", amount=2) + call("add", amount=3)).tool_messages[1]["content"] == "total=5"
    assert env.metrics()["env_reward"] == env.metrics()["reward"] == 1.0
    other = factory(row)  # a fresh instance per episode: no state leaks between episodes
    other.reset(row)
    assert other.metrics()["env_reward"] == 0.0


def test_dict_of_factories_picks_by_environment_column():
    factory = user_env_factory(environment_factory={"counter": Counter, "shop": Shop}, tools=[multiply])
    assert factory.has_env_reward
    assert factory.tool_sources(task("s", environment="shop")) == [
        ("multiply", "function test_user_tools.multiply"), ("price", "environment Shop")]
    shop_task, counter_task = task("s", environment="shop"), task("c", environment="counter", target=1)
    assert [t["function"]["name"] for t in factory.tool_schemas(shop_task)] == ["multiply", "price"]
    assert [t["function"]["name"] for t in factory.tool_schemas(counter_task)] == ["multiply", "add"]
    env = factory(counter_task)
    env.reset(counter_task)
    assert "environment" not in env.instance.row  # a control column, as in TRL
    assert factory.call_tool(shop_task, "price", {"name": "book"}) == "12"
    with pytest.raises(UserToolError, match=r"task 'x': environment 'bank' is not among"):
        factory(task("x", environment="bank"))
    with pytest.raises(UserToolError, match=r"task 'y' has no `environment` column"):
        factory(task("y"))


def test_environment_state_bound_to_its_thread_works_across_steps():
    env = user_env_factory(environment_factory=Shop)(task())
    env.reset(task())
    assert [m["content"] for m in env.step(call("price", name="pen")).tool_messages] == ["2"]
    assert env.metrics()["reward"] == 0.5  # async get_reward
    with pytest.raises(sqlite3.ProgrammingError):  # the connection belongs to the episode's thread ...
        env.instance.price("book")
    assert env.run_in_episode(env.instance.price, "book") == "12"  # ... where code outside the rollout can reach it


def test_rows_naming_tools_nothing_runs_are_refused():
    factory = user_env_factory(tools=[multiply])
    ghost = {"type": "function", "function": {"name": "divide", "parameters": {"type": "object", "properties": {}}}}
    with pytest.raises(UserToolError, match=r"task 'g': tools\[0\] 'divide' is offered by the row but no tool"):
        factory(task("g")).reset(Task("g", task().messages, [ghost]))
    traced = Task("h", task().messages, [], trace=[{"role": "assistant", "content": "",
                                                    "tool_calls": [{"name": "divide", "arguments": {}}]}])
    with pytest.raises(UserToolError, match=r"task 'h': trace\[0\].tool_calls\[0\] calls 'divide'"):
        factory.check_task(traced)
    bad_args = Task("k", task().messages, [], trace=[{"role": "assistant", "content": "",
                                                      "tool_calls": [{"name": "multiply", "arguments": {"a": 2}}]}])
    with pytest.raises(UserToolError, match=r"task 'k': trace\[0\].tool_calls\[0\].arguments: missing required key 'b'"):
        factory.check_task(bad_args)
    factory.check_task(Task("ok", task().messages, [], trace=[{"role": "assistant", "content": "", "tool_calls": [
        {"name": "multiply", "arguments": {"a": 2, "b": 3}}]}]))


def test_bad_environments_are_refused_in_one_line():
    class NoReset:
        def act(self, x: int) -> int:
            """Act.

            Args:
                x: a value
            """
            return x

    class BadReward(Counter):
        def get_reward(self):
            return float("nan")

    with pytest.raises(UserToolError, match="NoReset has no `reset` method"):
        user_env_factory(environment_factory=NoReset)
    env = user_env_factory(environment_factory=BadReward)(task("n"))
    env.reset(task("n"))
    with pytest.raises(UserToolError, match=r"task 'n': .*BadReward.get_reward returned nan, which is not finite"):
        env.metrics()


# -- through the rollout engine ---------------------------------------------------------------------


class ScriptedBackend:
    """Stands in for the model: every episode writes the same turns (token ids of the given texts)."""

    def __init__(self, tokenizer, texts):
        self.turns = [tokenizer.encode(t, add_special_tokens=False) + [tokenizer.eos_token_id] for t in texts]
        self.fed = []

    def generate(self, prompts, max_new_tokens, temperature, top_p, greedy):
        self.fed.append([list(p) for p in prompts])
        n = len(self.fed) - 1
        return [TurnOutput(list(self.turns[min(n, len(self.turns) - 1)]), [0.0] * len(self.turns[0]), True)
                for _ in prompts]


_log_lock = threading.Lock()


class Timed:
    """Records when each of its tool calls starts and ends."""

    log: list = []
    resets: list = []

    def reset(self, **row):
        start = time.monotonic()
        time.sleep(0.2)  # e.g. loading a database
        with _log_lock:
            Timed.resets.append((start, time.monotonic()))

    def wait(self, seconds: float) -> str:
        """Wait a while.

        Args:
            seconds: how long
        """
        start = time.monotonic()
        time.sleep(seconds)
        with _log_lock:
            Timed.log.append((start, time.monotonic()))
        return "done waiting"


def test_episodes_step_concurrently_and_tokens_stay_exact(tokenizer):
    Timed.log, Timed.resets = [], []
    factory = user_env_factory(environment_factory=Timed)
    texts = ["I will wait. " + call("wait", seconds=0.3), "Finished."]
    backend = ScriptedBackend(tokenizer, texts)
    engine = RolloutEngine(None, tokenizer, factory, SamplingConfig(max_new_tokens_per_turn=200,
                                                                    max_completion_tokens=1000), backend=backend)
    episodes = engine.rollout([task("a"), task("b")], k=4)
    assert len(Timed.log) == 8
    # All 8 calls were in flight at once: each started before any ended.
    assert max(start for start, _ in Timed.log) < min(end for _, end in Timed.log)
    assert len(Timed.resets) == 8 and max(s for s, _ in Timed.resets) < min(e for _, e in Timed.resets)  # resets too
    for ep in episodes:
        assert ep.stop_reason == "done" and ep.metrics["n_calls"] == 1
        assert ep.messages[-2] == {"role": "tool", "name": "wait", "content": "done waiting"}
        # Token-exact: the ids the backend was fed last are the episode's ids up to the last turn.
        full = ep.prompt_ids + ep.completion_ids
        last_turn = backend.turns[1]
        assert full[-len(last_turn):] == last_turn
        assert any(full[:-len(last_turn)] == fed for fed in backend.fed[1])
        s, e = ep.turn_spans[0]
        assert ep.completion_ids[s:e] == backend.turns[0]


def test_full_rollout_with_a_tiny_model(model, tokenizer):
    factory = user_env_factory(tools=[multiply], environment_factory=Counter)
    engine = RolloutEngine(model, tokenizer, factory, SamplingConfig(max_new_tokens_per_turn=16,
                                                                     max_completion_tokens=120, max_turns=3))
    episodes = engine.rollout([task("r", target=3)], k=3, seed=0)
    assert len(episodes) == 3
    for ep in episodes:
        assert ep.env_tools and {t["function"]["name"] for t in ep.env_tools} == {"multiply", "add"}
        assert ep.env_messages[-1]["content"].endswith(" Target: 3.")
        assert {"reward", "env_reward", "n_calls", "format_errors", "tool_errors", "tool_timeouts"} <= set(ep.metrics)
        assert ep.reward == ep.metrics["env_reward"] == 0.0  # random text never adds up to 3
