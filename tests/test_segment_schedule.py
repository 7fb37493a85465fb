"""`method.reasoning_schedule=segment_linear`: each expert reasoning block loses its supervised
leading segments one at a time, from all of its own segments to none (spec section 3).
Expected values are computed by hand in the comments: k = n - min(floor((n + 1) s / T), n)."""

import pytest

from pact_cotrain import losses as L
from pact_cotrain.training.methods import MethodConfig, plan_step


def test_four_segments_over_nine_steps():
    # floor(5 s / 9) for s = 0..8: 0 0 1 1 2 2 3 3 4 -> k = 4 4 3 3 2 2 1 1 0 (five levels L4..L0)
    assert [L.segment_linear_supervised(4, s, 9) for s in range(9)] == [4, 4, 3, 3, 2, 2, 1, 1, 0]


def test_three_segments_over_nine_steps():
    # floor(4 s / 9) for s = 0..8: 0 0 0 1 1 2 2 3 3 -> k = 3 3 3 2 2 1 1 0 0 (four levels L3..L0)
    assert [L.segment_linear_supervised(3, s, 9) for s in range(9)] == [3, 3, 3, 2, 2, 1, 1, 0, 0]


def test_one_step_run_and_edges():
    # A 1-step run is all stage 0: every segment supervised (as staged and linear start).
    assert [L.segment_linear_supervised(n, 0, 1) for n in range(6)] == [0, 1, 2, 3, 4, 5]
    # One segment over 4 steps: floor(2 s / 4) = 0 0 1 1 -> 1 1 0 0. Past the end: none.
    assert [L.segment_linear_supervised(1, s, 4) for s in range(4)] == [1, 1, 0, 0]
    assert L.segment_linear_supervised(4, 100, 9) == 0
    for bad in ((-1, 0, 9), (4, -1, 9), (4, 0, 0)):
        with pytest.raises(ValueError):
            L.segment_linear_supervised(*bad)


def test_differs_from_staged_and_linear():
    # staged (L4 -> L2 -> L0) skips L3 and L1: 4 segments over 9 steps give 4 4 4 2 2 2 0 0 0.
    staged = [L.reasoning_segments_supervised(4, L.reasoning_prefix_fraction(s, 9, "staged")) for s in range(9)]
    assert staged == [4, 4, 4, 2, 2, 2, 0, 0, 0]
    # linear: one fraction 1 - s/8 for every block, rounded half up. 3 segments: 3 (1 - s/8) =
    # 3, 2.625, 2.25, 1.875, 1.5, 1.125, 0.75, 0.375, 0 -> 3 3 2 2 2 1 1 0 0: its first and last levels
    # get half a stage each, where segment_linear gives every level an equal share (3 3 3 2 2 1 1 0 0).
    linear = [L.reasoning_segments_supervised(3, L.reasoning_prefix_fraction(s, 9, "linear")) for s in range(9)]
    assert linear == [3, 3, 2, 2, 2, 1, 1, 0, 0]
    assert linear != [L.segment_linear_supervised(3, s, 9) for s in range(9)]
    # Its logged fraction is the spec's 4-segment block's: k4 / 4.
    assert [L.reasoning_prefix_fraction(s, 9, "segment_linear") for s in range(9)] == [
        1.0, 1.0, 0.75, 0.75, 0.5, 0.5, 0.25, 0.25, 0.0]


def test_plan_step_counts_each_block_from_its_own_segments():
    method = MethodConfig(name="pact", reasoning_schedule="segment_linear")
    plans = [plan_step(method, s, 9) for s in range(9)]
    assert [p.reasoning_segments(4) for p in plans] == [4, 4, 3, 3, 2, 2, 1, 1, 0]
    assert [p.reasoning_segments(3) for p in plans] == [3, 3, 3, 2, 2, 1, 1, 0, 0]
    assert [p.reasoning_segments(1) for p in plans] == [1, 1, 1, 1, 1, 0, 0, 0, 0]  # floor(2 s / 9)
    # The default (and PACT's config) keeps the spec's staged L4 -> L2 -> L0.
    default = [plan_step(MethodConfig(name="pact"), s, 9) for s in range(9)]
    assert [p.reasoning_segments(4) for p in default] == [4, 4, 4, 2, 2, 2, 0, 0, 0]
    assert all(p.segment_linear_at is None for p in default)
    with pytest.raises(ValueError):
        MethodConfig(reasoning_schedule="segments")


def test_trainer_sft_masks_follow_the_per_block_counts(tmp_path, tokenizer):
    from pact_cotrain.config import load_config
    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.testing import tiny_llama

    small = ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "sampling.max_new_tokens_per_turn=12",
             "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
             "train.disable_tqdm=true", "train.save_steps=0", "train.max_steps=9", f"output_dir={tmp_path}/run",
             "method.reasoning_schedule=segment_linear"]
    trainer = build_trainer(load_config("pact", small), model=tiny_llama(tokenizer), tokenizer=tokenizer)
    r, task = next((r, t) for r, t in ((trainer._target(t), t) for t in trainer.tasks if t.trace)
                   if 2 in r.n_segments)  # toolworld's blocks have 1 or 2 segments
    body = list(zip(r.components[r.prompt_len:], r.reasoning_block[r.prompt_len:],
                    r.reasoning_segment[r.prompt_len:]))

    def supervised(keep):  # the reasoning tokens kept by a per-block count rule
        return [int(c == "reasoning" and s < keep(r.n_segments[b])) for c, b, s in body]

    for step in (0, 2, 6, 8):
        plan = plan_step(trainer.method, step, 9)
        mask = trainer._sft_batch([task], plan)["sft_reasoning_mask"][0]
        assert mask[: len(body)].tolist() == supervised(lambda n: L.segment_linear_supervised(n, step, 9))
    # At step 6 a 2-segment block has reached L0 (2 - floor(3 * 6 / 9) = 0), while one fraction for every
    # block (the logged 0.25) would still keep round(2 * 0.25) = 1 segment: the per-block count is what runs.
    mask6 = trainer._sft_batch([task], plan_step(trainer.method, 6, 9))["sft_reasoning_mask"][0]
    assert mask6[: len(body)].tolist() != supervised(lambda n: L.reasoning_segments_supervised(n, 0.25))
    assert trainer._sft_batch([task], plan_step(trainer.method, 0, 9))["sft_reasoning_mask"].sum() > 0
    assert trainer._sft_batch([task], plan_step(trainer.method, 8, 9))["sft_reasoning_mask"].sum() == 0
