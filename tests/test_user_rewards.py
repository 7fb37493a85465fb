"""Generic trace rewards (rewards/generic.py) and TRL-convention reward functions (rewards/user.py),
on hand-computed values."""

import math

import pytest
import torch

from pact_cotrain.data.trace_format import Task
from pact_cotrain.rewards.generic import answer_exact_match, answer_match, trace_match
from pact_cotrain.rewards.user import RewardFaultError, RewardFunctions, fill_lost_rewards, reward_metrics
from pact_cotrain.rollout.engine import Episode

TRACE = [
    {"role": "assistant", "content": "", "tool_calls": [{"name": "get_weather", "arguments": {"city": "Paris"}}]},
    {"role": "tool", "name": "get_weather", "content": "sunny"},
    {"role": "assistant", "content": "It is sunny in Paris."},
]


def call(name, **arguments):
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_trace_match_is_matchtirs_process_reward():
    exact = [{"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="paris ")]},
             {"role": "tool", "name": "get_weather", "content": "sunny"},
             {"role": "assistant", "content": "Sunny."}]
    # an extra, unmatched call: s = [1, 0], max(m, n) = 2 -> 0.5
    extra = [{"role": "assistant", "content": "", "tool_calls": [call("get_weather", city="Paris"),
                                                                   call("get_time", city="Paris")]}]
    # right tool, wrong value: (1 + 1 + 0) / (2 + 1) = 2/3
    wrong_value = [{"role": "assistant", "content": '<tool_call>\n{"name": "get_weather", "arguments": '
                                                    '{"city": "Rome"}}\n</tool_call>'}]
    nothing = [{"role": "assistant", "content": "I don't know."}]
    values = trace_match(prompts=[[]] * 5, completions=[exact, extra, wrong_value, nothing, nothing],
                         trace=[TRACE, TRACE, TRACE, TRACE, None])
    assert values[:4] == [pytest.approx(1.0), pytest.approx(0.5), pytest.approx(2 / 3), 0.0]
    assert values[4] is None  # no trace: not applicable


def test_answer_match_token_f1_and_exact_match():
    answers = ["Sunny in Paris!", "it is SUNNY in paris", '<tool_call>\n{"name": "x", "arguments": {}}\n</tool_call>']
    completions = [[{"role": "assistant", "content": a}] for a in answers]
    # {sunny, in, paris} vs {it, is, sunny, in, paris}: P = 1, R = 3/5, F1 = 0.75
    assert answer_match([[]] * 3, completions, trace=[TRACE] * 3) == [pytest.approx(0.75), 1.0, 0.0]
    assert answer_exact_match([[]] * 3, completions, trace=[TRACE] * 3) == [0.0, 1.0, 0.0]
    assert answer_match([[]], ["<think>hm</think>It is sunny in Paris"], trace=[None]) == [None]
    assert answer_match([[]], ["<think>hm</think>It is sunny in Paris"], trace=[TRACE]) == [1.0]


def episode(task_id, text, sample=0):
    prompt = [{"role": "user", "content": "weather?"}]
    return Episode(task_id, sample, [1], [2, 3], [0.0, 0.0], [1, 1], [(0, 2)],
                   prompt + [{"role": "assistant", "content": text}], env_messages=prompt, env_tools=[],
                   metrics={"reward": 0.0})


def task(task_id, **metadata):
    return Task(task_id, [{"role": "user", "content": "weather?"}], [], TRACE, metadata)


def test_reward_functions_follow_trls_convention():
    seen = {}

    def length(prompts, completions, completion_ids, answer, trainer_state, **kwargs):
        seen.update(prompts=prompts, completions=completions, answer=answer, ids=kwargs["id"], state=trainer_state)
        return [float(len(c[-1]["content"])) for c in completions]

    async def only_first(prompts, completions, **kwargs):  # async, None = not applicable
        return [1.0 if i == 0 else None for i in range(len(prompts))]

    rewards = RewardFunctions([length, only_first], weights=[0.5, 2.0])
    episodes = [episode("a", "abcd"), episode("b", "ab")]
    scored = rewards.score_episodes(episodes, [task("a", answer="x"), task("b", answer="y")], trainer_state="S")
    assert [s["reward"] for s in scored] == [0.5 * 4 + 2.0, 0.5 * 2]  # None left out of the sum
    assert math.isnan(scored[1]["rewards/only_first"])
    assert seen["answer"] == ["x", "y"] and seen["ids"] == ["a", "b"] and seen["state"] == "S"
    assert seen["prompts"][0] == [{"role": "user", "content": "weather?"}]
    assert seen["completions"][0] == [{"role": "assistant", "content": "abcd"}]
    assert reward_metrics(scored)["rewards/length/mean"] == 3.0
    assert reward_metrics(scored)["rewards/only_first/mean"] == 1.0


def test_completions_carry_parsed_tool_calls():
    seen = []
    rewards = RewardFunctions([lambda prompts, completions, **kw: seen.extend(completions) or [0.0]])
    text = '<think>plan</think>ok <tool_call>\n{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'
    rewards.score_episodes([episode("a", text)], [task("a")])
    assert seen[0] == [{"role": "assistant", "content": "ok", "reasoning_content": "plan",
                        "tool_calls": [call("get_weather", city="Oslo")]}]


def test_a_raising_or_non_finite_reward_loses_only_its_episodes_with_one_line():
    lines = []

    def picky(prompts, completions, id, **kwargs):
        if any("bad" in i for i in id):
            raise ZeroDivisionError("division by zero")
        return [1.0] * len(prompts)

    def nan_for_c(prompts, completions, id, **kwargs):
        return [math.nan if i == "c" else 0.5 for i in id]

    rewards = RewardFunctions([picky, nan_for_c], log=lines.append)
    tasks = [task("a"), task("bad1"), task("c"), task("d")]
    scored = rewards.score_episodes([episode(t.id, "x") for t in tasks], tasks)
    values = [s["reward"] for s in scored]
    assert values[0] == 1.5 and values[3] == 1.5
    assert math.isnan(values[1]) and math.isnan(values[2])  # lost, not 0
    assert scored[0]["reward/lost_episodes"] == 2.0 and rewards.lost_total == 2
    assert len(lines) == 2
    assert "'picky'" in lines[0] and "task bad1" in lines[0] and "ZeroDivisionError" in lines[0]
    assert "'nan_for_c'" in lines[1] and "task c" in lines[1] and "not a finite number" in lines[1]
    assert all("\n" not in line for line in lines)


def test_every_episode_lost_stops_the_run_naming_task_and_function():
    def broken(prompts, completions, **kwargs):
        raise KeyError("answer")

    with pytest.raises(RewardFaultError, match=r"task a: reward function 'broken' raised KeyError"):
        RewardFunctions([broken], log=lambda line: None).score_episodes([episode("a", "x")], [task("a")])


def test_a_batch_call_of_the_wrong_length_is_retried_per_sample():
    rewards = RewardFunctions([lambda prompts, completions, **kw: [1.0]], log=lambda line: None)
    tasks = [task("a"), task("b")]
    # the batch call returns 1 value for 2 samples; per sample each call returns 1: both kept
    scored = rewards.score_episodes([episode("a", "x"), episode("b", "x")], tasks)
    assert [s["reward"] for s in scored] == [1.0, 1.0]


def test_env_reward_joins_with_weight_one():
    ep = episode("a", "x")
    ep.metrics["env_reward"] = 0.25
    scored = RewardFunctions([lambda prompts, completions, **kw: [1.0]], env_reward=True).score_episodes(
        [ep], [task("a")])
    assert scored[0]["reward"] == 1.25 and scored[0]["rewards/env_reward"] == 0.25


def test_lost_rewards_take_their_groups_mean():
    rewards = torch.tensor([1.0, float("nan"), 3.0, float("nan"), float("nan"), 2.0])
    filled, lost = fill_lost_rewards(rewards, 3)
    assert filled.tolist() == [1.0, 2.0, 3.0, 2.0, 2.0, 2.0]
    assert lost.tolist() == [False, True, False, True, True, False]
