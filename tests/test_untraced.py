"""Data with or without expert traces (issue 12, item 3; spec section 4).

GRPO and its reward variants train on untraced tasks; PACT anchors an untraced prompt (b_x = 1,
prompt-only GRPO, whatever the draw) and gives it no SFT term; the methods and rewards that read the
trace (SFT, CHORD, ToolRL's and MatchTIR's gold-call matching) refuse untraced data up front.
"""

from dataclasses import replace

import pytest
import torch

from pact_cotrain.data.trace_format import write_tasks
from pact_cotrain.envs.toolworld import generate_tasks
from pact_cotrain.errors import UserError
from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer
from pact_cotrain.testing import tiny_llama, tiny_tokenizer
from pact_cotrain.training import scoring
from pact_cotrain.training import passes as passes_module

K = 2
SMALL = [f"train.k={K}", "sampling.max_new_tokens_per_turn=12", "sampling.max_completion_tokens=48",
         "sampling.max_turns=2", "train.report_to=[]", "train.disable_tqdm=true", "train.learning_rate=1e-3",
         "train.save_steps=0"]


def _tasks(untraced: set[int], n: int = 4):
    """n toolworld tasks; those at the `untraced` indices lose their expert trace."""
    return [replace(t, trace=None) if i in untraced else t for i, t in enumerate(generate_tasks(n, seed=0))]


def _file_config(name, tmp_path, tasks, *extra):
    path = tmp_path / "tasks.jsonl"
    write_tasks(path, tasks)
    return load_config(name, SMALL + [f"output_dir={tmp_path}/run", "data.source=file", f"data.path={path}",
                                      *extra])


def _batch(trainer, n_prompts):
    """One step's batch over prompts 0..n_prompts-1, each repeated K times (the sampler's layout)."""
    trainer.model.train()
    return trainer._build_batch([{"task_index": i // K} for i in range(n_prompts * K)])


@pytest.mark.parametrize("name", ["grpo", "ftrl"])
def test_rl_baselines_train_on_untraced_file(name, tmp_path, tokenizer):
    # `pact train --config grpo data.source=file data.path=F` with no trace in F (old code: "has no
    # expert trace to condition on" at the first step).
    cfg = _file_config(name, tmp_path, _tasks({0, 1, 2, 3}), "train.prompts_per_step=2", "train.max_steps=2")
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    trainer.train()
    assert trainer.state.global_step == 2
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in logs)


@pytest.mark.parametrize("anchor_mode", ["sample", "mixture"])
def test_pact_mixed_batch_anchors_untraced_prompts(anchor_mode, tmp_path, tokenizer):
    tasks = _tasks({0, 2})
    # anchor_q = 0: the draw anchors no prompt, so every anchored prompt is anchored for lack of a trace.
    cfg = _file_config("pact", tmp_path, tasks, "train.prompts_per_step=4", "train.max_steps=1",
                       "method.anchor_q=0.0", f"method.anchor_mode={anchor_mode}")
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    batch = _batch(trainer, 4)
    untraced_rows = [not tasks[i // K].trace for i in range(4 * K)]
    assert batch["anchor"].tolist() == untraced_rows  # b_x = 1 exactly for the untraced prompts
    # An untraced row's [x; h] is x itself (only mixture mode scores it there).
    for i, untraced in enumerate(untraced_rows):
        assert (batch["trace_contexts"][i] == batch["prompt_contexts"][i]) == untraced
    # SFT: the two traced prompts' traces, nothing for the untraced ones.
    expected = [trainer._target(tasks[i]).input_ids[trainer._target(tasks[i]).prompt_len:] for i in (1, 3)]
    assert batch["sft_targets"] == expected
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    trainer.model.zero_grad()
    trainer.train()  # and the whole step runs on the mixed file
    assert trainer.state.global_step == 1


def test_pact_all_untraced_batch_has_no_trace_or_sft_pass(tmp_path, tokenizer, monkeypatch):
    cfg = _file_config("pact", tmp_path, _tasks({0, 1, 2, 3}), "train.prompts_per_step=4", "train.max_steps=1",
                       "method.anchor_q=0.0")
    trainer = build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)
    batch = _batch(trainer, 4)
    assert bool(batch["anchor"].all())
    assert "sft_targets" not in batch
    scored = []

    def recording(model, groups, pad_id, **kwargs):
        scored.extend(groups)
        return scoring.packed_completion_logps(model, groups, pad_id, **kwargs)

    monkeypatch.setattr(passes_module, "packed_completion_logps", recording)
    loss = trainer.compute_loss(trainer.model, batch)
    assert torch.isfinite(loss)
    loss.backward()
    # Every scored group is a prompt-only context followed by rollouts: no [x; h] pass, no SFT pass.
    assert scored and all(g.context in batch["prompt_contexts"] for g in scored)
    assert all(c in batch["completions"] for g in scored for c in g.completions)
    assert sum(len(g.completions) for g in scored) == len(batch["completions"])
    monkeypatch.undo()
    trainer.model.zero_grad()
    trainer.train()
    assert trainer.state.global_step == 1


@pytest.mark.parametrize("name", ["sft", "chord_phi"])
def test_trace_methods_refuse_untraced_rows(name, tmp_path, tokenizer):
    cfg = _file_config(name, tmp_path, _tasks({1}, n=3), "train.prompts_per_step=2", "train.max_steps=1")
    with pytest.raises(UserError, match=rf"tasks\.jsonl: 1 of 3 rows have no expert trace .*method {name}"):
        build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)


@pytest.mark.parametrize("name", ["toolrl", "matchtir"])
def test_gold_call_rewards_refuse_untraced_rows_naming_the_task(name, tmp_path, tokenizer):
    tasks = _tasks({2}, n=3)
    cfg = _file_config(name, tmp_path, tasks, "train.prompts_per_step=2", "train.max_steps=1")
    with pytest.raises(UserError, match=rf"first: task {tasks[2].id}\).*reward {name}"):
        build_trainer(cfg, model=tiny_llama(tokenizer), tokenizer=tokenizer)


def test_rows_whose_tools_no_environment_runs_are_refused_for_rollout_methods(tmp_path):
    """A converted dataset's row has no `benchmark` and no toolworld tables: rolling it out would train RL on
    "tool unavailable" errors. Rollout methods refuse it before the model loads; SFT trains on it."""
    tasks = [replace(t, metadata={k: v for k, v in t.metadata.items() if k != "toolworld_tables"})
             for t in generate_tasks(4, seed=0)]
    cfg = _file_config("grpo", tmp_path, tasks, "train.prompts_per_step=2", "train.max_steps=1")
    with pytest.raises(UserError, match="4 of 4 training tasks .* have tools no environment can run"):
        build_trainer(cfg, model=object(), tokenizer=None)  # refused before the model is touched
    tok = tiny_tokenizer()
    sft = _file_config("sft", tmp_path, tasks, "train.prompts_per_step=2", "train.max_steps=1")
    assert build_trainer(sft, model=tiny_llama(tok), tokenizer=tok) is not None
