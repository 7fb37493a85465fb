"""Tokens of one training step, pass by pass, from the config and the data's measured lengths.

Notation (means over the measured tasks of the configured data source):

    x    prompt tokens (the rendered prompt, generation header included)
    xh   trace-conditioned context [x; h] tokens (the prompt with the trace block, method.trace_view)
    t    expert-trace target tokens (what SFT supervises after x)
    r    tool-response tokens the environment inserts after an assistant turn (`render.observation_text`)
    tau  share of tasks with an expert trace

A rollout episode is g, r, g, r, ..., g (assistant turns and observations) after x, cut as the engine
cuts it (`rollout/engine.py`): a turn gets min(g, max_new_tokens_per_turn, budget left); a turn cut by
max_new_tokens_per_turn gets the end-of-turn token inserted before the observation; an observation
that would reach max_completion_tokens ends the episode. The shape (turns, g) comes from the caps
(every turn runs to max_new_tokens_per_turn for max_turns turns: an upper bound), from the expert
traces, or from a calibration file's measured rollouts. Per episode: G generated, I inserted, C = G + I.

One process's step (P = train.prompts_per_step, K = train.k, B = P K rollouts; N processes run N such
shares at once, `training/distributed.py`). Scoring packs each group's K completions after one copy
of its context (`training/scoring.py`), so a pass over n groups of m rows costs n * ctx + n m C tokens
(under train.micro_batch_tokens a group that does not fit is split and each piece repeats the context):

    rollouts          prefill B (x + I)  (the KV cache is reused across turns), decode B G
    prompt-only       groups P s_p with context x,  rows B s_p, forward + backward
    [x; h] re-scoring groups P s_t with context xh, rows B s_t, forward + backward (PACT, hint rollouts)
    old-policy        forward only, every rollout row in each scored context, once per batch when
                      train.num_iterations > 1 (reference scoring: none, TRL's beta is 0)
    OPSD teacher      forward only, every rollout row after [x; h] (x for untraced rows), once per batch;
                      OPSD's student is the prompt-only pass (s_p = 1, s_t = 0)
    SFT on traces     P tau traces of x + t tokens, forward + backward

(attention: a group with several completions runs under a custom mask and costs n^2 query-key pairs
for its n tokens; a lone causal sequence n (n + 1) / 2, `Pass.computed`), with the anchoring shares of `training/methods.py` / `PACTTrainer._scoring_rows`: a prompt is scored
prompt-only with probability a = q + (1 - q)(1 - tau) (an untraced prompt is always anchored) and
under [x; h] with s_t = (1 - q) tau; method.surrogate=trace_weighted scores every row prompt-only
(s_p = 1) and its [x; h] pass needs no gradient; anchor_mode=mixture scores both on every row.
Expected counts (q's draw averaged) are what time is planned from; memory is planned for the worst
step (every traced prompt drawn trace-conditioned, every rollout at max_completion_tokens).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from pact_cotrain.errors import UserError

DEFAULT_CHARS_PER_TOKEN = 3.5  # English prose and JSON under BPE vocabularies of 50k-150k tokens
MEASURE_LIMIT = 512  # tasks measured at most (evenly spaced); the traced share counts all tasks


# ------------------------------------------------------------------------------------ counting text


class CharCountTokenizer:
    """Stands in for a tokenizer that is not on this machine: renders with the package's ChatML tool
    template and counts ceil(characters / chars_per_token) tokens. Enough for `render.prompt_text`,
    `render.observation_text` and `render.encode`; ids are placeholders."""

    eos_token = "<|im_end|>"

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN):
        from pact_cotrain.templates import chatml_tool_template

        if chars_per_token <= 0:
            raise UserError(f"--chars-per-token must be > 0, got {chars_per_token}")
        self.chars_per_token = chars_per_token
        self._template = chatml_tool_template()

    def apply_chat_template(self, messages, tools=None, tokenize=False, add_generation_prompt=False, **_):
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template([messages], tools=tools, chat_template=self._template,
                                            add_generation_prompt=add_generation_prompt, eos_token=self.eos_token)
        return rendered[0]

    def __call__(self, text: str, add_special_tokens: bool = False, **_):
        return {"input_ids": [0] * math.ceil(len(text) / self.chars_per_token)}


def counting_tokenizer(model: str, chars_per_token: float | None = None):
    """(tokenizer, how tokens are counted): the model's own tokenizer when it is on this machine (a
    directory, a prepared packaged model, or the Hugging Face cache; never downloaded), else a
    `CharCountTokenizer`. `chars_per_token` forces the estimate."""
    if chars_per_token is None:
        tokenizer = _local_tokenizer(model)
        if tokenizer is not None:
            return tokenizer, f"the model's tokenizer ({model})"
        chars_per_token = DEFAULT_CHARS_PER_TOKEN
        why = f"no local tokenizer for {model}"
    else:
        why = "--chars-per-token"
    return CharCountTokenizer(chars_per_token), (f"an estimate, {chars_per_token:g} characters per token "
                                                 f"({why}; ChatML tool template)")


def _local_tokenizer(model: str):
    import os

    from transformers import AutoTokenizer

    from pact_cotrain.planning.shapes import local_model_dir

    folder = local_model_dir(model)
    source = str(folder) if folder is not None else model
    if folder is None and "/" not in model:
        return None
    saved = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"  # the cache only: planning never downloads
    try:
        return AutoTokenizer.from_pretrained(source, local_files_only=True)
    except Exception:  # not cached, or a directory without tokenizer files: estimate instead
        return None
    finally:
        if saved is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = saved


# ------------------------------------------------------------------------------------ the data


@dataclass
class TaskLengths:
    prompt: int
    trace_context: int | None  # None: no trace
    target: int | None
    turn_tokens: list[float]  # the trace's assistant tokens per turn (its target less observations, evenly)
    observations: list[int]  # tokens inserted after each trace turn that called tools


@dataclass
class DataStats:
    source: str
    counted_with: str
    n_tasks: int
    n_traced: int
    tasks: list[TaskLengths]

    @property
    def traced_share(self) -> float:
        return self.n_traced / self.n_tasks if self.n_tasks else 0.0

    def _mean(self, values) -> float:
        values = [v for v in values if v is not None]
        return sum(values) / len(values) if values else 0.0

    @property
    def prompt(self) -> float:
        return self._mean(t.prompt for t in self.tasks)

    @property
    def trace_context(self) -> float:
        return self._mean(t.trace_context for t in self.tasks)

    @property
    def trace_target(self) -> float:
        return self._mean(t.target for t in self.tasks)

    @property
    def tool_response(self) -> float:
        return self._mean(o for t in self.tasks for o in t.observations)

    @property
    def traced_prompt(self) -> float:
        """x of the traced tasks alone (the SFT context)."""
        return self._mean(t.prompt for t in self.tasks if t.target is not None)


def manual_stats(prompt: float, trace_context: float, trace_target: float, tool_response: float,
                 traced_share: float = 1.0, trace_turns: int = 2) -> DataStats:
    """Stats from given means (tests; planning without data)."""
    turn = max(trace_target - (trace_turns - 1) * tool_response, 0) / trace_turns
    n = 1000
    traced = round(traced_share * n)
    task = TaskLengths(round(prompt), round(trace_context), round(trace_target), [turn] * trace_turns,
                       [round(tool_response)] * (trace_turns - 1))
    return DataStats("given lengths", "given", n, traced, [task])


# The paper recipes' training file, made by the user from FTRL's training split (docs/scaling.md, section 6).
PAPER_TRACE_FILE = "data/ftrl_train_traces.jsonl"


def stand_in_traces():
    """The planner's stand-in for PAPER_TRACE_FILE when it is not made yet: the verified expert traces of
    the bundled FTRL test set (146 of its 152 rows), the same benchmark's format and lengths. Built
    once (mined and replayed in the sandbox, about 15 s of CPU) into the cache, then reused."""
    import os
    import sys
    import tempfile

    from pact_cotrain.data.bundled import BUNDLED, bundled_path
    from pact_cotrain.data.trace_format import write_tasks
    from pact_cotrain.data.trace_mining import build_traces
    from pact_cotrain.models import cache_root

    path = cache_root() / "data" / f"ftrl_test_traces_{BUNDLED['ftrl'][1][:12]}.jsonl"
    if not path.is_file():
        print(f"pact plan: {PAPER_TRACE_FILE} not found; building the stand-in (the bundled FTRL test set's "
              f"traces) once into {path}", file=sys.stderr, flush=True)
        traced, _ = build_traces("ftrl", str(bundled_path("ftrl")))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        write_tasks(tmp, traced)
        os.replace(tmp, path)  # atomic: a parallel plan never reads half a file
    return path


def measure_data(cfg: dict, tokenizer, counted_with: str, trace_view: str, limit: int = MEASURE_LIMIT) -> DataStats:
    """Lengths of the configured data source's tasks (at most `limit`, evenly spaced) in tokens."""
    from pact_cotrain.recipes.train import load_train_tasks

    data = cfg["data"]
    stand_in = None
    if data["source"] == "file":
        from pathlib import Path

        if data.get("path") == PAPER_TRACE_FILE and not Path(data["path"]).is_file():
            stand_in = data = {**data, "path": str(stand_in_traces())}
        elif not data.get("path") or not Path(data["path"]).is_file():
            raise UserError(f"data.path {data.get('path')!r} is not a file; the planner measures prompt and trace "
                            f"lengths from the training data: give data.path=FILE (e.g. lengths from the bundled FTRL "
                            f"test set: `pact data traces ftrl --out ftrl_lengths.jsonl`), or data.source=toolworld")
    try:
        tasks = load_train_tasks(data)
    except ValueError as exc:  # an unknown data.source
        raise UserError(str(exc)) from None
    n_traced = sum(1 for t in tasks if t.trace)
    step = max(len(tasks) / limit, 1.0)
    picked = [tasks[int(i * step)] for i in range(min(limit, len(tasks)))]
    where = data["path"] if data["source"] == "file" else f"toolworld {data.get('split', 'train')} split"
    if stand_in:
        where = (f"STAND-IN for {PAPER_TRACE_FILE} (not found): the bundled FTRL test set's verified traces, "
                 f"for prompt and trace lengths only (make the real file: pact data traces ftrl --data "
                 f"FTRL_TRAIN.jsonl --out {PAPER_TRACE_FILE}); {where}")
    return DataStats(where, counted_with, len(tasks), n_traced,
                     [task_lengths(task, tokenizer, trace_view) for task in picked])


def task_lengths(task, tokenizer, trace_view: str) -> TaskLengths:
    from pact_cotrain.render import apply_template, encode, observation_text, prompt_text

    context = prompt_text(tokenizer, task)
    prompt = len(encode(tokenizer, context))
    if not task.trace:
        return TaskLengths(prompt, None, None, [], [])
    trace_context = len(encode(tokenizer, prompt_text(tokenizer, task, trace_view)))
    full = apply_template(tokenizer, task.messages + task.trace, task.tools, add_generation_prompt=False)
    target = len(encode(tokenizer, full[len(context):] if full.startswith(context) else full))
    observations, pending = [], []
    for msg in task.trace:
        if msg["role"] == "tool":
            pending.append(msg)
        elif pending:
            observations.append(len(encode(tokenizer, observation_text(tokenizer, pending, task.tools))))
            pending = []
    turns = sum(1 for m in task.trace if m["role"] == "assistant")
    per_turn = max(target - sum(observations), 0) / max(turns, 1)
    return TaskLengths(prompt, trace_context, target, [per_turn] * turns, observations)


# ------------------------------------------------------------------------------------ rollouts


@dataclass
class RolloutShape:
    turns: float  # assistant turns per episode
    generated: float  # G: sampled tokens per episode
    inserted: float  # I: environment tokens per episode
    source: str

    @property
    def completion(self) -> float:
        return self.generated + self.inserted


def simulate_episode(turn_tokens: list[float], observations: list[float], max_turns: int, max_new: int,
                     max_completion: int) -> tuple[int, float, float]:
    """(turns, generated, inserted) of one episode whose turns want `turn_tokens` tokens, under the
    engine's caps (module docstring). A turn that wants max_new or more is cut (never finishes)."""
    completion = generated = inserted = 0.0
    turns = 0
    for i, want in enumerate(turn_tokens[:max_turns]):
        budget = max_completion - completion
        if budget <= 0:
            break
        n = min(want, max_new, budget)
        completion, generated, turns = completion + n, generated + n, turns + 1
        if n < min(want, max_new) or turns >= max_turns or i == len(turn_tokens) - 1:
            break  # cut by max_completion_tokens, out of turns, or the last turn answered
        obs = (observations[min(i, len(observations) - 1)] if observations else 0.0) + (1 if want >= max_new else 0)
        if completion + obs >= max_completion:
            break
        completion, inserted = completion + obs, inserted + obs
    return turns, generated, inserted


def caps_shape(sampling: dict, stats: DataStats) -> RolloutShape:
    """Every turn runs to max_new_tokens_per_turn for max_turns turns: the most a rollout can cost."""
    turns = sampling["max_turns"]
    t, g, i = simulate_episode([sampling["max_new_tokens_per_turn"]] * turns, [stats.tool_response],
                               turns, sampling["max_new_tokens_per_turn"], sampling["max_completion_tokens"])
    return RolloutShape(t, g, i, f"caps (upper bound): every turn runs to max_new_tokens_per_turn="
                                 f"{sampling['max_new_tokens_per_turn']}, max_turns={turns}, "
                                 f"max_completion_tokens={sampling['max_completion_tokens']}")


def trace_shape(sampling: dict, stats: DataStats) -> RolloutShape:
    """Rollouts as long as the expert traces (their turns, their tokens per turn), under the caps."""
    runs = [simulate_episode(t.turn_tokens, t.observations, sampling["max_turns"], sampling["max_new_tokens_per_turn"],
                             sampling["max_completion_tokens"]) for t in stats.tasks if t.turn_tokens]
    if not runs:
        raise UserError("--rollout-shape trace: the data has no expert traces to take the rollout shape from")
    mean = [sum(r[i] for r in runs) / len(runs) for i in range(3)]
    return RolloutShape(*mean, "as long as the expert traces (their turns and tokens per turn), under the caps")


def measured_shape(sampling: dict, measured: dict, where: str) -> RolloutShape:
    """A calibration file's measured episodes (mean turns, generated and inserted tokens per episode),
    scaled down where this config's caps are lower than what was measured."""
    turns, generated, inserted = (float(measured[k]) for k in ("turns", "generated", "inserted"))
    turn_scale = min(1.0, sampling["max_turns"] / turns) if turns else 1.0
    scale = min(turn_scale, sampling["max_completion_tokens"] / max(generated + inserted, 1e-9))
    per_turn = min(1.0, sampling["max_new_tokens_per_turn"] * turns / generated) if generated else 1.0
    return RolloutShape(turns * turn_scale, generated * min(scale, per_turn), inserted * scale, f"measured ({where})")


# ------------------------------------------------------------------------------------ passes


def tri(before: float, n: float) -> float:
    """Sum of attended positions of n causal tokens after `before` tokens: sum_{i=1..n} (before + i)."""
    return n * before + n * (n + 1) / 2


@dataclass
class Pass:
    name: str
    kind: str  # "prefill" | "decode" | "train" (forward + backward) | "forward"
    tokens: float  # tokens through the model (decode: generated tokens)
    attended: float  # sum over those tokens of the positions each attends to
    logit_tokens: float  # positions whose output logits are computed
    groups: float = 0.0  # forward groups (contexts) in the pass
    group_len: float = 0.0  # tokens of one group (mask size)
    # query-key pairs the attention kernel computes: n^2 per group of n tokens under a custom mask (a kernel
    # given an arbitrary mask skips nothing), `attended` (causal) where there is none; None: `attended`
    computed: float | None = None


PASS_ORDER = ("rollouts: prefill", "rollouts: decode", "prompt-only scoring", "[x; h] re-scoring",
              "old-policy scoring", "OPSD teacher on [x; h]", "SFT on traces")


@dataclass
class StepInputs:
    """What a step's passes depend on beyond the plan."""

    prompts: int  # P, one process's
    k: int
    num_iterations: int
    anchor_mode: str
    surrogate: str
    stats: DataStats
    shape: RolloutShape
    trace_contexts: dict = field(default_factory=dict)  # trace view -> mean [x; h] tokens
    per_group: bool = True  # one forward per context group (train.forward_per_group; the CPU default)
    budget: int | None = None  # train.micro_batch_tokens
    trace_view: str = "full"  # method.trace_view: the [x; h] OPSD's teacher reads


def scoring_shares(plan, inputs: StepInputs) -> tuple[float, float, bool]:
    """(s_p, s_t, trace pass needs gradient): the shares of rollout rows scored prompt-only and
    under [x; h] (`PACTTrainer._scoring_rows`, with untraced prompts always anchored)."""
    from pact_cotrain import losses

    tau = inputs.stats.traced_share
    grad = inputs.surrogate not in losses.PROMPT_GRADIENT_FORMS
    if inputs.anchor_mode == "mixture":
        return float(plan.anchor_q > 0), float(plan.anchor_q < 1), grad
    anchored = plan.anchor_q + (1 - plan.anchor_q) * (1 - tau)
    s_p = 1.0 if not grad else anchored
    return s_p, (1 - plan.anchor_q) * tau, grad


def split_group(m: int, context: float, completion: float, budget: int | None) -> list[int]:
    """Completions per forward of one group of m rows under a micro-batch budget of `budget` tokens: a
    group that does not fit is split, every piece holding the context once (`training.microbatch`:
    a row that does not fit even alone gets a part of its own). [m] without a budget."""
    if budget is None or context + m * completion <= budget or m <= 1:
        return [m]
    per = max(1, int((budget - context) // completion)) if completion > 0 else m
    full, rest = divmod(m, per)
    return [per] * full + ([rest] if rest else [])


def _scoring(name: str, kind: str, groups: float, rows: float, context: float, completion: float,
             per_group: bool = True, budget: int | None = None) -> Pass:
    """`groups` groups of [context ; c_1 ; ... ; c_m], m = rows / groups, split under `budget`
    (`split_group`); a piece is masked (dense attention) unless it is one completion in a forward of
    its own: one forward per group, or a budget too small for the next row beside it."""
    m = round(rows / groups) if groups else 0
    if not m:
        return Pass(name, kind, 0.0, 0.0, 0.0)
    pieces = split_group(m, context, completion, budget)
    causal = lambda j: tri(0, context) + j * tri(context, completion)  # noqa: E731
    next_row = completion if m > 1 else context + completion  # the next row: same group, or a new one
    alone = per_group or (budget is not None and context + completion + next_row > budget)
    tokens = sum(context + j * completion for j in pieces)
    computed = sum(causal(j) if alone and j == 1 else (context + j * completion) ** 2 for j in pieces)
    return Pass(name, kind, groups * tokens, groups * sum(causal(j) for j in pieces), rows * completion,
                groups * len(pieces), context + pieces[0] * completion, groups * computed)


def step_passes(plan, inputs: StepInputs, rollout_step: bool = True) -> list[Pass]:
    """The passes of one process's step under `plan` (a `methods.StepPlan`), expected over q's draw."""
    P, K = inputs.prompts, inputs.k
    B = P * K
    stats, shape = inputs.stats, inputs.shape
    x, C = stats.prompt, shape.completion
    passes: list[Pass] = []
    if plan.rl:
        if rollout_step:
            ctx = inputs.trace_contexts.get(plan.rollout_trace_view, stats.trace_context) \
                if plan.rollout_trace_view else x
            mid = ctx + C / 2  # a rollout token attends to its context and, on average, half the episode
            passes.append(Pass("rollouts: prefill", "prefill", B * (ctx + shape.inserted),
                               B * (tri(0, ctx) + shape.inserted * mid), 0.0, B, ctx + C))
            passes.append(Pass("rollouts: decode", "decode", B * shape.generated, B * shape.generated * mid,
                               B * shape.generated, B, ctx + C))
        s_p, s_t, trace_grad = scoring_shares(plan, inputs)
        view = plan.rollout_trace_view
        xh = inputs.trace_contexts.get(view, stats.trace_context) if view else stats.trace_context
        if inputs.anchor_mode == "mixture" and s_t:
            tau = stats.traced_share  # untraced rows are scored after x in the "trace" pass
            xh = tau * xh + (1 - tau) * x
        per_group, budget = inputs.per_group, inputs.budget
        if s_p:
            passes.append(_scoring("prompt-only scoring", "train", P * s_p, B * s_p, x, C, per_group, budget))
        if s_t:
            passes.append(_scoring("[x; h] re-scoring", "train" if trace_grad else "forward", P * s_t, B * s_t, xh, C,
                                   per_group, budget))
        if inputs.num_iterations > 1 and rollout_step:
            # pi_old's no-grad passes (`PACTTrainer._old_logps`): every row prompt-only, and every row in its
            # trace context (x for the rows not scored under [x; h]) when any row is.
            old = _scoring("old-policy scoring", "forward", P, B, x, C, per_group, budget)
            if s_t:
                both = _scoring("old-policy scoring", "forward", P, B, s_t * xh + (1 - s_t) * x, C, per_group, budget)
                old = Pass(old.name, "forward", old.tokens + both.tokens, old.attended + both.attended,
                           old.logit_tokens + both.logit_tokens, old.groups + both.groups, old.group_len,
                           old.computed + both.computed)
            passes.append(old)
        if getattr(plan, "opsd", False) and rollout_step:
            # OPSD's teacher (`PACTTrainer._rl_batch`): the current weights on [x; h], no gradient, every row
            tau = stats.traced_share
            teacher_ctx = tau * inputs.trace_contexts.get(inputs.trace_view, stats.trace_context) + (1 - tau) * x
            passes.append(_scoring("OPSD teacher on [x; h]", "forward", P, B, teacher_ctx, C, per_group, budget))
    if plan.sft_coef > 0 and stats.n_traced:
        n = P * stats.traced_share
        x_sft, t = stats.traced_prompt, stats.trace_target
        passes.append(_scoring("SFT on traces", "train", n, n, x_sft, t, inputs.per_group, inputs.budget))
    return passes


def peak_items(plan, inputs: StepInputs, max_completion: int) -> tuple[list[list], list[list]]:
    """(rollout items, SFT items) of the step with the most tokens under `plan`: every traced prompt
    drawn trace-conditioned, every rollout at `max_completion` tokens, mean context lengths (in
    `training.microbatch.Piece`s, ready for `plan_micro_batches`)."""
    from pact_cotrain.training.microbatch import Piece

    P, K = inputs.prompts, inputs.k
    stats = inputs.stats
    x, xh, C = round(stats.prompt), round(stats.trace_context), max_completion
    rollout: list[list] = []
    if plan.rl:
        s_p, s_t, _ = scoring_shares(plan, inputs)
        traced = math.ceil(P * stats.traced_share) if stats.n_traced else 0
        for g in range(P):
            trace_row = s_t > 0 and g < traced  # the worst draw: no traced prompt anchored
            prompt_row = s_p >= 1 or (s_p > 0 and not trace_row)
            for _ in range(K):
                pieces = []
                if prompt_row:
                    pieces.append(Piece(("prompt", g), x, C))
                if trace_row:
                    pieces.append(Piece(("trace", g), xh, C))
                rollout.append(pieces)
    sft: list[list] = []
    if plan.sft_coef > 0 and stats.n_traced:
        for j in range(math.ceil(P * stats.traced_share)):
            sft.append([Piece(("sft", j), round(stats.traced_prompt), round(stats.trace_target))])
    return rollout, sft
