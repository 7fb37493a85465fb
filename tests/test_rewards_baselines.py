"""Hand-computed cases for the ToolRL and MatchTIR baseline rewards and their call helpers."""

import itertools
import random

import pytest

from pact_cotrain.rewards.calls import (
    gold_turns_from_trace,
    multiset_jaccard,
    optimal_assignment,
    value_match,
)
from pact_cotrain.data.trace_format import Task
from pact_cotrain.envs.parsing import format_tool_call
from pact_cotrain.rewards.episode import EpisodeReward
from pact_cotrain.rewards.matchtir import (
    answer_f1,
    call_similarity,
    dual_level_advantages,
    match_calls,
    matchtir_rewards,
    turn_level_returns,
)
from pact_cotrain.rewards.toolrl import toolrl_reward, toolrl_turn_correctness, toolrl_turn_format
from pact_cotrain.rollout.engine import Episode

approx = pytest.approx


def c(name, **arguments):
    return {"name": name, "arguments": arguments}


# ----------------------------------------------------------------------------- helpers


def test_value_match_normalisation():
    assert value_match("  New   York ", "new york")
    assert not value_match("New York", "New Jersey")
    assert value_match(3, 3.0) and value_match(3, "3.0") and value_match("3", "3.00")
    assert not value_match(3, 4) and not value_match(3, "three")
    assert value_match(True, "TRUE") and not value_match(True, 1) and not value_match(False, True)
    assert value_match(None, None) and not value_match(None, "")
    assert value_match({"a": [1, "X "], "b": {"c": 2.0}}, {"b": {"c": 2}, "a": [1.0, "x"]})
    assert not value_match({"a": 1}, {"a": 1, "b": 2})
    assert not value_match([1, 2], [2, 1])  # lists are ordered
    assert not value_match([1], [1, 1])


def test_gold_turns_from_trace_keeps_final_answer_turn():
    trace = [
        {"role": "assistant", "content": "", "tool_calls": [{"name": "a", "arguments": {"x": 1}, "id": "c1"}]},
        {"role": "tool", "content": "out", "tool_call_id": "c1"},
        {"role": "assistant", "content": "", "tool_calls": [c("b", y=2), c("c")]},
        {"role": "tool", "content": "o1", "name": "b"},
        {"role": "tool", "content": "o2", "name": "c"},
        {"role": "assistant", "content": "The answer."},
    ]
    assert gold_turns_from_trace(trace) == [[c("a", x=1)], [c("b", y=2), c("c")], []]


def test_multiset_jaccard():
    assert multiset_jaccard([], []) == 1.0
    assert multiset_jaccard(["a"], []) == 0.0
    assert multiset_jaccard(["a", "a"], ["a"]) == approx(1 / 2)
    assert multiset_jaccard(["a", "b"], ["b", "c"]) == approx(1 / 3)


def test_optimal_assignment_matches_brute_force():
    rng = random.Random(0)
    for n, m in [(1, 1), (2, 3), (3, 2), (3, 3), (4, 3), (2, 4), (4, 4)]:
        for _ in range(5):
            s = [[rng.choice([0.0, 0.25, 0.5, 1.0, rng.random()]) for _ in range(m)] for _ in range(n)]
            pairs = optimal_assignment(s)
            assert len(pairs) == min(n, m)
            assert len({i for i, _ in pairs}) == len({j for _, j in pairs}) == len(pairs)
            if n <= m:
                best = max(sum(s[i][p[i]] for i in range(n)) for p in itertools.permutations(range(m), n))
            else:
                best = max(sum(s[p[j]][j] for j in range(m)) for p in itertools.permutations(range(n), m))
            assert sum(s[i][j] for i, j in pairs) == approx(best)
    assert optimal_assignment([]) == [] and optimal_assignment([[]]) == []


# ----------------------------------------------------------------------------- ToolRL


def test_toolrl_perfect_match():
    gold = [[c("search", q="x", k=5), c("weather", city="Paris")]]
    out = toolrl_reward([[c("weather", city="paris"), c("search", k=5.0, q="X")]], gold)
    assert out["correctness"] == approx(3.0) and out["format"] == 1.0 and out["reward"] == approx(4.0)


def test_toolrl_wrong_tool_name():
    # r_name = 0, nothing matched, S_max = 1 + 1 + 1 = 3 -> 6*0/3 - 3
    out = toolrl_reward([[c("lookup", q="x")]], [[c("search", q="x")]])
    assert out["correctness"] == approx(-3.0) and out["reward"] == approx(-2.0)


def test_toolrl_right_name_wrong_params():
    # r_name 1, keys J({q,k},{q,n}) = 1/3, values 0: R_max = 4/3, S_max = 4 -> 6*(4/3)/4 - 3 = -1
    d = toolrl_turn_correctness([c("search", q="y", n=5)], [c("search", q="x", k=5)])
    assert (d["r_name"], d["r_param"], d["r_value"], d["s_max"]) == approx((1, 1 / 3, 0, 4))
    assert d["correctness"] == approx(-1.0)
    # right keys, one value right: R_max = 1 + 1 + 1 = 3 -> 6*3/4 - 3 = 1.5
    assert toolrl_turn_correctness([c("search", q=" X", k="6")], [c("search", q="x", k=5)])["correctness"] == approx(1.5)


def test_toolrl_extra_and_missing_calls():
    # extra: r_name = J({a},{a,b}) = 1/2, pair a-a gives 1 + 1: R_max = 2.5, S_max = 3 -> 2
    assert toolrl_reward([[c("a", x=1), c("b", y=2)]], [[c("a", x=1)]])["correctness"] == approx(2.0)
    # missing: r_name = 1/2, R_max = 2.5, S_max = 1 + 2 + 2 = 5 -> 0
    assert toolrl_reward([[c("a", x=1)]], [[c("a", x=1), c("b", y=2)]])["correctness"] == approx(0.0)
    # a repeated call: names {a,a} vs {a}: r_name = 1/2 -> same as the extra call
    assert toolrl_reward([[c("a", x=1), c("a", x=1)]], [[c("a", x=1)]])["correctness"] == approx(2.0)


def test_toolrl_empty_predictions():
    assert toolrl_reward([[]], [[c("a", x=1)]])["correctness"] == approx(-3.0)
    out = toolrl_reward([], [[c("a", x=1)], []])  # nothing predicted at all
    assert out["format"] == 0.0 and out["correctness"] == approx(-3.0) and out["reward"] == approx(-3.0)


def test_toolrl_no_gold_call_scores_zero_correctness_as_released():
    """Released rlla.py: `if "<tool_call>" not in ans: reward = 0.0` (its +3/-3 branch is commented out), so a
    gold trajectory without calls gives correctness 0 whether the policy calls or not; only the format varies."""
    assert toolrl_reward([[]], [[]])["correctness"] == 0.0  # answering when gold answers
    assert toolrl_reward([[c("a", x=1)], []], [[]])["correctness"] == 0.0  # calling when gold answers
    assert toolrl_reward([[c("a", x=1)]], [[]], parse_ok=[False])["correctness"] == 0.0  # even unparsable
    assert toolrl_reward([], [])["reward"] == 0.0  # no predicted turn: format 0, correctness 0
    out = toolrl_reward([[]], [[], []], turn_format=[True])
    assert out["reward"] == approx(1.0) and out["format"] == 1.0


def test_toolrl_order_invariant_and_optimal_matching():
    gold = [[c("a", x=1), c("a", x=2), c("b", y=3)]]
    assert toolrl_reward([[c("b", y=3), c("a", x=2), c("a", x=1)]], gold)["correctness"] == approx(3.0)
    # greedy (gold order, first best) would pair g1-p1 (2) then g2-p2 (1): total 3; optimal is 2 + 3
    gold = [c("a", x=1, y=1), c("a", x=1, y=2)]
    pred = [c("a", x=1, y=2), c("a", x=9, y=1)]
    d = toolrl_turn_correctness(pred, gold)
    assert d["r_param"] + d["r_value"] == approx(5.0)
    assert d["correctness"] == approx(6 * 6 / 7 - 3)  # R_max = 1 + 5, S_max = 1 + 2 + 4
    assert toolrl_turn_correctness(pred[::-1], gold[::-1])["correctness"] == approx(d["correctness"])


def test_toolrl_right_answer_spread_over_turns_scores_full():
    # The case: gold calls a then b in two turns, the policy makes both in one turn. Pooled
    # over the trajectory: r_name 1, r_param 2, r_value 2 = S_max 5 -> R_correct 3, format 1 -> 4.
    gold = [[c("a", x=1)], [c("b", y=2)], []]
    out = toolrl_reward([[c("b", y=2), c("a", x=1)], []], gold)
    assert out["correctness"] == approx(3.0) and out["format"] == 1.0 and out["reward"] == approx(4.0)
    # and the other way round: gold in one turn, the policy over three
    out = toolrl_reward([[c("a", x=1)], [c("b", y=2)], []], [[c("a", x=1), c("b", y=2)], []])
    assert out["reward"] == approx(4.0)


def test_toolrl_extra_call_over_the_trajectory():
    # extra c: r_name = J({a,c},{a}) = 1/2, pair a-a 1 + 1: R_max 2.5, S_max 3 -> 6*2.5/3 - 3 = 2
    out = toolrl_reward([[c("a", x=1)], [c("c", z=1)], []], [[c("a", x=1)], []])
    assert out["correctness"] == approx(2.0) and out["reward"] == approx(3.0)


def test_toolrl_wrong_call_over_the_trajectory():
    # wrong value: r_name 1, r_param 1, r_value 0: R_max 2, S_max 3 -> 1; format 1 -> 2
    assert toolrl_reward([[c("a", x=2)], []], [[c("a", x=1)], []])["reward"] == approx(2.0)
    # wrong tool: nothing matched -> -3, format 1 -> -2
    assert toolrl_reward([[c("d", x=1)], []], [[c("a", x=1)], []])["reward"] == approx(-2.0)


def test_toolrl_format_and_parse_flags():
    gold = [[c("a", x=1)], []]
    pred = [[c("a", x=1)], []]
    # one of two turns breaks the layout: format 1/2, correctness still 3
    out = toolrl_reward(pred, gold, turn_format=[True, False])
    assert out["format"] == approx(0.5) and out["reward"] == approx(3.5)
    # an unparsable call block anywhere: minimum correctness (strict), or score what parsed
    assert toolrl_reward(pred, gold, parse_ok=[False, True])["correctness"] == approx(-3.0)
    assert toolrl_reward(pred, gold, parse_ok=[False, True], strict_format=False)["correctness"] == approx(3.0)
    with pytest.raises(ValueError):
        toolrl_reward(pred, gold, turn_format=[True])


CALL = format_tool_call("a", {"x": 1})


@pytest.mark.parametrize("text, ok", [
    (f"<think>\nlook it up\n</think>\n{CALL}", True),               # think, then a call
    (f"<think>\nplan\n</think>\n{CALL}\n{CALL}", True),             # several calls
    (f"<think>\nplan\n</think>\nLet me check.\n{CALL}", True),     # text before the calls (template)
    ("<think>\ndone\n</think>\nParis", True),                      # think, then the answer
    (f"{CALL}", False),                                               # no think
    ("Paris", False),
    ("<think>\ndone\n</think>\n", False),                          # no call and no answer
    (f"<think>\nplan\n</think>\n{CALL}\nand more", False),         # text after a call
    (f"<think>a</think><think>b</think>\n{CALL}", False),            # two think blocks
    (f"x <think>a</think>\n{CALL}", False),                          # text before think
    ("<think>\nplan\n</think>\n<tool_call>\n{\"name\": \"a\", \n</tool_call>", False),  # bad JSON
])
def test_toolrl_turn_format(text, ok):
    assert toolrl_turn_format(text) is ok


# ----------------------------------------------------------------------------- MatchTIR


def test_matchtir_similarity():
    assert call_similarity(c("a", x=1, y="u"), c("A ", y="U", x=1.0)) == approx(1.0)
    assert call_similarity(c("b", x=1), c("a", x=1)) == 0.0
    # (1 + J({q,n},{q,k}) = 1/3 + 0 values) / (2 + 2)
    assert call_similarity(c("s", q="y", n=5), c("s", q="x", k=5)) == approx(1 / 3)
    assert call_similarity(c("s"), c("s")) == approx(1.0)  # (1 + 1 + 0) / 2


def test_matchtir_perfect_match():
    gold = [[c("a", x=1)], [c("b", y=2), c("c", z=3)], []]
    out = matchtir_rewards(gold, gold)
    # R_proc = 3/3; no outcome given
    assert out["turn_rewards"] == approx([1.0, 1.0, 0.0]) and out["reward"] == approx(1.0)
    assert (out["matched"], out["precision"], out["recall"], out["f1"]) == (3, 1.0, 1.0, 1.0)


def test_matchtir_wrong_tool_name():
    out = matchtir_rewards([[c("d", x=1)], []], [[c("a", x=1)], []])
    assert out["turn_rewards"] == [0.0, 0.0] and out["matched"] == 0
    assert out["precision"] == 0.0 and out["recall"] == 0.0 and out["f1"] == 0.0
    assert matchtir_rewards([[c("d", x=1)], []], [[c("a", x=1)], []], unmatched_penalty=-0.5)["turn_rewards"] == [-0.5, 0.0]


def test_matchtir_right_name_wrong_params():
    out = matchtir_rewards([[c("a", x=2)]], [[c("a", x=1)]])  # (1 + 1 + 0) / 3
    assert out["turn_rewards"] == approx([2 / 3]) and out["matched"] == 1


def test_matchtir_extra_calls():
    out = matchtir_rewards([[c("a", x=1), c("b", y=1)]], [[c("a", x=1)]])
    assert out["turn_rewards"] == approx([0.5]) and out["precision"] == 0.5 and out["recall"] == 1.0
    assert matchtir_rewards([[c("a", x=1), c("b", y=1)]], [[c("a", x=1)]], unmatched_penalty=-0.5)["turn_rewards"] == approx([0.25])
    # a repeated call in a later turn: the first occurrence gets the credit, the repeat is redundant
    out = matchtir_rewards([[c("a", x=1)], [c("a", x=1)], []], [[c("a", x=1)], []])
    assert out["turn_rewards"] == approx([1.0, 0.0, 0.0]) and out["matched"] == 1


def test_matchtir_missing_calls_and_empty_predictions():
    gold = [[c("a", x=1)], [c("b", y=2)], []]
    out = matchtir_rewards([[c("a", x=1)], []], gold)
    assert out["turn_rewards"] == approx([1.0, 0.0]) and out["reward"] == approx(0.5)  # 1 / max(1, 2)
    assert out["precision"] == 1.0 and out["recall"] == 0.5
    out = matchtir_rewards([], gold)
    assert out["turn_rewards"] == [] and out["reward"] == 0.0 and out["matched"] == 0
    assert out["precision"] == 0.0 and out["recall"] == 0.0
    out = matchtir_rewards([[]], [[]])
    assert out["turn_rewards"] == [0.0] and out["precision"] == 1.0 and out["recall"] == 1.0
    assert out["reward"] == 1.0  # nothing to call, nothing called


def test_matchtir_order_invariance():
    gold = [[c("a", x=1), c("b", y=2), c("a", x=3)]]
    base = matchtir_rewards([[c("a", x=1), c("b", y=2), c("a", x=3)]], gold)
    for perm in itertools.permutations(gold[0]):
        out = matchtir_rewards([list(perm)], gold)
        assert out["turn_rewards"] == approx(base["turn_rewards"])
        assert out["turn_rewards"] == approx([1.0])
    # matching is over the whole trajectory: calls done in another turn than gold still match
    out = matchtir_rewards([[c("b", y=2)], [c("a", x=1)]], [[c("a", x=1)], [c("b", y=2)]])
    assert out["turn_rewards"] == approx([1.0, 1.0])
    pairs = match_calls([c("a", x=3), c("a", x=1)], [c("a", x=1), c("a", x=3)])
    assert [(i, j) for i, j, _ in pairs] == [(0, 1), (1, 0)]


def test_matchtir_outcome_reward_on_answer_turn():
    out = matchtir_rewards([[c("a", x=1)], []], [[c("a", x=1)], []], outcome_reward=0.8)
    assert out["turn_rewards"] == approx([1.0, 0.8]) and out["reward"] == approx(1.8)
    # no answer turn (trajectory cut while calling): no outcome reward
    assert matchtir_rewards([[c("a", x=1)]], [[c("a", x=1)], []], outcome_reward=0.8)["turn_rewards"] == approx([1.0])


def test_turn_level_returns():
    assert turn_level_returns([1.0, 0.0, 0.5]) == approx([1.5, 0.5, 0.5])
    assert turn_level_returns([1.0, 0.0, 0.5], gamma=0.5) == approx([1.125, 0.25, 0.5])
    assert turn_level_returns([]) == []


def test_dual_level_advantages():
    s = 2**-0.5  # group of two: (x - mean) / sample std = +-1/sqrt(2)
    adv = dual_level_advantages([[1.0, 0.0], [0.0, 0.0]], gamma=1.0, eps=1e-12)
    assert adv[0] == approx([s, s / 2]) and adv[1] == approx([-s, -s / 2])
    # a turn index only one trajectory reaches uses mean 0, std 1 (released code)
    adv = dual_level_advantages([[1.0, 0.0, 0.5], [0.0, 0.0]], gamma=1.0, eps=1e-12)
    assert adv[0][2] == approx((s + 0.5) / 2)


# ------------------------------------------------------ MatchTIR: reward and advantage of the paper


def test_matchtir_right_answer_spread_over_turns_scores_the_same():
    # The case: the same 3 exact calls in one turn or over three, then a right answer.
    # R = R_proc + R_out = 3/3 + 1 in both (the released sum of turn rewards gave 2 and 4).
    gold = [[c("a", x=1), c("b", y=2), c("c", z=3)], []]
    one = matchtir_rewards([[c("a", x=1), c("b", y=2), c("c", z=3)], []], gold, outcome_reward=1.0)
    three = matchtir_rewards([[c("a", x=1)], [c("b", y=2)], [c("c", z=3)], []], gold, outcome_reward=1.0)
    assert one["reward"] == approx(2.0) and three["reward"] == approx(2.0)
    assert one["turn_rewards"] == approx([1.0, 1.0]) and three["turn_rewards"] == approx([1.0, 1.0, 1.0, 1.0])


def test_matchtir_extra_and_wrong_calls_lower_the_trajectory_reward():
    gold = [[c("a", x=1)], []]
    # an extra (unmatched) call in its own turn: R_proc = (1 + 0) / max(2, 1), outcome 1
    extra = matchtir_rewards([[c("a", x=1)], [c("d", w=0)], []], gold, outcome_reward=1.0)
    assert extra["turn_rewards"] == approx([1.0, 0.0, 1.0]) and extra["reward"] == approx(1.5)
    # a wrong value: S = (1 + 1 + 0) / (2 + 1) = 2/3, outcome 0
    wrong = matchtir_rewards([[c("a", x=2)], []], gold, outcome_reward=0.0)
    assert wrong["reward"] == approx(2 / 3) and wrong["process"] == approx(2 / 3)


def test_answer_f1():
    assert answer_f1("Paris is the capital.", "The capital is Paris") == approx(1.0)
    assert answer_f1("Paris", "The capital is Paris!") == approx(2 * 0.25 / 1.25)  # P 1, R 1/4
    assert answer_f1("", "Paris") == 0.0 and answer_f1("Lyon", "Paris") == 0.0


def _episode(texts: list[str]) -> Episode:
    messages = [{"role": "user", "content": "q"}]
    for i, text in enumerate(texts):
        messages.append({"role": "assistant", "content": text})
        if i < len(texts) - 1:
            messages.append({"role": "tool", "content": "result"})
    return Episode("t", 0, [], [], [], [], [], messages)


TRACE = [{"role": "assistant", "reasoning": "look up", "content": "",
          "tool_calls": [{"name": "a", "arguments": {"x": 1}}]},
         {"role": "tool", "content": "result"},
         {"role": "assistant", "reasoning": "done", "content": "The capital is Paris"}]
TOOLS = [{"type": "function", "function": {"name": "a", "description": "", "parameters": {
    "type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}}]
TASK = Task("t", [{"role": "user", "content": "q"}], TOOLS, TRACE)


def test_episode_matchtir_reward_has_the_outcome_term():
    # right call + a partly right answer: R = 1 + F1("Paris", gold) = 1 + 0.4
    ep = _episode([f"<think>\nlook up\n</think>\n{CALL}", "<think>\ndone\n</think>\nParis"])
    out = EpisodeReward("matchtir").score(ep, TASK)
    assert out["outcome"] == approx(0.4) and out["reward"] == approx(1.4)
    assert out["turn_rewards"] == approx([1.0, 0.4])


def test_episode_toolrl_reward_checks_the_layout():
    good = _episode([f"<think>\nlook up\n</think>\n{CALL}", "<think>\ndone\n</think>\nParis"])
    assert EpisodeReward("toolrl").score(good, TASK)["reward"] == approx(4.0)
    # the same calls without <think>: the parser finds no error, but the layout is not ToolRL's
    bare = _episode([CALL, "Paris"])
    out = EpisodeReward("toolrl").score(bare, TASK)
    assert out["format"] == 0.0 and out["reward"] == approx(3.0)


def test_dual_level_advantage_uses_the_trajectory_reward():
    # one turn of 3 calls vs three turns of 1 (plus the answer turn, outcome 1): same R = 2, so
    # A_traj = 0 for both; the turn term keeps the released discounted returns (gamma 0.9).
    turns = [[1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]
    adv = dual_level_advantages(turns, [2.0, 2.0], gamma=0.9, eps=1e-12)
    # turn 0 returns 1.9 vs 3.439, turn 1 1.0 vs 2.71: z = -+1/sqrt(2); turns 2, 3: one member (mean 0, std 1)
    s = 2**-0.5
    assert adv[0] == approx([-s / 2, -s / 2]) and adv[1] == approx([s / 2, s / 2, 1.9 / 2, 1.0 / 2])
    with pytest.raises(ValueError):
        dual_level_advantages(turns, [2.0])
