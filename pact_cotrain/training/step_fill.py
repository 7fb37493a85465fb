"""A run must train at least one step: refused before the model loads when the data cannot fill one.

A step takes `train.prompts_per_step` distinct tasks in each process; TRL's sampler drops a last
incomplete batch, so with fewer tasks than `prompts_per_step x processes` an epoch holds no step,
the run trains 0 steps, exits 0 and writes the untrained model as final/ (issue 31, case 3).
`train.max_steps` itself is checked with the other config values (`config_schema`: an integer >= 1).
"""

from __future__ import annotations

import os

from pact_cotrain.errors import UserError


def processes() -> int:
    """How many processes will train (torchrun / accelerate launch set WORLD_SIZE), without starting any."""
    return max(1, int(os.environ.get("WORLD_SIZE", "1")))


def check_tasks_fill_a_step(n_tasks: int, prompts_per_step: int, source: str, n_processes: int | None = None) -> None:
    n_processes = processes() if n_processes is None else n_processes
    needed = prompts_per_step * n_processes
    if n_tasks < needed:
        per = f" x {n_processes} processes" if n_processes > 1 else ""
        raise UserError(f"{source}: {n_tasks} training task{'s' if n_tasks != 1 else ''}, fewer than one step needs "
                        f"(train.prompts_per_step={prompts_per_step}{per} = {needed}): the run would train 0 steps; "
                        f"add tasks or lower train.prompts_per_step")
