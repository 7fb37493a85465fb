"""Step-level loss normalisation (issue 12 item 1, issue 13 item 6).

So far only ``token_sum_norm`` is covered here: the trainer passes Dr. GRPO's constant
per-sequence budget (``sampling.max_completion_tokens``), so the mode trains instead of raising.
The micro-batch gradient-equality tests of issue 12 are not written yet."""

import pytest
import torch

from pact_cotrain.recipes.train import build_trainer, load_config
from pact_cotrain.testing import tiny_llama

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
