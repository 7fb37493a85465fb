"""ToolRL reward (Qian et al., 2025, "ToolRL: Reward is All Tool Learning Needs", arXiv 2504.13958,
§3.3 "Reward Design"), extended to multi-turn trajectories.

Single turn (the paper's setting). With G the gold calls of the turn and P the predicted calls:

    R_final = R_format + R_correct,          R_format in {0, 1},  R_correct in [-3, 3],  R_final in [-3, 4]

    R_format  = 1 if the turn is well formed, else 0. The paper checks its <think>/<tool_call>/
                <response> tag layout with a regex; here the caller's parser decides and passes
                `format_ok[i]`.

    r_name    = |N_G ∩ N_P| / |N_G ∪ N_P|                      in [0, 1]
                (Jaccard of the tool names; multisets, as the released rlla.py `match_score` does,
                so calling a tool twice when gold calls it once costs something; 1 when both empty)

    for every matched pair (G_j, P_j) (same tool name):
    r_param   = Σ_j |keys(G_j) ∩ keys(P_j)| / |keys(G_j) ∪ keys(P_j)|         in [0, |G|]
    r_value   = Σ_j Σ_{k in keys(G_j)} 1[P_j[k] = G_j[k]]                      in [0, Σ_j |keys(G_j)|]

    R_max     = r_name + r_param + r_value     for the matching that maximises it
    S_max     = 1 + |G| + Σ_{G_j in G} |keys(G_j)|
    R_correct = (R_hi - R_lo) · R_max / S_max + R_lo = 6 · R_max / S_max - 3

  An exact match scores R_max = S_max, i.e. R_correct = 3; no overlap scores -3.

Choices where the paper leaves freedom (or where we depart from the released code, ToolRL's
`verl/utils/reward_score/rlla.py`, as far as we could establish it):

* Matching. As we read §3.3 the pairs are those of an optimal matching; the released code matches
  greedily (gold calls in order, each taking its best still-unused same-name prediction). We
  solve the assignment exactly (Hungarian, `calls.optimal_assignment`) over same-name pairs with
  weight r_param + r_value. Both agree whenever no two gold calls compete for one prediction;
  the exact one never scores lower and does not depend on call order.
* Values are compared with `calls.value_match` (case/whitespace-insensitive strings, numbers
  numerically, containers recursively) rather than Python `==`, because our traces and the
  policy's parsed calls may differ in such surface details.
* Tool names are compared exactly (as the released code does).
* Malformed turns (`format_ok[i]` False) get R_correct = -3 when `strict_format` (default): the
  released code gives the minimum correctness when it cannot parse the tool calls. With
  `strict_format=False` whatever calls the parser recovered are scored normally.
* Turns whose gold has no call (the final-answer turn). The released single-turn code returns
  R_correct = 0 for them without looking at the prediction. We apply the formula instead
  (`score_no_call_turns=True`, default): with N_G = ∅, S_max = 1 and r_name = 1 if the
  prediction also makes no call (R_correct = 3) else 0 (R_correct = -3), so a policy that keeps
  calling tools when it should answer is penalised. `score_no_call_turns=False` restores 0.

Multi-turn (our extension; the paper scores one assistant response against one gold response).
Turn i of the prediction is scored against gold turn i (index-aligned), over
T = max(len(pred_turns), len(gold_turns)) turns:

* a gold turn the prediction never reached (i >= len(pred_turns)): R_format = 0, R_correct = -3;
* an extra predicted turn (i >= len(gold_turns)): R_format = format_ok[i], R_correct = -3
  (nothing in gold to match; also penalises over-long trajectories).

    format      = (1/T) Σ_i R_format,i          in [0, 1]
    correctness = (1/T) Σ_i R_correct,i         in [-3, 3]
    reward      = format + correctness          in [-3, 4]

With T = 0 (no turns on either side) everything is 0.
"""

from __future__ import annotations

from pact_cotrain.rewards.calls import multiset_jaccard, optimal_assignment, value_match

R_HI = 3.0
R_LO = -3.0


def _args(call: dict) -> dict:
    return call.get("arguments") or {}


def _pair_weight(pred: dict, gold: dict) -> tuple[float, float]:
    """(r_param, r_value) contributions of one same-name pair."""
    pa, ga = _args(pred), _args(gold)
    r_param = multiset_jaccard(pa.keys(), ga.keys())
    r_value = float(sum(1 for k, v in ga.items() if k in pa and value_match(pa[k], v)))
    return r_param, r_value


def toolrl_turn_correctness(pred: list[dict], gold: list[dict]) -> dict:
    """R_correct of one turn and its parts: {"correctness", "r_name", "r_param", "r_value",
    "r_max", "s_max", "pairs"} with `pairs` the matched (pred index, gold index)."""
    r_name = multiset_jaccard([c["name"] for c in gold], [c["name"] for c in pred])
    parts = [[(0.0, 0.0)] * len(gold) for _ in pred]
    weights = [[0.0] * len(gold) for _ in pred]
    for i, p in enumerate(pred):
        for j, g in enumerate(gold):
            if p["name"] == g["name"]:
                parts[i][j] = _pair_weight(p, g)
                weights[i][j] = sum(parts[i][j])
    pairs = [(i, j) for i, j in optimal_assignment(weights) if pred[i]["name"] == gold[j]["name"]]
    r_param = sum(parts[i][j][0] for i, j in pairs)
    r_value = sum(parts[i][j][1] for i, j in pairs)
    r_max = r_name + r_param + r_value
    s_max = 1.0 + len(gold) + sum(len(_args(g)) for g in gold)
    correctness = (R_HI - R_LO) * r_max / s_max + R_LO
    return {
        "correctness": correctness,
        "r_name": r_name,
        "r_param": r_param,
        "r_value": r_value,
        "r_max": r_max,
        "s_max": s_max,
        "pairs": pairs,
    }


def toolrl_reward(
    pred_turns: list[list[dict]],
    gold_turns: list[list[dict]],
    format_ok: list[bool] | None = None,
    *,
    strict_format: bool = True,
    score_no_call_turns: bool = True,
) -> dict:
    """ToolRL reward of a trajectory (formulas and choices in the module docstring).

    Returns {"reward", "format", "correctness", "turn_rewards", "turn_format",
    "turn_correctness", "turn_details", "n_turns"}; `turn_details[i]` is the dict of
    `toolrl_turn_correctness` for turns scored by the formula, else None.
    """
    n_pred, n_gold = len(pred_turns), len(gold_turns)
    if format_ok is None:
        format_ok = [True] * n_pred
    if len(format_ok) != n_pred:
        raise ValueError(f"format_ok has {len(format_ok)} entries for {n_pred} predicted turns")
    n_turns = max(n_pred, n_gold)
    turn_format: list[float] = []
    turn_correct: list[float] = []
    details: list[dict | None] = []
    for i in range(n_turns):
        detail = None
        if i >= n_pred:  # gold turn never reached
            fmt, corr = 0.0, R_LO
        elif i >= n_gold:  # extra predicted turn
            fmt, corr = float(bool(format_ok[i])), R_LO
        else:
            fmt = float(bool(format_ok[i]))
            if not gold_turns[i] and not score_no_call_turns:
                corr = 0.0
            elif strict_format and not format_ok[i]:
                corr = R_LO
            else:
                detail = toolrl_turn_correctness(pred_turns[i], gold_turns[i])
                corr = detail["correctness"]
        turn_format.append(fmt)
        turn_correct.append(corr)
        details.append(detail)
    fmt_mean = sum(turn_format) / n_turns if n_turns else 0.0
    corr_mean = sum(turn_correct) / n_turns if n_turns else 0.0
    return {
        "reward": fmt_mean + corr_mean,
        "format": fmt_mean,
        "correctness": corr_mean,
        "turn_rewards": [f + c for f, c in zip(turn_format, turn_correct)],
        "turn_format": turn_format,
        "turn_correctness": turn_correct,
        "turn_details": details,
        "n_turns": n_turns,
    }
