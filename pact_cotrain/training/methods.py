"""Methods as data: what each training step computes, for PACT, its ablations and the baselines.

A step has an RL part (rollouts, rewards, group advantages, a clipped policy loss) and/or an SFT
part (on the batch's expert traces). `StepPlan` says which parts a method uses at a given step and
with which weights; the trainer only executes plans.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pact_cotrain import losses

METHODS = ("pact", "grpo", "sft", "sft_then_grpo", "chord_mu", "chord_phi", "hint_rollouts", "opsd")
CHORD_METHODS = ("chord_mu", "chord_phi")
# CHORD's two variants as released (Trinity-RFT examples/mix_chord/mix_chord.yaml, `policy_loss_fn_args`:
# "0 for chord-mu and chord-phi", "200 for chord-mu and 0 for chord-phi", "0.9 for chord-mu and 0.1 for
# chord-phi", "0.05 for chord-mu and 0.1 for chord-phi", "false for chord-mu and true for chord-phi").
# CHORD-phi's warm-up 0 and decay 0 leave mu at the valley, 0.1, from step 0.
CHORD_RELEASED = {
    "chord_mu": {"chord_mu_peak": 0.9, "chord_mu_valley": 0.05, "chord_mu_warmup_steps": 0,
                 "chord_mu_decay_steps": 200, "phi": False},
    "chord_phi": {"chord_mu_peak": 0.1, "chord_mu_valley": 0.1, "chord_mu_warmup_steps": 0,
                  "chord_mu_decay_steps": 0, "phi": True},
}
REWARDS = ("env", "solve_f1", "ftrl_step", "toolrl", "matchtir", "trace_match", "answer_match")


@dataclass
class MethodConfig:
    name: str = "pact"
    reward: str = "solve_f1"  # trajectory reward used for advantages
    turn_level_advantages: bool = True  # matchtir: MatchTIR's dual-level (trajectory + turn) advantages
    # PACT (spec sections 2-4)
    anchor_q: float = 0.3  # probability a prompt uses prompt-only GRPO instead of L_TC
    anchor_mode: str = "sample"  # "sample" (per-prompt Bernoulli) | "mixture" (q L_GRPO + (1-q) L_TC)
    # "trace" | rejected readings (spec section 2): "cross_context" (ratio pi_theta(.|x,h) / pi_old(.|x)),
    # "trace_weighted" (prompt-only gradient, token weights from the trace-conditioned pass)
    surrogate: str = "trace"
    trace_view: str = "full"  # "full" | "no_tool_responses" | "no_reasoning"
    sft: bool = True  # component-aware SFT term on/off
    reasoning_schedule: str = "staged"  # "staged" | "linear" | "segment_linear" | "full" | "none"
    toolcall_schedule: str = "linear"  # "linear" | "staged" | "constant" | "none"
    answer_weight: float | None = None  # None: the tool-call weight (spec section 3)
    sft_coef: float = 1.0  # weight of L_SFT in L = L_RL + sft_coef L_SFT
    # baselines
    sft_fraction: float = 0.3  # sft_then_grpo: share of steps spent on SFT (one-run variant; the
    #                            SFT->RL baseline of the paper is configs/sft_then_matchtir.yaml, two phases)
    # chord_mu / chord_phi: the mu schedule. "paper": CHORD's warm-up -> peak -> cosine decay -> valley
    # (losses.chord_mu); "linear" | "cosine" | "constant": losses.chord_sft_weight from 1 to 0 (CHORD-mu
    # as this project first read it). The token weight phi is the method's: on for chord_phi only.
    chord_schedule: str = "paper"
    chord_mu_peak: float | None = None  # None: the variant's released value (CHORD_RELEASED)
    chord_mu_valley: float | None = None
    chord_mu_warmup_steps: int | None = None
    chord_mu_decay_steps: int | None = None
    # opsd (losses.opsd_policy_loss): teacher pi_theta(.|x,h), no gradient; A_t = reward_coef A_i - kl_coef k_t
    # ("token", prime-rl / Zhao's sampled-token form) or - kl_coef sum_t k_t ("sequence", pi-Distill's release)
    opsd_kl_coef: float = 1.0
    opsd_reward_coef: float = 0.0
    opsd_kl_credit: str = "token"
    eps_low: float = 0.2
    eps_high: float = 0.28
    # KL to the initial (reference) policy and an entropy bonus, each on the rollout tokens of the RL
    # term (losses.kl_penalty_k3, losses.entropy_bonus): L_RL += beta KL_k3 - entropy_coef H. 0: off.
    beta: float = 0.0
    entropy_coef: float = 0.0
    aggregation: str = "token_mean"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.name == "chord":
            raise ValueError("method.name=chord names no single method: CHORD (arXiv 2508.11408) has two variants, "
                             "chord_mu (no token weight, mu 0.9 -> 0.05) and chord_phi (phi = p(1 - p), mu 0.1)")
        if self.name in CHORD_METHODS:
            for key, value in CHORD_RELEASED[self.name].items():
                if key != "phi" and getattr(self, key) is None:
                    setattr(self, key, value)
        if self.beta < 0 or self.entropy_coef < 0:
            raise ValueError(f"method.beta and method.entropy_coef must be >= 0, got {self.beta}, {self.entropy_coef}")
        if self.name not in METHODS:
            raise ValueError(f"method.name must be one of {METHODS}, got {self.name!r}")
        if self.reward not in REWARDS:
            raise ValueError(f"method.reward must be one of {REWARDS}, got {self.reward!r}")
        if not 0.0 <= self.anchor_q <= 1.0:
            raise ValueError(f"method.anchor_q must be in [0, 1], got {self.anchor_q}")
        if self.surrogate not in losses.TRACE_RATIO_FORMS:
            raise ValueError(f"method.surrogate must be one of {losses.TRACE_RATIO_FORMS}, got {self.surrogate!r}")
        if self.reasoning_schedule not in losses.REASONING_SCHEDULES:
            raise ValueError(f"method.reasoning_schedule must be one of {losses.REASONING_SCHEDULES}, "
                             f"got {self.reasoning_schedule!r}")
        if self.surrogate in losses.PROMPT_GRADIENT_FORMS and self.anchor_mode == "mixture" and self.anchor_q == 0:
            # The mixture scores the prompt-only pass only when q > 0, and this surrogate needs it.
            raise ValueError(f"method.surrogate={self.surrogate} with anchor_q=0 needs anchor_mode=sample")
        if self.opsd_kl_credit not in losses.KL_CREDITS:
            raise ValueError(f"method.opsd_kl_credit must be one of {losses.KL_CREDITS}, got {self.opsd_kl_credit!r}")
        if self.opsd_kl_coef < 0 or self.opsd_reward_coef < 0:
            raise ValueError(f"method.opsd_kl_coef and method.opsd_reward_coef must be >= 0, "
                             f"got {self.opsd_kl_coef} and {self.opsd_reward_coef}")


@dataclass
class StepPlan:
    rl: bool  # generate rollouts and apply an RL loss
    rl_coef: float
    anchor_q: float  # 1.0: every prompt prompt-only (plain GRPO); 0.0: every prompt trace-conditioned
    rollout_trace_view: str | None  # None: prompt-only rollouts (everything but the hint baseline)
    sft_coef: float
    reasoning_fraction: float  # share of each reasoning block's leading segments supervised
    toolcall_weight: float
    answer_weight: float
    sft_phi: bool = False  # weight the SFT tokens by CHORD's phi = p(1 - p) (losses.chord_phi)
    opsd: bool = False  # RL loss is OPSD's: prompt-only student, teacher logp under [x; h] without gradient
    # (step, total_steps) under reasoning_schedule="segment_linear", whose count is per block (see
    # reasoning_segments); None: every block keeps round(n * reasoning_fraction) segments.
    segment_linear_at: tuple[int, int] | None = None

    def reasoning_segments(self, n_segments: int) -> int:
        """Leading segments of an ``n_segments``-segment expert reasoning block to supervise now."""
        if self.segment_linear_at is not None:
            return losses.segment_linear_supervised(n_segments, *self.segment_linear_at)
        return losses.reasoning_segments_supervised(n_segments, self.reasoning_fraction)


def full_sft(rl: bool = False, rl_coef: float = 0.0, sft_coef: float = 1.0, anchor_q: float = 1.0) -> StepPlan:
    """Plain SFT on the whole trace (reasoning, calls, answer, weight 1), optionally beside GRPO."""
    return StepPlan(rl, rl_coef, anchor_q, None, sft_coef, 1.0, 1.0, 1.0)


def chord_mu(method: MethodConfig, step: int, total_steps: int) -> float:
    """CHORD's SFT weight mu at `step` under `method.chord_schedule`."""
    if method.chord_schedule not in ("paper", "linear", "cosine", "constant"):
        raise ValueError(f"method.chord_schedule must be paper, linear, cosine or constant, got {method.chord_schedule!r}")
    if method.chord_schedule != "paper":
        return losses.chord_sft_weight(step, total_steps, mode=method.chord_schedule)
    return losses.chord_mu(step, method.chord_mu_peak, method.chord_mu_valley, method.chord_mu_warmup_steps,
                           method.chord_mu_decay_steps)


def plan_step(method: MethodConfig, step: int, total_steps: int) -> StepPlan:
    name = method.name
    if name == "sft":
        return full_sft()
    if name == "grpo":
        return StepPlan(True, 1.0, 1.0, None, 0.0, 0.0, 0.0, 0.0)
    if name == "sft_then_grpo":
        if step < round(method.sft_fraction * total_steps):
            return full_sft()
        return StepPlan(True, 1.0, 1.0, None, 0.0, 0.0, 0.0, 0.0)
    if name in CHORD_METHODS:
        # L = (1 - mu) L_GRPO + mu L_SFT, L_SFT phi-weighted for chord_phi (losses.chord_phi)
        mu = chord_mu(method, step, total_steps)
        # A step whose RL weight is exactly 0 generates no rollouts (they would be wasted compute).
        plan = full_sft(rl=mu < 1.0, rl_coef=1.0 - mu, sft_coef=mu)
        plan.sft_phi = CHORD_RELEASED[name]["phi"]
        return plan
    if name == "opsd":
        # Prompt-only rollouts and student pass (anchor_q=1: every row scored after x alone); the teacher's
        # [x; h] pass runs without gradient when the batch is built.
        return StepPlan(True, 1.0, 1.0, None, 0.0, 0.0, 0.0, 0.0, opsd=True)
    if name == "hint_rollouts":
        # Rollouts see the trace; the loss is the clipped loss in that same context (anchor_q=0).
        return StepPlan(True, 1.0, 0.0, method.trace_view, 0.0, 0.0, 0.0, 0.0)
    # PACT
    tool_w = losses.toolcall_weight(step, total_steps, mode=method.toolcall_schedule)
    return StepPlan(
        rl=True,
        rl_coef=1.0,
        anchor_q=method.anchor_q,
        rollout_trace_view=None,
        sft_coef=method.sft_coef if method.sft else 0.0,
        reasoning_fraction=losses.reasoning_prefix_fraction(step, total_steps, mode=method.reasoning_schedule),
        toolcall_weight=tool_w,
        answer_weight=tool_w if method.answer_weight is None else method.answer_weight,
        segment_linear_at=(step, total_steps) if method.reasoning_schedule == "segment_linear" else None,
    )
