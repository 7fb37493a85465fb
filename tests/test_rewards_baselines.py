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
from pact_cotrain.rewards.matchtir import (
    call_similarity,
    dual_level_advantages,
    match_calls,
    matchtir_rewards,
    turn_level_returns,
)
from pact_cotrain.rewards.toolrl import toolrl_reward, toolrl_turn_correctness

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
    assert toolrl_reward([[]], [[]])["correctness"] == approx(3.0)  # answering when gold answers
    out = toolrl_reward([], [[c("a", x=1)], []])  # nothing predicted at all
    assert out["format"] == 0.0 and out["correctness"] == approx(-3.0) and out["reward"] == approx(-3.0)
    assert toolrl_reward([], [])["reward"] == 0.0


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


def test_toolrl_multi_turn_and_format():
    gold = [[c("a", x=1)], [c("b", y=2)], []]
    pred = [[c("a", x=1)], [c("b", y=3)], []]
    # turn 0: 3; turn 1: R_max 2, S_max 3 -> 1; turn 2 malformed -> -3 (strict)
    out = toolrl_reward(pred, gold, format_ok=[True, True, False])
    assert out["turn_correctness"] == approx([3.0, 1.0, -3.0])
    assert out["format"] == approx(2 / 3) and out["correctness"] == approx(1 / 3) and out["reward"] == approx(1.0)
    lenient = toolrl_reward(pred, gold, format_ok=[True, True, False], strict_format=False)
    assert lenient["turn_correctness"] == approx([3.0, 1.0, 3.0]) and lenient["reward"] == approx(7 / 3 + 2 / 3)
    with pytest.raises(ValueError):
        toolrl_reward(pred, gold, format_ok=[True])


def test_toolrl_multi_turn_length_mismatch():
    gold = [[c("a", x=1)], [c("b", y=2)], []]
    # stops early: turn 1 answers instead of calling b (-3), turn 2 missing (-3, format 0)
    out = toolrl_reward([[c("a", x=1)], []], gold)
    assert out["turn_correctness"] == approx([3.0, -3.0, -3.0]) and out["turn_format"] == [1.0, 1.0, 0.0]
    assert out["reward"] == approx(2 / 3 - 1)
    # runs long: turn 1 calls where gold answers (-3), turn 2 is extra (-3, format kept)
    out = toolrl_reward([[c("a", x=1)], [c("a", x=1)], []], [[c("a", x=1)], []])
    assert out["turn_correctness"] == approx([3.0, -3.0, -3.0]) and out["reward"] == approx(1 - 1)
    # released-code behaviour for no-call gold turns: correctness 0 whatever is predicted
    out = toolrl_reward([[c("a", x=1)], [c("b")]], [[c("a", x=1)], []], score_no_call_turns=False)
    assert out["turn_correctness"] == approx([3.0, 0.0])


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
    assert out["turn_rewards"] == approx([1.0, 1.0, 0.0]) and out["reward"] == approx(2.0)
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
    assert out["turn_rewards"] == approx([1.0, 0.0]) and out["reward"] == approx(1.0)
    assert out["precision"] == 1.0 and out["recall"] == 0.5
    out = matchtir_rewards([], gold)
    assert out["turn_rewards"] == [] and out["reward"] == 0.0 and out["matched"] == 0
    assert out["precision"] == 0.0 and out["recall"] == 0.0
    out = matchtir_rewards([[]], [[]])
    assert out["turn_rewards"] == [0.0] and out["precision"] == 1.0 and out["recall"] == 1.0


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
