"""One PACT step in each of several processes (launched by tests/test_distributed.py via accelerate)."""

import sys

from accelerate import PartialState

from pact_cotrain.recipes.train import build_trainer, load_config
from pact_cotrain.testing import tiny_llama, tiny_tokenizer

out = sys.argv[1]
tok = tiny_tokenizer()
model = tiny_llama(tok)
cfg = load_config("pact", ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "train.max_steps=1",
                           "sampling.max_new_tokens_per_turn=12", "sampling.max_completion_tokens=48",
                           "sampling.max_turns=2", "train.report_to=[]", "train.save_steps=0",
                           "train.disable_tqdm=true", "train.learning_rate=1e-3", "method.anchor_q=0.5",
                           f"output_dir={out}"])
trainer = build_trainer(cfg, model=model, tokenizer=tok)
trainer.train()
state = PartialState()
checksum = sum(float(p.detach().double().sum()) for p in trainer.accelerator.unwrap_model(trainer.model).parameters())
print(f"RANK {state.process_index}/{state.num_processes} backend={state.backend} step={trainer.state.global_step} "
      f"checksum={checksum:.10f}", flush=True)
