"""`pact train` (the CLI's own path) with a tiny model, for tests/test_graceful_stop.py.

    python tests/signal_run.py MODE OUT MAX_STEPS

MODE: `external` prints `began step N` at the start of every step (the test sends the signal);
`SIGTERM` / `SIGINT` sends that signal to this process once the third step has begun; `twice` sends
SIGTERM twice then. Exits with the CLI's code.
"""

import os
import signal
import sys

from transformers import TrainerCallback

from pact_cotrain import cli
from pact_cotrain.recipes import common
from pact_cotrain.recipes import train as train_recipe
from pact_cotrain.testing import tiny_llama, tiny_tokenizer

mode, out, max_steps = sys.argv[1], sys.argv[2], sys.argv[3]


class SignalInStep(TrainerCallback):
    def on_step_begin(self, args, state, control, **kwargs):
        if mode == "external":
            print(f"began step {state.global_step + 1}", flush=True)
        elif state.global_step == 2:  # the third step is under way
            for _ in range(2 if mode == "twice" else 1):
                os.kill(os.getpid(), signal.SIGTERM if mode == "twice" else getattr(signal, mode))


tok = tiny_tokenizer()
common.load_model_and_tokenizer = lambda *a, **k: (tiny_llama(tok), tok)
build_trainer = train_recipe.build_trainer


def build_with_signal(*args, **kwargs):
    trainer = build_trainer(*args, **kwargs)
    trainer.add_callback(SignalInStep())
    return trainer


train_recipe.build_trainer = build_with_signal
SMALL = ["train.k=2", "train.prompts_per_step=2", "data.n_train=8", "sampling.max_new_tokens_per_turn=8",
         "sampling.max_completion_tokens=32", "sampling.max_turns=2", "train.report_to=[]",
         "train.disable_tqdm=true", "train.learning_rate=1e-2", "train.gradient_checkpointing=false"]
sys.exit(cli.main(["train", "--config", "sft", *SMALL, f"output_dir={out}", f"train.max_steps={max_steps}",
                   "train.save_steps=0", *sys.argv[4:]]))
