"""Rollouts never see the expert trace, at the level of a whole PACT batch (issue 13, items 6-7).

A PACT step is built twice through the trainer's batch construction (`_build_batch`: rollouts,
rewards, advantages, anchoring, contexts, SFT targets), from the same tiny model and seed, with
tasks whose traces differ in every turn. Everything a rollout produced must be identical; only the
trace-conditioned contexts (and the SFT targets) may differ. A control run of the hint-in-rollout
baseline shows the comparison does catch a trace that reaches the rollout.

The trace-conditioned context [x; h] must be built from the prompt the episode was rolled out from
(`env.reset()`), which ToolHop's free and direct scenarios rewrite: with the trace block taken out,
[x; h] is the rollout's prompt, token for token.
"""

from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from pact_cotrain.envs.toolhop import DIRECT_INSTRUCTION, FREE_INSTRUCTION, ToolHopEnv
from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer, load_train_tasks
from pact_cotrain.render import render_trace_block
from pact_cotrain.testing import tiny_llama

SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=4", "sampling.max_new_tokens_per_turn=12",
         "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.save_steps=0"]
ROWS = [{"task_index": i // 2} for i in range(4)]  # 2 prompts x k=2, as TRL's sampler repeats them


def changed_trace(trace: list[dict]) -> list[dict]:
    """The same shape of trace with every turn's text changed: reasoning, notes and final answers,
    every call's argument values, every tool response."""
    out = []
    for i, msg in enumerate(trace):
        msg = dict(msg)
        if msg["role"] == "tool":
            msg["content"] = f'{{"result": "changed output {i}"}}'
        else:
            msg["reasoning"] = f"A different plan at turn {i}, reached another way."
            if msg.get("content") or not msg.get("tool_calls"):
                msg["content"] = f"A different answer at turn {i}."
            msg["tool_calls"] = [{"name": c["name"], "arguments": {k: f"changed {i}" for k in c["arguments"]}}
                                 for c in msg.get("tool_calls") or []]
        out.append(msg)
    return out


def build_batch(tmp_path, tokenizer, tasks, config="pact", env_factory=None, *extra):
    cfg = load_config(config, SMALL + [f"output_dir={tmp_path}/run", "train.max_steps=2", *extra])
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer, tasks=tasks)
    if env_factory is not None:
        trainer.env_factory = env_factory
    return trainer, trainer._build_batch(ROWS)


def two_batches(tmp_path, tokenizer, config="pact", *extra):
    tasks = load_train_tasks(load_config(config, SMALL)["data"])
    other = [replace(t, trace=changed_trace(t.trace)) for t in tasks]
    for a, b in zip(tasks, other):
        assert len(a.trace) == len(b.trace) and all(x != y for x, y in zip(a.trace, b.trace))
    _, first = build_batch(tmp_path / "a", tokenizer, tasks, config, None, *extra)
    _, second = build_batch(tmp_path / "b", tokenizer, other, config, None, *extra)
    return first, second


@pytest.mark.parametrize("extra", [[], ["method.anchor_mode=mixture"]])
def test_a_pact_batch_is_trace_blind_except_for_its_trace_contexts(tmp_path, tokenizer, extra):
    first, second = two_batches(tmp_path, tokenizer, "pact", *extra)
    assert first["plan"].rl and first["plan"].sft_coef > 0
    # What the rollouts produced: the same ids, the same sampled tokens and log-probs, rewards, draws.
    assert first["prompt_contexts"] == second["prompt_contexts"]
    assert first["completions"] == second["completions"]
    assert [ep.logprobs for ep in first["episodes"]] == [ep.logprobs for ep in second["episodes"]]
    assert sum(len(c) for c in first["completions"]) > 0
    for key in ("sampling_logps", "loss_mask", "rewards", "advantages", "anchor"):
        assert torch.equal(first[key], second[key]), key
    assert [ep.messages for ep in first["episodes"]] == [ep.messages for ep in second["episodes"]]
    # What the trace enters: the [x; h] context of every rollout scored under it (all of them in the
    # mixture reading; the unanchored ones otherwise, while an anchored row is never given one), and
    # the SFT targets.
    in_trace = [True] * len(first["anchor"]) if extra else (~first["anchor"]).tolist()
    assert any(in_trace) and (extra or not all(in_trace)), "the draw should give both kinds of row"
    for a, b, prompt, scored in zip(first["trace_contexts"], second["trace_contexts"], first["prompt_contexts"], in_trace):
        assert (a != b) if scored else (a == b == prompt)
    assert all(a != b for a, b in zip(first["sft_targets"], second["sft_targets"]))
    assert first["sft_contexts"] == second["sft_contexts"]  # SFT's context is x alone


def test_an_opsd_batch_is_trace_blind_except_for_its_teacher(tmp_path, tokenizer):
    """OPSD: the student rolls out from x alone; h reaches only the teacher's [x; h] context and its
    (no-gradient) log-probs, on every row."""
    first, second = two_batches(tmp_path, tokenizer, "opsd")
    assert first["plan"].opsd and first["plan"].sft_coef == 0 and "sft_targets" not in first
    assert first["prompt_contexts"] == second["prompt_contexts"]
    assert first["completions"] == second["completions"] and sum(map(len, first["completions"])) > 0
    assert [ep.logprobs for ep in first["episodes"]] == [ep.logprobs for ep in second["episodes"]]
    for key in ("sampling_logps", "loss_mask", "rewards", "advantages"):
        assert torch.equal(first[key], second[key]), key
    assert first["anchor"].all()  # the student is scored after x alone, every row
    for a, b, prompt in zip(first["trace_contexts"], second["trace_contexts"], first["prompt_contexts"]):
        assert a != b and a != prompt  # every row's teacher context holds its own trace
    mask = first["loss_mask"].bool()
    assert not torch.equal(first["teacher_logp"][mask], second["teacher_logp"][mask])


def test_the_comparison_catches_a_trace_in_the_rollout(tmp_path, tokenizer):
    """Control: the hint-in-rollout baseline puts h in the rollout's context, and the same comparison
    sees it (so the equalities above are not vacuous)."""
    first, second = two_batches(tmp_path, tokenizer, "hint_rollouts")
    assert all(a != b for a, b in zip(first["prompt_contexts"], second["prompt_contexts"]))
    assert [ep.logprobs for ep in first["episodes"]] != [ep.logprobs for ep in second["episodes"]]


class _NoSandbox:
    """Stands in for ToolHop's sandbox: a tiny random model's call (if any) fails without running code."""

    def call(self, codes, tool, arguments):
        return SimpleNamespace(output=f"Error: {tool} is not available in this test", ok=False)


@pytest.mark.parametrize("scenario, instruction", [("direct", DIRECT_INSTRUCTION), ("free", FREE_INSTRUCTION)])
def test_trace_context_is_built_from_the_prompt_the_episode_saw(tmp_path, tokenizer, scenario, instruction):
    """ToolHop's free and direct scenarios rewrite the instruction (direct also offers no tools): [x; h]
    must be the rollout's own prompt with the trace block added, not task.messages with it added."""
    tasks = load_train_tasks(load_config("pact", SMALL)["data"])
    env = lambda task: ToolHopEnv(sandbox=_NoSandbox(), max_steps=2, scenario=scenario)  # noqa: E731
    trainer, batch = build_batch(tmp_path, tokenizer, tasks, "pact", env)
    by_id = {t.id: t for t in tasks}
    assert not batch["anchor"].all()
    for ep, context, anchored in zip(batch["episodes"], batch["trace_contexts"], batch["anchor"].tolist()):
        rollout_prompt = tokenizer.decode(ep.prompt_ids)
        assert instruction in rollout_prompt  # the environment did rewrite the prompt
        if anchored:  # scored prompt-only: no [x; h] is built for it
            assert context == ep.prompt_ids
            continue
        block = "\n\n" + render_trace_block(by_id[ep.task_id].trace, trainer.method.trace_view)
        with_trace = tokenizer.decode(context)
        assert with_trace.count(block) == 1
        assert with_trace.replace(block, "") == rollout_prompt
    if scenario == "direct":  # no tool schemas in either context
        assert all("<tools>" not in tokenizer.decode(c) for c in batch["trace_contexts"])
