"""`pact plan`: token counts, FLOPs, memory sharding, calibration and the CLI, on hand-computed cases."""

import json

import pytest

from pact_cotrain.cli import main
from pact_cotrain.planning import cost, tokens
from pact_cotrain.planning.run import PlanOptions, make_plan
from pact_cotrain.planning.shapes import ModelShape, model_shape, table_key

# x = 100, [x; h] = 150, trace target 40, tool response 10 tokens; every task traced
STATS = tokens.manual_stats(prompt=100, trace_context=150, trace_target=40, tool_response=10)
# P = 2 prompts x K = 4; caps: 3 turns, 20 per turn, 50 per episode; q = 0.5
TINY = ["model=Qwen/Qwen3-0.6B", "train.prompts_per_step=2", "train.k=4", "train.max_steps=4", "sampling.max_turns=3",
        "sampling.max_new_tokens_per_turn=20", "sampling.max_completion_tokens=50", "method.anchor_q=0.5"]


def step_tokens(config, overrides=(), **options):
    plan = make_plan(config, [*TINY, *overrides], PlanOptions(stats=STATS, **options))
    phase = plan.phases[0]
    return plan, {name: p.tokens / phase.steps for name, p in phase.passes.items()}


def test_caps_episode_is_cut_as_the_engine_cuts_it():
    # turn 1: 20 tokens, cut by the per-turn cap -> end-of-turn token + 10 response tokens inserted (31);
    # turn 2: 19 tokens left of the 50 budget -> cut by max_completion_tokens, episode over.
    shape = tokens.caps_shape({"max_turns": 3, "max_new_tokens_per_turn": 20, "max_completion_tokens": 50}, STATS)
    assert (shape.turns, shape.generated, shape.inserted, shape.completion) == (2, 39, 11, 50)


def test_pact_step_tokens_by_hand():
    _, per_step = step_tokens("pact")
    assert per_step["rollouts: prefill"] == pytest.approx(8 * (100 + 11))
    assert per_step["rollouts: decode"] == pytest.approx(8 * 39)
    # anchored half: 1 group of x + 4 completions of 50; the other half under [x; h]
    assert per_step["prompt-only scoring"] == pytest.approx(1 * 100 + 4 * 50)
    assert per_step["[x; h] re-scoring"] == pytest.approx(1 * 150 + 4 * 50)
    assert per_step["SFT on traces"] == pytest.approx(2 * (100 + 40))
    assert "old-policy scoring" not in per_step


def test_pact_exceeds_grpo_by_trace_context_and_sft_tokens():
    _, pact = step_tokens("pact")
    _, grpo = step_tokens("grpo")
    assert set(grpo) == {"rollouts: prefill", "rollouts: decode", "prompt-only scoring"}
    assert grpo["prompt-only scoring"] == pytest.approx(2 * 100 + 8 * 50)
    assert pact["rollouts: decode"] == grpo["rollouts: decode"]
    scoring = lambda p: sum(v for k, v in p.items() if not k.startswith("rollouts"))  # noqa: E731
    # P (1 - q) (xh - x) extra context tokens + P (x + t) SFT tokens
    assert scoring(pact) - scoring(grpo) == pytest.approx(2 * 0.5 * (150 - 100) + 2 * (100 + 40))


def test_old_policy_scoring_when_a_batch_is_reused():
    plan, per_step = step_tokens("grpo", ["train.num_iterations=2"])
    assert plan.phases[0].rollout_steps == 2  # rollouts every other step of 4
    assert per_step["old-policy scoring"] == pytest.approx((2 * 100 + 8 * 50) / 2)


@pytest.mark.parametrize("config, present, absent", [
    ("sft", {"SFT on traces"}, {"rollouts: decode", "prompt-only scoring"}),
    ("chord_phi", {"SFT on traces", "prompt-only scoring"}, {"[x; h] re-scoring"}),
    ("hint_rollouts", {"[x; h] re-scoring", "rollouts: decode"}, {"prompt-only scoring", "SFT on traces"}),
    ("ftrl", {"prompt-only scoring"}, {"[x; h] re-scoring", "SFT on traces"}),
    ("toolrl", {"prompt-only scoring"}, {"[x; h] re-scoring", "SFT on traces"}),
    ("matchtir", {"prompt-only scoring"}, {"[x; h] re-scoring", "SFT on traces"}),
])
def test_methods_plan_their_passes(config, present, absent):
    _, per_step = step_tokens(config)
    assert present <= set(per_step) and not absent & set(per_step)


def test_hint_rollouts_prefill_the_trace_conditioned_context():
    _, per_step = step_tokens("hint_rollouts")
    assert per_step["rollouts: prefill"] == pytest.approx(8 * (150 + 11))
    assert per_step["[x; h] re-scoring"] == pytest.approx(2 * 150 + 8 * 50)


def test_phased_config_plans_each_phase_with_its_stop_rule():
    plan = make_plan("sft_then_matchtir", TINY, PlanOptions(stats=STATS))
    sft, rl = plan.phases
    assert sft.steps == 500  # one epoch: 1000 traced tasks / 2 prompts per step
    assert set(sft.passes) == {"SFT on traces"} and rl.steps == 4 and "rollouts: decode" in rl.passes
    assert plan.total_seconds == pytest.approx(sft.total_seconds + rl.total_seconds)


def test_flops_formula_by_hand():
    shape = ModelShape("t", n_layers=2, hidden=4, intermediate=8, n_heads=2, n_kv_heads=1, head_dim=2, vocab=10,
                       tied_embeddings=True)
    # per layer: q,k,v 4*(4+2+2) + o 4*4 + MLP 3*4*8 + norms 2*4 = 152; 2 layers + embedding 40 + final norm 4
    assert shape.n_params == 348 and shape.matmul_params == 308
    p = tokens.Pass("x", "train", tokens=10, attended=tokens.tri(0, 10), logit_tokens=4)
    forward = 2 * (308 - 40) * 10 + 2 * 40 * 4 + 4 * 2 * 4 * 55
    assert cost.forward_flops(p, shape) == forward == 7440
    assert cost.pass_flops(p, shape, checkpointing=False) == 3 * forward
    assert cost.pass_flops(p, shape, checkpointing=True) == 4 * forward


def test_known_shapes_match_published_sizes():
    assert model_shape("Qwen/Qwen3-4B")[0].n_params == pytest.approx(4.02e9, rel=0.01)
    assert model_shape("Qwen/Qwen3-8B")[0].n_params == pytest.approx(8.19e9, rel=0.01)
    assert model_shape("HuggingFaceTB/SmolLM2-135M-Instruct")[0].n_params == pytest.approx(134.5e6, rel=0.01)
    assert table_key("smollm2-135m-instruct") == "smollm2-135m"


def _memory(plan) -> dict:
    return {line.name: line.bytes for line in plan.phases[0].memory.lines}


@pytest.mark.parametrize("sharding, sharded", [("zero3", {"weights", "gradients", "AdamW moments"}),
                                               ("zero2", {"gradients", "AdamW moments"}),
                                               ("fsdp", {"weights", "gradients", "AdamW moments"}),
                                               ("none", set())])
def test_memory_shards_with_gpus(sharding, sharded):
    one = _memory(make_plan("pact", TINY, PlanOptions(stats=STATS, gpus=1, sharding=sharding)))
    eight = _memory(make_plan("pact", TINY, PlanOptions(stats=STATS, gpus=8, sharding=sharding)))
    for name in ("weights", "gradients", "AdamW moments"):
        assert eight[name] == pytest.approx(one[name] / (8 if name in sharded else 1))
    assert eight["activations"] == one["activations"]  # each GPU runs its own P prompts


def test_memory_says_when_it_does_not_fit():
    plan = make_plan("pact", [*TINY, "model=Qwen/Qwen3-8B"], PlanOptions(stats=STATS, gpus=1, gpu_memory_gb=40))
    memory = plan.phases[0].memory
    assert memory.total > 16 * 8.19e9 and not memory.fits  # fp32 weights, grads, moments: 16 B per parameter


def test_calibration_sets_rates_and_rollout_shape(tmp_path):
    path = tmp_path / "cal.json"
    path.write_text(json.dumps({"train_flops_per_s": 1e11, "decode_tokens_per_s": 100.0, "optimizer_bytes_per_s": 1e10,
                                "rollout": {"turns": 2, "generated": 30, "inserted": 10}}))
    plan = make_plan("grpo", TINY, PlanOptions(stats=STATS, device="cpu", gpu_memory_gb=24, calibration=str(path)))
    phase = plan.phases[0]
    assert (plan.rollout.generated, plan.rollout.inserted) == (30, 10)
    assert phase.seconds["rollouts"] / phase.steps == pytest.approx(8 * 30 / 100.0)
    assert phase.seconds["optimiser"] / phase.steps == pytest.approx(28 * plan.shape.n_params / 1e10)
    flops = phase.passes["prompt-only scoring"].flops / phase.steps
    assert phase.seconds["training"] / phase.steps == pytest.approx(flops / 1e11)


def test_cli_prints_the_plan(capsys):
    assert main(["plan", "--config", "pact", "--gpus", "2", "--gpu-memory", "80", "model=Qwen/Qwen3-0.6B",
                 "data.n_train=6"]) == 0
    out = capsys.readouterr().out
    for heading in ("Data:", "Rollouts:", "Tokens and FLOPs", "[x; h] re-scoring", "SFT on traces", "Memory per GPU",
                    "Time (throughput", "whole run"):
        assert heading in out
    assert "characters per token" in out  # no local Qwen tokenizer: the estimate, and it says so


def test_cli_counts_with_a_local_tokenizer(tmp_path, tokenizer, model, capsys):
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert main(["plan", "--config", "grpo", f"model={tmp_path}", "data.n_train=4"]) == 0
    out = capsys.readouterr().out
    assert "the model's tokenizer" in out and "2 layers" in out


@pytest.mark.parametrize("model", ["Foo/Bar-7B", "EMPTY_DIR"])
def test_unknown_model_is_a_one_line_error(model, tmp_path, capsys):
    model = str(tmp_path) if model == "EMPTY_DIR" else model
    assert main(["plan", "--config", "grpo", f"model={model}"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "config.json" in err


def test_packed_groups_cost_dense_attention():
    from pact_cotrain.training.methods import MethodConfig, plan_step

    shape = tokens.RolloutShape(2, 39, 11, "given")
    inputs = tokens.StepInputs(2, 4, 1, "sample", "trace", STATS, shape, per_group=True)
    grpo = {p.name: p for p in tokens.step_passes(plan_step(MethodConfig(name="grpo"), 0, 4), inputs)}
    scoring = grpo["prompt-only scoring"]
    assert scoring.attended == 2 * (tokens.tri(0, 100) + 4 * tokens.tri(100, 50))
    assert scoring.computed == 2 * (100 + 4 * 50) ** 2  # under its mask every query-key pair is computed
    sft = tokens.step_passes(plan_step(MethodConfig(name="sft"), 0, 4), inputs)[0]
    assert sft.computed == sft.attended == 2 * tokens.tri(0, 140)  # one causal row per trace, no mask
    batched = tokens.StepInputs(2, 4, 1, "sample", "trace", STATS, shape, per_group=False)
    assert tokens.step_passes(plan_step(MethodConfig(name="sft"), 0, 4), batched)[0].computed == 2 * 140 ** 2
    # batched, but a 200-token budget holds one 140-token trace per micro-batch: plain causal rows again
    alone = tokens.StepInputs(2, 4, 1, "sample", "trace", STATS, shape, per_group=False, budget=200)
    assert tokens.step_passes(plan_step(MethodConfig(name="sft"), 0, 4), alone)[0].computed == 2 * tokens.tri(0, 140)


def test_micro_batches_repeat_the_context_as_the_trainer_packs_them():
    from pact_cotrain.training.microbatch import Piece, forward_tokens, plan_micro_batches

    # a group of x = 100 + 4 x 50 = 300 tokens under a 220-token budget: two pieces of 2 completions
    _, per_step = step_tokens("grpo", ["train.micro_batch_tokens=220"])
    assert per_step["prompt-only scoring"] == pytest.approx(2 * (2 * 100 + 4 * 50))
    rows = [[Piece(("prompt", i // 4), 100, 50)] for i in range(8)]
    parts = plan_micro_batches(rows, [], 220)
    assert sum(forward_tokens([rows[i] for i in p.rows]) for p in parts) == per_step["prompt-only scoring"]


def test_epochs_count_every_gpus_prompts():
    """`stop: {epochs: E}` is E passes over the traces with every process taking prompts_per_step a step
    (as recipes/phased.py runs it): 100 traces, 4 prompts a process, 1 vs 8 GPUs."""
    from pact_cotrain.planning.run import phase_steps

    stats = tokens.DataStats("given", "given", 100, 100, [])
    cfg = {"train": {"prompts_per_step": 4, "max_steps": 7}}
    assert phase_steps(cfg, {"epochs": 1}, stats) == 25
    assert phase_steps(cfg, {"epochs": 1}, stats, gpus=8) == 4  # ceil(100 / 32)
    assert phase_steps(cfg, {"steps": 3}, stats, gpus=8) == 3 and phase_steps(cfg, None, stats, gpus=8) == 7


def test_rollout_logprob_memory_is_one_decode_step():
    """HF rollouts keep one step's B x V logits (issue 30 item 6): the planned line does not grow with the
    tokens a turn, and equals B V (s_r + 12) bytes."""
    lines = []
    for per_turn in (20, 40):
        plan = make_plan("grpo", [*TINY, "train.rollout_dtype=bfloat16", f"sampling.max_new_tokens_per_turn={per_turn}"],
                         PlanOptions(stats=STATS, gpus=1))
        lines.append(_memory(plan)["rollout log-probs"])
    shape = make_plan("grpo", TINY, PlanOptions(stats=STATS)).shape
    assert lines[0] == lines[1] == 8 * shape.vocab * (2 + 12)  # 2 prompts x 4 rollouts decoded together


def test_batched_lone_traces_plan_no_mask():
    """A forward whose rows each hold one trace needs no mask (scoring.PackedLayout.plain_causal); groups with
    several completions in a batched forward do."""
    from pact_cotrain.planning.layout import forward_layout
    from pact_cotrain.training.microbatch import Piece

    traces = [[Piece(("sft", i), 100, 40)] for i in range(3)]
    assert forward_layout([], traces, None, per_group=False)[0].mask_bytes == 0.0
    rollouts = [[Piece(("prompt", i // 2), 100, 50)] for i in range(4)]
    assert forward_layout(rollouts, [], None, per_group=False)[0].mask_bytes == 2 * 200 ** 2
