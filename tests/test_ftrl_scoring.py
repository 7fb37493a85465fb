"""FTRL scoring rules (/work/shared/data/README.md), one hand-made case per rule."""

from __future__ import annotations

import pytest

from pact_cotrain.rewards.ftrl import FtrlTracker, contains_answer, matches, normalise


def test_normalise_lowercases_and_drops_commas_only():
    assert normalise("Washington, D.C.  X") == "washington d.c.  x"


@pytest.mark.parametrize("expected, output, hit", [
    ("Michel Barnier", '{"result": "MICHEL BARNIER lost the vote"}', True),  # case
    ("Brazil, China", "China and brazil signed", True),  # ", " pieces, any order
    ("Brazil, China", "Brazil signed", False),  # every piece is needed
    ("48,210", '{"population": 48210}', True),  # commas removed from the expected string
    ("48210", "population: 48,210", True),  # ... and from the output
    ("Washington, D.C.", "held in washington d.c.", True),
    ("Washington, D.C.", "held in Washington", False),
    ("2007-11-7", "2007-11-07", False),  # substring, nothing cleverer
    ("3", "13 people", True),  # short strings match inside longer ones, as in FTRL
])
def test_matches(expected, output, hit):
    assert matches(expected, output) is hit


def test_contains_answer_uses_the_same_rule_and_never_matches_empty_answer():
    assert contains_answer("The answer is brazil and CHINA.", "Brazil, China")
    assert not contains_answer("The answer is Brazil.", "Brazil, China")
    assert not contains_answer("anything", "")


def test_tool_must_be_solved_twice():
    tr = FtrlTracker({"get_population": ["4821", "9930"], "get_mayor": ["Ola Vesk"]})
    assert tr.U == 3
    assert tr.record_call("get_population", '{"population": 4821}') is True
    assert tr.record_call("get_population", '{"population": 4821}') is False  # same output again: nothing new
    assert tr.record_call("get_population", '{"population": 9930}') is True
    assert (tr.S, tr.C, tr.remaining) == (2, 3, 1)


def test_first_still_unsolved_string_is_solved():
    # FTRL row style {"tool": ["12", "2"]}: the output "12" matches both; it solves only the first.
    tr = FtrlTracker({"t": ["12", "2"]})
    tr.record_call("t", "12 deaths")
    assert tr.unsolved["t"] == ["2"]
    assert tr.record_call("t", "12 deaths")  # "2" is a substring of "12": solved by the same output
    # Order matters: with ["2", "12"], "12" takes "2" first and "2" can never solve "12".
    tr = FtrlTracker({"t": ["2", "12"]})
    tr.record_call("t", "12 deaths")
    assert not tr.record_call("t", "2 deaths")
    assert tr.S == 1


def test_outputs_only_solve_their_own_tool_and_none_output_only_counts():
    tr = FtrlTracker({"get_mayor": ["Ola Vesk"]})
    assert not tr.record_call("get_ceo", '{"ceo": "Ola Vesk"}')
    assert not tr.record_call("get_mayor", None)
    assert (tr.S, tr.C) == (0, 2)


def test_solve_metrics():
    tr = FtrlTracker({"a": ["x", "y"], "b": ["z"]})
    assert (tr.solve_p, tr.solve_r, tr.solve_f1) == (1.0, 0.0, 0.0)  # Solve-P = 1 when C = 0
    tr.record_call("a", "x")
    tr.record_call("a", "nothing")
    tr.record_call("b", "z")
    tr.record_call("c", "x")
    assert (tr.S, tr.C, tr.U) == (2, 4, 3)
    assert tr.solve_p == pytest.approx(2 / 4)
    assert tr.solve_r == pytest.approx(2 / 3)
    assert tr.solve_f1 == pytest.approx(2 * 2 / (4 + 3))


def test_empty_unsolved_set_edge_case():
    tr = FtrlTracker({})
    assert (tr.solve_p, tr.solve_r, tr.solve_f1) == (1.0, 1.0, 1.0)
    tr.record_call("a", "x")
    assert (tr.solve_p, tr.solve_r, tr.solve_f1) == (0.0, 1.0, 0.0)


def test_tracker_copies_its_input():
    unsolved = {"a": ["x"]}
    FtrlTracker(unsolved).record_call("a", "x")
    assert unsolved == {"a": ["x"]}


@pytest.mark.parametrize("n, k, reward", [(1, 1, 1.0), (2, 1, 2 / 3), (2, 2, 4 / 3), (3, 0, 0.0), (3, 3, 1.5)])
def test_step_reward_with_calls(n, k, reward):
    tr = FtrlTracker({"a": ["x"]})
    # With calls, the text, malformed flag and answer play no part.
    assert tr.step_reward(n, k, "", True, "x") == pytest.approx(reward)


def _tracker(solved: int) -> FtrlTracker:
    tr = FtrlTracker({"a": ["x", "y"], "b": ["z"]})
    for out in ["x", "y", "z"][:solved]:
        tr.record_call("a" if out != "z" else "b", out)
    return tr


def test_step_reward_without_calls_in_rule_order():
    tr = _tracker(solved=1)  # remaining = 2
    assert tr.step_reward(0, 0, "", False, "Varnhold") == -0.5  # empty
    assert tr.step_reward(0, 0, "  \n ", True, "Varnhold") == -0.5  # empty comes before malformed
    assert tr.step_reward(0, 0, "<tool_call>{oops", True, "Varnhold") == -0.3  # malformed
    assert tr.step_reward(0, 0, "<tool_call>varnhold", True, "Varnhold") == -0.3  # malformed before answer
    assert tr.step_reward(0, 0, "It is VARNHOLD.", False, "Varnhold") == pytest.approx(1 / (1 + 2))  # answer
    assert tr.step_reward(0, 0, "I do not know.", False, "Varnhold") == 0.0  # otherwise


def test_step_reward_when_all_solved():
    tr = _tracker(solved=3)
    assert tr.remaining == 0
    assert tr.step_reward(0, 0, "It is Varnhold.", False, "Varnhold") == 1.0  # answer rule comes first: 1/(1+0)
    assert tr.step_reward(0, 0, "I do not know.", False, "Varnhold") == 0.5  # all already solved
    assert tr.step_reward(0, 0, "Anything.", False, "") == 0.5  # empty answer never "contained"


def test_record_step_keeps_rewards():
    tr = _tracker(solved=0)
    tr.record_call("a", "x")
    assert tr.record_step(1, 1, "", False, "ans") == 1.0
    assert tr.record_step(0, 0, "", False, "ans") == -0.5
    assert [s["reward"] for s in tr.steps] == [1.0, -0.5]
    assert tr.step_mean == pytest.approx(0.25)
    assert FtrlTracker({}).step_mean == 0.0
