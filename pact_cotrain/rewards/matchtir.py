"""MatchTIR turn-level rewards (Qu et al., 2026, "MatchTIR: Fine-Grained Supervision for
Tool-Integrated Reasoning via Bipartite Matching", arXiv 2601.10712), hard-assignment variant.

Sources: the paper's method section as summarised publicly (matching matrix, hard/soft
assignment, dual-level advantage) and the released code (`Code/verl/utils/reward_score/tool.py`,
`compute_process_KM`; `Code/verl/trainer/ppo/core_algos.py`) for the details the summaries do not
give. Where they differ we say so.

1. Similarity matrix. P = every call the policy made in the trajectory (m of them, all turns
   pooled), G = every gold call (n of them, all turns pooled). For p_i, g_j:

       S_tn = 1[name(p_i) = name(g_j)]                          (names compared case-insensitively,
                                                                 stripped, as the released code does)
       S_pn = |N_{p_i} ∩ N_{g_j}| / |N_{p_i} ∪ N_{g_j}|         (Jaccard of argument names; 1 if both empty)
       S_pc = Σ_{k in N_{g_j}} 1[p_i[k] = g_j[k]]               (values via `calls.value_match`;
                                                                 the released code uses `==`)
       S_ij = S_tn · (S_tn + S_pn + S_pc) / (2 + |N_{g_j}|)     in [0, 1]

   i.e. ToolRL's match score normalised per gold call, and 0 unless the tool name matches.

2. Hard assignment. A maximum-weight bipartite matching of P and G on S (Kuhn-Munkres; we solve it
   exactly with `calls.optimal_assignment` - the released code's `hungarian_assignment` is in fact
   a greedy pass over pairs sorted by score, which can be suboptimal). Only pairs with S_ij > 0
   (same tool name) count as matched. Ties are broken toward earlier predicted calls, so when a
   call is repeated the first occurrence gets the credit and the repeat is the redundant one.

   Per-call score:  s_i = S_{i, σ(i)} if p_i is matched, else `unmatched_penalty`.
   The released training script uses `unmatched_penalty=0` for the hard variant (the function's
   default there is -0.5); we default to 0.0. Extra calls are penalised either way through the
   per-turn mean below.

3. Turn reward (as the released `compute_process_KM`). For assistant turn t with calls C_t:

       r_t = (1/|C_t|) Σ_{i in C_t} s_i        if C_t is non-empty
       r_t = R_out                              for the answer turn (the last turn, without calls)
       r_t = 0                                  for any other turn without calls

   R_out is the outcome term: the released code gives the answer turn the token-set F1 of the
   predicted answer against the gold answer, after lower-casing, replacing punctuation by spaces
   and collapsing whitespace (`answer_f1` here; `rewards/episode.py` passes it as
   `outcome_reward`, the gold answer being the expert trace's final message). A trajectory with no
   answer turn (cut while calling) gets no outcome term. Gold turn boundaries play no role (P and
   G are matched as whole trajectories), so order across turns does not matter either.

4. Trajectory reward (the one the trajectory-level advantage normalises).

       R = R_proc + R_out,    R_proc = Σ_i s_i / max(m, n)   (1 when m = n = 0),   R in [0, 2]

   DEPARTURE from the released code, which normalises `token_level_rewards.sum(-1)` = Σ_t r_t.
   Because r_t is a per-turn mean, that sum depends on how the same calls are split into turns:
   three exact calls score 1 in one turn and 3 over three turns, so the policy is paid for extra
   turns. R_proc is the same matched score pooled over the trajectory, normalised once: 1 iff
   every gold call is matched exactly and there is no extra call, independent of the turn split;
   an extra or a missing call raises max(m, n). R_out enters R once, as in Σ_t r_t.
   Also reported: matched (= number of matched pairs), precision = matched / m,
   recall = matched / n, f1 (conventions for empty sides: precision = 1 when m = n = 0 and 0 when
   only m = 0; recall likewise with the roles swapped); process = R_proc, outcome = R_out.

5. Advantage. `turn_level_returns` gives the discounted return-to-go of each turn,
   R_t = Σ_{k >= t} γ^{k-t} r_k. `dual_level_advantages` is MatchTIR's dual-level advantage over a
   GRPO group of trajectories of one prompt, as the released code computes it:

       A_traj(i)   = (R_i - mean_group R) / (std_group R + eps)          (R of point 4)
       A_turn(i,t) = (R_{i,t} - mean_{i' has turn t} R_{i',t}) / (std_same + eps)
       A(i,t)      = (A_traj(i) + A_turn(i,t)) / 2

   std is the sample standard deviation (n - 1); a group (or a turn index) with a single member
   uses mean 0, std 1, as the released code does. The released code uses γ = 0.9. The turn
   term keeps the released per-turn rewards r_t: it is where the turn structure is the signal.

Not implemented: the soft (optimal-transport / Sinkhorn) assignment variant.
"""

from __future__ import annotations

import math
import string

from pact_cotrain.rewards.calls import multiset_jaccard, optimal_assignment, value_match

_TIE_EPS = 1e-9  # tie-break toward earlier predicted calls; far below any score difference


def _norm_name(call: dict) -> str:
    return str(call.get("name", "")).strip().casefold()


def call_similarity(pred: dict, gold: dict) -> float:
    """S_ij of the module docstring, in [0, 1]."""
    if _norm_name(pred) != _norm_name(gold):
        return 0.0
    pa, ga = pred.get("arguments") or {}, gold.get("arguments") or {}
    s_pn = multiset_jaccard(pa.keys(), ga.keys())
    s_pc = sum(1 for k, v in ga.items() if k in pa and value_match(pa[k], v))
    return (1.0 + s_pn + s_pc) / (2.0 + len(ga))


def similarity_matrix(pred: list[dict], gold: list[dict]) -> list[list[float]]:
    return [[call_similarity(p, g) for g in gold] for p in pred]


def match_calls(pred: list[dict], gold: list[dict]) -> list[tuple[int, int, float]]:
    """Optimal one-to-one matching of predicted to gold calls: (pred index, gold index, S_ij) for
    every matched pair (S_ij > 0), sorted by pred index. Maximises Σ S_ij; order-invariant up to
    ties, which go to earlier predicted calls."""
    sim = similarity_matrix(pred, gold)
    weights = [[s - _TIE_EPS * i if s > 0 else 0.0 for s in row] for i, row in enumerate(sim)]
    return [(i, j, sim[i][j]) for i, j in optimal_assignment(weights) if sim[i][j] > 0]


def _answer_tokens(text: str) -> set[str]:
    text = text.lower()
    for punct in string.punctuation:
        text = text.replace(punct, " ")
    return set(text.split())  # split() also collapses whitespace


def answer_f1(pred: str, gold: str) -> float:
    """Token-set F1 of a predicted against a gold answer (the outcome term R_out, point 3)."""
    p, g = _answer_tokens(pred), _answer_tokens(gold)
    common = len(p & g)
    if not common:
        return 0.0
    precision, recall = common / len(p), common / len(g)
    return 2 * precision * recall / (precision + recall)


def matchtir_rewards(
    pred_turns: list[list[dict]],
    gold_turns: list[list[dict]],
    *,
    unmatched_penalty: float = 0.0,
    outcome_reward: float | None = None,
) -> dict:
    """MatchTIR (hard assignment) rewards of one trajectory; formulas in the module docstring.

    `outcome_reward` is R_out (e.g. `answer_f1`); it counts only when the last turn is an answer.
    Returns {"reward", "process", "outcome", "turn_rewards", "matched", "precision", "recall", "f1", "call_scores",
    "matches"}: `call_scores[t]` lists the per-call scores s_i of turn t, `matches` the matched
    (pred index, gold index, S_ij) over the pooled (turn-major) call lists.
    """
    pred_flat = [(t, c) for t, turn in enumerate(pred_turns) for c in turn]
    gold_flat = [c for turn in gold_turns for c in turn]
    matches = match_calls([c for _, c in pred_flat], gold_flat)
    scores = [float(unmatched_penalty)] * len(pred_flat)
    for i, _, s in matches:
        scores[i] = s
    call_scores: list[list[float]] = [[] for _ in pred_turns]
    for (t, _), s in zip(pred_flat, scores):
        call_scores[t].append(s)
    turn_rewards = [sum(cs) / len(cs) if cs else 0.0 for cs in call_scores]
    outcome = 0.0
    if outcome_reward is not None and pred_turns and not pred_turns[-1]:
        outcome = float(outcome_reward)
        turn_rewards[-1] += outcome
    m, n, k = len(pred_flat), len(gold_flat), len(matches)
    process = sum(scores) / max(m, n) if max(m, n) else 1.0
    precision = k / m if m else (1.0 if n == 0 else 0.0)
    recall = k / n if n else (1.0 if m == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "reward": process + outcome,
        "process": process,
        "outcome": outcome,
        "turn_rewards": turn_rewards,
        "matched": k,
        "precision": precision,
        "recall": recall,
        "f1": f1,
        "call_scores": call_scores,
        "matches": matches,
    }


def turn_level_returns(turn_rewards: list[float], gamma: float = 1.0) -> list[float]:
    """Discounted return-to-go per turn: R_t = r_t + γ R_{t+1}, R_T = 0."""
    out = [0.0] * len(turn_rewards)
    acc = 0.0
    for t in range(len(turn_rewards) - 1, -1, -1):
        acc = float(turn_rewards[t]) + gamma * acc
        out[t] = acc
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    if len(values) <= 1:
        return 0.0, 1.0
    mean = sum(values) / len(values)
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(var)


def dual_level_advantages(
    group_turn_rewards: list[list[float]],
    group_rewards: list[float] | None = None,
    gamma: float = 0.9,
    eps: float = 1e-6,
) -> list[list[float]]:
    """Per-turn advantages A(i, t) = (A_traj(i) + A_turn(i, t)) / 2 for a GRPO group (one list of
    turn rewards per trajectory of the same prompt); see the module docstring. `group_rewards` are
    the trajectory rewards R_i (point 4); None uses Σ_t r_{i,t}, as the released code does."""
    if group_rewards is None:
        group_rewards = [sum(r) for r in group_turn_rewards]
    if len(group_rewards) != len(group_turn_rewards):
        raise ValueError(f"{len(group_rewards)} trajectory rewards for {len(group_turn_rewards)} trajectories")
    mean, std = _mean_std([float(r) for r in group_rewards])
    a_traj = [(float(r) - mean) / (std + eps) for r in group_rewards]
    returns = [turn_level_returns(r, gamma) for r in group_turn_rewards]
    horizon = max((len(r) for r in returns), default=0)
    stats = [_mean_std([r[t] for r in returns if len(r) > t]) for t in range(horizon)]
    return [
        [(a_traj[i] + (ret[t] - stats[t][0]) / (stats[t][1] + eps)) / 2 for t in range(len(ret))]
        for i, ret in enumerate(returns)
    ]
