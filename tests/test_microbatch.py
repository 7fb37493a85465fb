"""Step-level loss normalisation and exact micro-batched optimisation (issue 12 item 1, issue 13 item 6).

* ``token_sum_norm`` trains: the trainer passes Dr. GRPO's constant per-sequence budget.
* ``train.micro_batch_tokens``: one step split into exactly 1, 2 and 4 micro-batches gives the unsplit
  step's gradient and parameters for pact, grpo, sft, chord and opsd at num_iterations 1 and 2; PACT's
  other scoring layouts and aggregations (and GRPO's seq_mean_token_mean) at >= 3 micro-batches.
  The optimiser is plain SGD (update = -lr * gradient), so any error in
  a normaliser shows in the parameters: Adam's first step, g / |g|, would hide a constant factor.
  Rewards are a fixed function of the rollout's tokens, so advantages are not all zero.
* ``sampling.generation_batch_size``: the engine is called with at most that many rollouts at a time.
"""

import copy

import pytest
import torch
from transformers import TrainerCallback

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import tiny_llama
from pact_cotrain.training import microbatch
from pact_cotrain.training.microbatch import MicroBatch, Piece

SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "sampling.max_new_tokens_per_turn=12",
         "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.learning_rate=1e-3", "train.save_steps=0", "train.max_steps=1",
         "method.aggregation=token_sum_norm"]


@pytest.mark.parametrize("name", ["pact", "grpo"])
def test_token_sum_norm_trains(name, tmp_path, tokenizer):
    trainer = build_trainer(load_config(name, SMALL + [f"output_dir={tmp_path}/run"]),
                            model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert trainer.state.global_step == 1 and len(logs) == 1
    assert torch.isfinite(torch.tensor(logs[0]["loss"]))


# ---------------------------------------------------------------------------------- pure functions


def test_pack_by_budget_counts_each_context_once_per_part():
    # Rows of group 0 share a 10-token context: 10 + 3 + 3 = 16 fits 16; the third row starts a part
    # that holds the context again; an item over the budget is a part of its own.
    items = [[Piece("g0", 10, 3)], [Piece("g0", 10, 3)], [Piece("g0", 10, 3)], [Piece("g1", 30, 5)], []]
    assert microbatch.pack_by_budget(items, 16) == [[0, 1], [2], [3], [4]]
    assert microbatch.pack_by_budget(items, 1000) == [[0, 1, 2, 3, 4]]


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "token_sum_norm"])
def test_scaled_part_losses_add_up_to_the_step_loss(aggregation):
    """sum over parts of scale_part * L(part) == L(step), value and gradient, for the anchored RL loss
    (a row with no masked token included) and the component SFT loss."""
    from pact_cotrain import losses

    k = 2
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [0, 0, 0]], dtype=torch.float)
    logp_p, logp_t = (torch.randn(4, 3, generator=gen).requires_grad_() for _ in range(2))
    sft_logp = torch.randn(3, 4, generator=gen).requires_grad_()
    tool = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float)
    reasoning = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0]], dtype=torch.float)
    answer = torch.zeros(3, 4)
    batch = {"plan": None, "completions": [[1, 2], [3], [4, 5, 6], []], "prompt_contexts": [[9] * 4] * 4,
             "trace_contexts": [[9] * 8] * 4, "loss_mask": mask, "advantages": torch.tensor([1.0, -1.0, 0.5, 2.0]),
             "anchor": torch.tensor([True, True, False, False]), "sft_contexts": [[1]] * 3,
             "sft_targets": [[1, 2, 3], [1, 2, 3, 4], [1, 2, 3]], "sft_toolcall_mask": tool, "sft_reasoning_mask": reasoning,
             "sft_answer_mask": answer}

    def rl(lp, lt, m, adv, anchor):
        return losses.anchored_rl_loss(lp, None, lt, None, adv, m, anchor, aggregation=aggregation, max_tokens=5)[0]

    def sft(lp, r, t, a):
        return losses.component_sft_loss(lp, r, t, 0.5, 1.0, a, 0.5)[0]

    step = rl(logp_p, logp_t, mask, batch["advantages"], batch["anchor"]) + sft(sft_logp, reasoning, tool, answer)
    ref_grads = torch.autograd.grad(step, [logp_p, logp_t, sft_logp])
    parts = microbatch.split_batch(batch, 7, k, batch["anchor"], ~batch["anchor"], aggregation, 5, (0.5, 0.5))
    plan = microbatch.plan_micro_batches(microbatch.rollout_pieces(batch, k, batch["anchor"], ~batch["anchor"]),
                                         microbatch.sft_pieces(batch), 7)
    assert len(parts) >= 3
    total = 0.0
    for sub, part in zip(parts, plan):
        rows, traces = list(part.rows), list(part.sft)
        if rows:
            width = sub["loss_mask"].shape[1]
            total = total + sub["rl_loss_scale"] * rl(logp_p[rows, :width], logp_t[rows, :width], sub["loss_mask"],
                                                      sub["advantages"], sub["anchor"])
            assert sub["row_group"] == [i // k for i in rows]
        if traces:
            width = sub["sft_toolcall_mask"].shape[1]
            total = total + sub["sft_loss_scale"] * sft(sft_logp[traces, :width], sub["sft_reasoning_mask"],
                                                        sub["sft_toolcall_mask"], sub["sft_answer_mask"])
    assert float(total.detach()) == pytest.approx(float(step.detach()), rel=1e-6)
    for g, ref in zip(torch.autograd.grad(total, [logp_p, logp_t, sft_logp]), ref_grads):
        assert torch.allclose(g, ref, atol=1e-7)
    with pytest.raises(ValueError, match="does not know how to split"):
        microbatch.split_batch({**batch, "new_per_row_field": [0] * 4}, 7, k, None, None, aggregation, None, None)


def test_slice_batch_keeps_groups_and_trims_width():
    batch = {"plan": None, "completions": [[1], [2, 3], [4, 5, 6]], "loss_mask": torch.ones(3, 3),
             "prompt_contexts": [[7], [7], [8]], "advantages": torch.arange(3.0)}
    sub = microbatch.slice_batch(batch, MicroBatch((1, 2), ()), k=2)
    assert sub["row_group"] == [0, 1] and sub["completions"] == [[2, 3], [4, 5, 6]]
    assert sub["loss_mask"].shape == (2, 3) and sub["advantages"].tolist() == [1.0, 2.0]
    assert "sft_targets" not in sub


def test_generation_chunks():
    assert microbatch.generation_chunks(5, 2, None) == [slice(0, 5)]
    assert microbatch.generation_chunks(5, 2, 4) == [slice(0, 2), slice(2, 4), slice(4, 5)]
    with pytest.raises(ValueError, match="multiple of train.k"):
        microbatch.generation_chunks(5, 2, 3)
    assert microbatch.chunk_seed(11, 0) == 11 and microbatch.chunk_seed(11, 1) != 11


def test_merge_step_metrics():
    metrics = {"loss/rl": [9.0, 0.25, 0.5], "entropy": [1.0, 2.0, 4.0], "reward": [0.5]}
    microbatch.merge_step_metrics(metrics, {"loss/rl": 1, "entropy": 1, "reward": 0})
    assert metrics == {"loss/rl": [9.0, 0.75], "entropy": [1.0, 3.0], "reward": [0.5]}


# ---------------------------------------------------------------------------------- the trainer

EXACT = ["train.k=4", "train.prompts_per_step=2", "data.n_train=6", "sampling.max_new_tokens_per_turn=10",
         "sampling.max_completion_tokens=30", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.save_steps=0", "train.max_steps=1", "train.max_grad_norm=0",
         "sampling.temperature=1.5"]
LR = 1.0  # SGD: the parameter change is the gradient itself


class _TokenReward:
    """A reward that varies across a group's rollouts (a random tiny model solves nothing)."""

    def score(self, episode, task):
        return {"reward": float(sum(episode.completion_ids) % 7)}


class _GradCapture(TrainerCallback):
    def __init__(self):
        self.grads = []

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        self.grads.append({n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None})


def _train(tokenizer, tmp_path, name, overrides):
    cfg = load_config(name, EXACT + overrides + [f"output_dir={tmp_path}/run-{len(list(tmp_path.iterdir()))}"])
    model = tiny_llama(tokenizer)
    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    trainer.episode_reward = _TokenReward()
    capture = _GradCapture()
    trainer.add_callback(capture)
    trainer.optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    trainer.train()
    params = {n: p.detach().clone() for n, p in model.named_parameters()}
    return trainer, params, capture.grads


def _budget(trainer) -> int:
    """A budget that splits the step's rollout groups (a context and two completions) and its traces."""
    batch = trainer._buffered_inputs[0]
    if "completions" not in batch:
        return 1  # SFT only: one trace per part
    # GRPO scores only the prompt-only contexts (its batch also carries [x; h] contexts it never scores).
    scored = batch["prompt_contexts"] + ([] if trainer.method.name == "grpo" else batch["trace_contexts"])
    longest = max(len(c) for c in scored)
    # Room for one context and one longest completion: a group of k = 4 is split even when its
    # completions are short (with room for two, GRPO's short rollouts fit a whole group in a part).
    return longest + max(len(c) for c in batch["completions"])


# Variants of the scoring layout and aggregation, each split into >= 3 parts. The methods themselves, at
# exactly 1, 2 and 4 parts and num_iterations 1 and 2, are `test_exactly_n_parts_equal_the_unsplit_step`.
CASES = {
    "pact_unanchored": ("pact", ["method.anchor_q=0.0"]),
    "pact_mixture": ("pact", ["method.anchor_mode=mixture", "method.anchor_q=0.3"]),
    "pact_one_forward": ("pact", ["method.anchor_q=0.5", "seed=1", "train.forward_per_group=false"]),
    "pact_seq_mean": ("pact", ["method.anchor_q=0.5", "seed=1", "method.aggregation=seq_mean_token_mean"]),
    "pact_token_sum_norm": ("pact", ["method.anchor_q=0.5", "seed=1", "method.aggregation=token_sum_norm"]),
    "grpo_seq_mean": ("grpo", ["method.aggregation=seq_mean_token_mean"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_micro_batched_step_equals_unsplit(case, tmp_path, tokenizer):
    name, overrides = CASES[case]
    ref, ref_params, ref_grads = _train(tokenizer, tmp_path, name, overrides)
    batch = ref._buffered_inputs[0]
    budget = _budget(ref)
    split, params, grads = _train(tokenizer, tmp_path, name, overrides + [f"train.micro_batch_tokens={budget}"])

    logged = [h for h in split.state.log_history if "micro_batches" in h]
    assert logged and min(h["micro_batches"] for h in logged) >= 3
    if "completions" in batch:  # the same rollouts, and a step whose RL gradient is not zero
        assert split._buffered_inputs[0]["completions"] == batch["completions"]
        assert bool(batch["advantages"].abs().sum() > 0)
        if "anchor_q=0.5" in overrides:  # both kinds of rows, one shared-prefix context each
            assert 0 < int(batch["anchor"].sum()) < len(batch["anchor"])
    assert len(grads) == len(ref_grads) == split.state.global_step
    for step_grads, step_ref in zip(grads, ref_grads):
        scale = max(float(g.abs().max()) for g in step_ref.values())
        assert scale > 0
        worst = max(float((step_grads[n] - g).abs().max()) for n, g in step_ref.items())
        assert worst <= 1e-5 * scale, f"{case}: gradient differs by {worst:.3g} (scale {scale:.3g})"
    worst = max(float((params[n] - p).abs().max()) for n, p in ref_params.items())
    assert worst <= 1e-6, f"{case}: parameters differ by {worst:.3g}"


def _assert_same_update(case, grads, params, ref_grads, ref_params, rel: float = 1e-5):
    assert len(grads) == len(ref_grads)
    for step_grads, step_ref in zip(grads, ref_grads):
        scale = max(float(g.abs().max()) for g in step_ref.values())
        assert scale > 0
        worst = max(float((step_grads[n] - g).abs().max()) for n, g in step_ref.items())
        assert worst <= rel * scale, f"{case}: gradient differs by {worst:.3g} (scale {scale:.3g})"
    worst = max(float((params[n] - p).abs().max()) for n, p in ref_params.items())
    assert worst <= 1e-6, f"{case}: parameters differ by {worst:.3g}"


def _budget_for_parts(trainer, n_parts: int) -> int | None:
    """The largest `micro_batch_tokens` that splits the reference step's batch into exactly `n_parts`
    (planned as `training_step` plans it: `microbatch.split_batch`'s items and packing); None if no budget
    gives that count."""
    batch = trainer._buffered_inputs[0]
    plan = batch["plan"]
    rl = plan.rl and "advantages" in batch
    prompt_rows, trace_rows = trainer._scoring_rows(batch, plan) if rl else (None, None)
    items = microbatch.rollout_pieces(batch, trainer.num_generations, prompt_rows, trace_rows) if rl else []
    items += microbatch.sft_pieces(batch) if plan.sft_coef > 0 and "sft_targets" in batch else []
    for budget in range(microbatch.forward_tokens(items), 0, -1):
        if len(microbatch.pack_by_budget(items, budget)) == n_parts:
            return budget
    return None


class _Replay:
    """Records the reference run's rollouts and hands the same episodes to the split runs (rollouts are
    seeded and identical anyway, `test_micro_batched_step_equals_unsplit`; replaying skips their cost)."""

    def __init__(self, monkeypatch):
        from pact_cotrain.rollout.engine import RolloutEngine

        self.recorded: dict = {}
        self.replaying = False
        original = RolloutEngine.rollout
        replay = self

        def rollout(engine, tasks, k=1, seed=None, **kwargs):
            key = (tuple(t.id for t in tasks), k, seed, repr(sorted(kwargs.items())))
            if replay.replaying:
                return copy.deepcopy(replay.recorded[key])
            replay.recorded[key] = copy.deepcopy(episodes := original(engine, tasks, k=k, seed=seed, **kwargs))
            return episodes

        monkeypatch.setattr(RolloutEngine, "rollout", rollout)


# Four prompts of k = 2 rollouts (and four traces): a part per group is then one budget, so exactly 4 parts
# exist. With two groups of k = 4, splitting a group re-pays its context, and the part count went 3 -> 5
# (GRPO, no budget gave 4). pact with anchor_q 0.5: both kinds of rows.
N_PARTS_RUN = ["train.k=2", "train.prompts_per_step=4", "data.n_train=8"]
METHOD_RUNS = {"pact": ["method.anchor_q=0.5"], "grpo": [], "sft": [], "chord_phi": [], "opsd": []}


@pytest.mark.parametrize("iterations", [1, 2])
@pytest.mark.parametrize("name", list(METHOD_RUNS))
def test_exactly_n_parts_equal_the_unsplit_step(name, iterations, tmp_path, tokenizer, monkeypatch):
    """One step (two with num_iterations 2, the batch reused with its pi_old pass) split into exactly 1, 2
    and 4 micro-batches gives the unsplit step's gradients (1e-5 relative) and parameters (1e-6)."""
    overrides = N_PARTS_RUN + METHOD_RUNS[name] + [f"train.num_iterations={iterations}", f"train.max_steps={iterations}"]
    replay = _Replay(monkeypatch)
    ref, ref_params, ref_grads = _train(tokenizer, tmp_path, name, overrides)
    assert len(ref_grads) == iterations == ref.state.global_step
    batch = ref._buffered_inputs[0]
    if "completions" in batch:  # a step whose RL gradient is not zero
        assert bool(batch["advantages"].abs().sum() > 0)
        if name == "pact":
            assert 0 < int(batch["anchor"].sum()) < len(batch["anchor"])
    replay.replaying = True
    for n_parts in (1, 2, 4):
        budget = _budget_for_parts(ref, n_parts)
        assert budget is not None, f"{name}: no micro_batch_tokens splits the step into exactly {n_parts} parts"
        split, params, grads = _train(tokenizer, tmp_path, name, overrides + [f"train.micro_batch_tokens={budget}"])
        assert split._buffered_inputs[0].get("completions") == batch.get("completions")
        logged = [h["micro_batches"] for h in split.state.log_history if "micro_batches" in h]
        assert logged == [float(n_parts)] * iterations, f"{name}: {logged} parts, expected {n_parts}"
        # OPSD's advantage is itself a difference of log-probs (student minus teacher, each from its own
        # forward): how a step is packed moves them by float rounding (~1e-7), and the advantage carries that
        # into the gradient (measured 4e-5 of its scale at 4 parts). Every other method's advantage is fixed
        # by the rewards. 2e-4 still fails a wrong normaliser or a dropped row by orders of magnitude.
        _assert_same_update(f"{name} x{iterations} in {n_parts} parts", grads, params, ref_grads, ref_params,
                            rel=2e-4 if name == "opsd" else 1e-5)


def test_generation_batch_size_chunks_rollouts(tmp_path, tokenizer, monkeypatch):
    from pact_cotrain.rollout import engine as engine_module

    calls = []
    original = engine_module.RolloutEngine.rollout

    def spy(self, tasks, k=1, seed=None, **kwargs):
        calls.append((len(tasks) * k, seed))
        return original(self, tasks, k=k, seed=seed, **kwargs)

    monkeypatch.setattr(engine_module.RolloutEngine, "rollout", spy)
    runs = {}
    for size in (None, 4, 8):
        calls.clear()
        overrides = ["train.prompts_per_step=3", "train.k=2", "sampling.greedy=true"]
        if size is not None:
            overrides.append(f"sampling.generation_batch_size={size}")
        trainer, _, _ = _train(tokenizer, tmp_path, "grpo", overrides)
        runs[size] = (list(calls), trainer._buffered_inputs[0])
    assert [n for n, _ in runs[None][0]] == [6]
    assert [n for n, _ in runs[4][0]] == [4, 2] and [n for n, _ in runs[8][0]] == [6]
    assert len({seed for _, seed in runs[4][0]}) == 2  # each chunk its own seed
    ref = runs[None][1]
    for size in (4, 8):  # the same rollouts, in the same order (greedy: no random draw)
        batch = runs[size][1]
        assert [ep.task_id for ep in batch["episodes"]] == [ep.task_id for ep in ref["episodes"]]
        assert batch["completions"] == ref["completions"]
    with pytest.raises(ValueError, match="multiple of train.k"):
        _train(tokenizer, tmp_path, "grpo", ["train.k=2", "sampling.generation_batch_size=3"])


@pytest.mark.parametrize("name, overrides", [("grpo", []), ("pact", ["method.anchor_q=0.0"]), ("sft", [])])
def test_forward_tokens_count_every_context_once_and_every_scored_completion(name, overrides, tmp_path, tokenizer):
    """`forward_tokens`: what a step's training forward processes. GRPO: each prompt-only context once and
    its K rollouts; PACT at q = 0: each trace-conditioned context once, its rollouts, and the expert traces
    with their contexts (the tokens that make PACT's step dearer than GRPO's)."""
    trainer, _, _ = _train(tokenizer, tmp_path, name, overrides)
    batch = trainer._buffered_inputs[0]
    expected = 0
    if "completions" in batch:
        k = trainer.num_generations
        contexts = batch["prompt_contexts"] if name == "grpo" else batch["trace_contexts"]
        expected += sum(len(contexts[g * k]) for g in range(len(batch["completions"]) // k))
        expected += sum(len(c) for c in batch["completions"])
    if name != "grpo":
        expected += sum(len(c) + len(t) for c, t in zip(batch["sft_contexts"], batch["sft_targets"]))
    logged = [h["forward_tokens"] for h in trainer.state.log_history if "forward_tokens" in h]
    assert logged == [expected] and expected > 0
