"""How many prompts a step trains on: all processes together, and each process's share (issue 30 item 4).

Two keys say it, one of them set:

* `train.global_prompts_per_step: G`: the step's prompts over every process (the paper's "batch 256");
  each of the N processes takes G / N of them (refused when N does not divide G);
* `train.prompts_per_step: P`: one process's prompts; a step then trains on N x P.

Both set is refused unless they say the same thing (G = N x P), so a command line that names one
process's share on a recipe that sets the global count works where it matches the launch. The resolved
config carries both, consistently, so resolving it again (a phase's stop rule, then its trainer) agrees.
"""

from __future__ import annotations

import os

from pact_cotrain.errors import UserError


def launched_processes() -> int:
    """The processes of this launch, before accelerate is set up: WORLD_SIZE, which `accelerate launch`
    and torchrun set for every process (1 without a launcher)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def per_process_prompts(train: dict, n_processes: int) -> int:
    """P, the prompts of one process's step, from `train.global_prompts_per_step` or `train.prompts_per_step`."""
    total, share = train.get("global_prompts_per_step"), train.get("prompts_per_step")
    if total is None and share is None:
        raise UserError("train.global_prompts_per_step and train.prompts_per_step are both null: set one")
    if total is None:
        if int(share) < 1:
            raise UserError(f"train.prompts_per_step={share}: must be >= 1")
        return int(share)
    total = int(total)
    if total < 1:
        raise UserError(f"train.global_prompts_per_step={total}: must be >= 1")
    if total % n_processes:
        raise UserError(f"train.global_prompts_per_step={total} does not divide by the {n_processes} processes: "
                        f"give a multiple of {n_processes}, or set train.prompts_per_step (one process's prompts) "
                        f"and train.global_prompts_per_step=null")
    if share is not None and int(share) * n_processes != total:
        raise UserError(f"train.global_prompts_per_step={total} and train.prompts_per_step={share} are both set and "
                        f"disagree on {n_processes} processes ({n_processes} x {share} = {n_processes * int(share)}): "
                        f"set one and the other to null")
    return total // n_processes


def resolve(cfg: dict, n_processes: int) -> dict:
    """`cfg` with train.prompts_per_step = P (one process's) and train.global_prompts_per_step = N x P,
    in place (and returned)."""
    share = per_process_prompts(cfg["train"], n_processes)
    cfg["train"]["prompts_per_step"] = share
    cfg["train"]["global_prompts_per_step"] = share * n_processes
    return cfg


def describe(n_processes: int, share: int, k: int | None = None) -> str:
    """"256 prompts a step (train.global_prompts_per_step) = 8 processes x 32 prompts (per process)"."""
    rollouts = f", x {k} rollouts each" if k else ""
    processes = f"{n_processes} process{'es' if n_processes != 1 else ''}"
    return (f"{n_processes * share} prompts a step (global) = {processes} x {share} prompts "
            f"(per process){rollouts}")
