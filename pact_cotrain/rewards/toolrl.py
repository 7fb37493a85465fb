"""ToolRL reward (Qian et al., 2025, "ToolRL: Reward is All Tool Learning Needs", arXiv 2504.13958,
§3.3 "Reward Design"; released code `verl/utils/reward_score/rlla.py` of github.com/qiancheng0/ToolRL),
extended to multi-turn trajectories.

    R_final = R_format + R_correct,          R_format in [0, 1],  R_correct in [-3, 3],  R_final in [-3, 4]

Format (paper: R_format = 1 if all required fields appear in the correct order, else 0; the
released `customize_format_reward_func` checks `^<think>.*?</think>\n<tool_call>\n.*?\n</tool_call>$`,
`^<think>.*?</think>\n<response>.*?</response>$`, or both, one block each). Our chat template
(`templates/chatml_tools.jinja`) renders a turn as `<think>\n...\n</think>\n`, then the free text
(ToolRL's <response>; our final answers are plain text), then one `<tool_call>` block per call. A
turn is well formed (`toolrl_turn_format`) iff

* it starts with `<think>` and has exactly one `<think>` and one `</think>`;
* after `</think>`, every `<tool_call>` block parses (`envs.parsing.parse_tool_calls`, schemas
  checked when tools are given) and nothing but whitespace sits between or after the blocks
  (free text may only precede the first block, where the template puts it);
* a turn without calls has non-empty free text (an answer).

    R_format = (1/T_pred) Σ_t 1[turn t well formed]    (0 when there is no predicted turn)

Correctness. P = every call the policy made, G = every gold call, each pooled over all turns of
the trajectory (so calls split over turns differently from the expert are not penalised):

    r_name    = |N_G ∩ N_P| / |N_G ∪ N_P|                      in [0, 1]
                (Jaccard of the tool names as multisets, as the released `match_score` does;
                1 when both are empty)
    for every matched pair (G_j, P_j) (same tool name):
    r_param   = Σ_j |keys(G_j) ∩ keys(P_j)| / |keys(G_j) ∪ keys(P_j)|         in [0, |G|]
    r_value   = Σ_j Σ_{k in keys(G_j)} 1[P_j[k] = G_j[k]]                      in [0, Σ_j |keys(G_j)|]
    R_max     = r_name + r_param + r_value     for the matching that maximises it
    S_max     = 1 + |G| + Σ_{G_j in G} |keys(G_j)|
    R_correct = (R_hi - R_lo) · R_max / S_max + R_lo = 6 · R_max / S_max - 3

An exact match scores R_max = S_max, i.e. R_correct = 3; no overlap scores -3.

Choices where the paper leaves freedom (or where we depart from the released code):

* Multi-turn: the paper scores one response against one gold response. We pool the calls of the
  whole trajectory into one ToolRL correctness (above) instead of scoring turn i against gold
  turn i, which penalised a right set of calls split over turns differently.
* Matching. The released code matches greedily (gold calls in order, each taking its best still
  unused same-name prediction); we solve the assignment exactly (Hungarian,
  `calls.optimal_assignment`) over same-name pairs with weight r_param + r_value. Both agree
  whenever no two gold calls compete for one prediction; the exact one never scores lower.
* Values are compared with `calls.value_match` (case/whitespace-insensitive strings, numbers
  numerically, containers recursively) rather than Python `==`.
* Unparsable calls: the released code gives the minimum correctness when it cannot parse the
  tool calls. With `strict_format` (default) a trajectory with any unparsable call block gets
  R_correct = -3; with `strict_format=False` the calls the parser recovered are scored.
* The answer's content is not scored (ToolRL has no answer-correctness term).
* No gold call: R_correct = 0 whatever the policy did (calls or none, parsable or not), as the released
  `customize_correctness_reward_tool` does ("if '<tool_call>' not in ans: reward 0"), so only the format
  term varies. (The Jaccard above would give +3 for no call and -3 for any call.)
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
    """R_correct of a set of predicted calls against a set of gold calls, and its parts: {"correctness", "r_name", "r_param", "r_value",
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


def toolrl_turn_format(text: str, tools: list[dict] | None = None) -> bool:
    """R_format of one assistant turn's text (layout rule in the module docstring)."""
    from pact_cotrain.envs.parsing import CLOSE_TAG, OPEN_TAG, parse_tool_calls

    text = text.strip()
    if not text.startswith("<think>") or text.count("<think>") != 1 or text.count("</think>") != 1:
        return False
    visible = text.partition("</think>")[2]
    parsed = parse_tool_calls(visible, tools)
    if parsed.errors:
        return False
    if not parsed.calls:
        return bool(parsed.content)
    before_first = visible[: visible.find(OPEN_TAG)].strip()
    after_last = visible[visible.rfind(CLOSE_TAG) + len(CLOSE_TAG):].strip()
    return parsed.content == before_first and not after_last


def toolrl_reward(
    pred_turns: list[list[dict]],
    gold_turns: list[list[dict]],
    turn_format: list[bool] | None = None,
    parse_ok: list[bool] | None = None,
    *,
    strict_format: bool = True,
) -> dict:
    """ToolRL reward of a trajectory (formulas and choices in the module docstring).

    `turn_format[t]`: whether predicted turn t is well formed (`toolrl_turn_format`; None: all
    are). `parse_ok[t]`: whether every call block of turn t parsed (None: all did).
    Returns {"reward", "format", "correctness", "turn_format", "details"}, `details` being
    `toolrl_turn_correctness` of the pooled calls.
    """
    n_pred = len(pred_turns)
    turn_format = [True] * n_pred if turn_format is None else list(turn_format)
    parse_ok = [True] * n_pred if parse_ok is None else list(parse_ok)
    for name, flags in (("turn_format", turn_format), ("parse_ok", parse_ok)):
        if len(flags) != n_pred:
            raise ValueError(f"{name} has {len(flags)} entries for {n_pred} predicted turns")
    fmt = sum(map(bool, turn_format)) / n_pred if n_pred else 0.0
    gold = [c for t in gold_turns for c in t]
    details = toolrl_turn_correctness([c for t in pred_turns for c in t], gold)
    if not gold:  # released: no gold <tool_call>, correctness 0
        correctness = 0.0
    else:
        correctness = R_LO if strict_format and not all(parse_ok) else details["correctness"]
    return {
        "reward": fmt + correctness,
        "format": fmt,
        "correctness": correctness,
        "turn_format": [float(bool(f)) for f in turn_format],
        "details": details,
    }
