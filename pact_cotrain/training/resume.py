"""Which checkpoint `--resume` continues from, checked before the model loads: complete, loadable, and
written by the same run (its fingerprint, fingerprint.py), unless `--resume-anyway`."""

from __future__ import annotations

from collections.abc import Callable

from pact_cotrain.training import checkpoint_layout, fingerprint
from pact_cotrain.training.checkpoints import CheckpointNotFoundError, RunError, latest_complete, missing_files


def check_same_run(checkpoint: str, cfg: dict, anyway: bool, log: Callable[[str], None] = print) -> None:
    """Refuse a checkpoint whose recorded fingerprint differs from this config's, naming the keys."""
    recorded = fingerprint.read(checkpoint)
    if recorded is None:
        log(f"{checkpoint} records no run fingerprint (written by an older version): the config is not checked")
        return
    differ = fingerprint.differences(recorded, fingerprint.run_fingerprint(cfg))
    if not differ:
        return
    if anyway:
        log(f"--resume-anyway: continuing {checkpoint} although {'; '.join(differ)} differ")
        return
    raise RunError(f"--resume: {checkpoint} was written by another run: {'; '.join(differ)} differ; resume with "
                   f"the config it was written with, or pass --resume-anyway to continue it under this one")


def resume_checkpoint(output_dir: str, resume: str, cfg: dict, anyway: bool = False,
                      log: Callable[[str], None] = print) -> str:
    """`resume` ('latest' or a checkpoint folder) -> the checkpoint to resume from, or a RunError."""
    if resume == "latest":
        checkpoint = latest_complete(output_dir, log)
        if checkpoint is None:
            raise CheckpointNotFoundError(f"--resume: no complete checkpoint-* directory in {output_dir}")
    else:
        checkpoint = resume
        missing = missing_files(checkpoint)
        if missing:
            raise RunError(f"--resume: {checkpoint} is incomplete (missing {', '.join(missing)})")
        problem = checkpoint_layout.unloadable(checkpoint)
        if problem:
            raise RunError(f"--resume: {checkpoint} cannot be loaded ({problem}); pass --resume for the newest "
                           f"checkpoint that can")
    check_same_run(checkpoint, cfg, anyway, log)
    return checkpoint
