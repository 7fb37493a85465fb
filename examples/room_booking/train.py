"""Train the room-booking agent with PACT, the way a TRL user trains with GRPOTrainer.

    python examples/room_booking/train.py --steps 8 --out runs/room_booking   # SmolLM2-135M on CPU: see the README
    python examples/room_booking/train.py --method grpo   # any method `pact train` knows
    python examples/room_booking/train.py --method sft --learning-rate 1e-4 --out runs/rooms_sft   # a format
    python examples/room_booking/train.py --model runs/rooms_sft/final                 # warm-up, then PACT from it
"""

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from agent import RoomBookingEnv  # noqa: E402

from pact_cotrain import PACTConfig, PACTTrainer  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--model", default="smollm2-135m-instruct")
parser.add_argument("--method", default="pact")
parser.add_argument("--steps", type=int, default=8)
parser.add_argument("--learning-rate", type=float, default=2e-5)
parser.add_argument("--out", default="runs/room_booking")
cli = parser.parse_args()

here = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(here, "data", "train.jsonl")) as handle:  # rows: prompt, calendar columns, trace
    rows = [json.loads(line) for line in handle]

args = PACTConfig(
    output_dir=cli.out,
    method=cli.method,
    max_steps=cli.steps,
    learning_rate=cli.learning_rate,
    num_generations=4,               # K rollouts per prompt
    prompts_per_step=2,
    max_new_tokens_per_turn=96,      # the expert's turns are 30-60 tokens
    max_completion_length=640,       # tokens after the prompt, tool responses included
    max_tool_calling_iterations=8,   # assistant turns per episode
    logging_steps=1,
)
trainer = PACTTrainer(model=cli.model, args=args, train_dataset=rows, environment_factory=RoomBookingEnv)
trainer.train()
trainer.save_model(os.path.join(cli.out, "final"))
