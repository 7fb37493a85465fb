"""Checkpoints that are written atomically and resume exactly, for PACTTrainer (trainer.py): TRL's
checkpoint plus the data sampler's state, staged and renamed into place; on resume, the sampler
restored in whatever epoch the run stopped. A mixin of GRPOTrainer's subclass, at TRL's override points
`_get_train_sampler`, `train` and `_save_checkpoint` (tests/test_trl_contract.py pins them)."""

from __future__ import annotations

import json
import os
import shutil

import torch

from pact_cotrain.training import fingerprint
from pact_cotrain.training.checkpoints import RunError, atomic_write_dir, prune, save_failure
from pact_cotrain.training.resumable_sampler import ResumableRepeatSampler


class ExactResumeMixin:
    _sampler_resume: tuple[dict, int] | None = None

    def _get_train_sampler(self, dataset=None):
        """TRL's RepeatSampler, with a state saved in checkpoints and restored on resume (any epoch)."""
        base = super()._get_train_sampler(dataset)
        sampler = ResumableRepeatSampler(base.data_source, base.mini_repeat_count, base.batch_size,
                                         base.repeat_count, base.shuffle, base.seed)
        if self._sampler_resume is not None:
            state, global_step = self._sampler_resume
            # the trainer resumes in epoch global_step // steps-per-epoch, skipping the batches already done
            resume_pass = global_step // max(sampler.steps_per_pass(), 1)
            if state["states"] and resume_pass not in state["states"]:  # another batch shape (--resume-anyway)
                print(f"the checkpoint's data order is for another batch shape (epoch {resume_pass} not saved): "
                      f"the resumed run draws a fresh order", flush=True)
            else:
                sampler.load_state_dict(state)
                sampler.resume_pass = resume_pass
        self._train_sampler = sampler
        return sampler

    def train(self, resume_from_checkpoint=None, *args, **kwargs):
        self._sampler_resume = None
        if isinstance(resume_from_checkpoint, str):
            path = os.path.join(resume_from_checkpoint, "sampler_state.pt")
            if not os.path.isfile(path):
                raise RunError(f"checkpoint {resume_from_checkpoint} has no sampler_state.pt: it cannot be "
                               f"resumed exactly")
            with open(os.path.join(resume_from_checkpoint, "trainer_state.json")) as handle:
                step = json.load(handle)["global_step"]
            self._sampler_resume = (torch.load(path, weights_only=False), step)
        stop = getattr(self, "graceful_stop", None)  # graceful_stop.py: SIGTERM/SIGINT save, then stop
        try:
            result = super().train(resume_from_checkpoint, *args, **kwargs)
        finally:
            if stop is not None:
                stop.restore_handlers()  # also when training raised (on_train_end is not called then)
        if stop is not None:
            stop.raise_if_stopped(self.args.output_dir)
        return result

    def _save_checkpoint(self, model, trial):
        """TRL's checkpoint (model, optimizer, scheduler, RNG, trainer state) plus the sampler's state,
        written to a staging directory, fsynced and renamed into place (checkpoints.atomic_write_dir),
        so a checkpoint directory is either complete or absent; an older copy is removed only after."""
        final_root, limit = self.args.output_dir, self.args.save_total_limit
        name = f"checkpoint-{self.state.global_step}"
        # TRL writes <root>/checkpoint-N (every process adds its RNG file): a scratch root all processes share.
        scratch = os.path.join(final_root, f".staging-{name}.root")
        main = self.accelerator.is_main_process
        if main:
            shutil.rmtree(scratch, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self.args.output_dir, self.args.save_total_limit = scratch, None
        try:
            super()._save_checkpoint(model, trial)
            if self.args.should_save:
                sampler = getattr(self, "_train_sampler", None)
                torch.save(sampler.state_dict() if sampler is not None else {"passes": 0, "states": {}},
                           os.path.join(scratch, name, "sampler_state.pt"))
                if getattr(self, "run_fingerprint", None) is not None:  # what --resume checks (fingerprint.py)
                    fingerprint.write(os.path.join(scratch, name), self.run_fingerprint)
        except Exception as exc:
            shutil.rmtree(scratch, ignore_errors=True)
            error = save_failure(exc, name, final_root)  # e.g. a full disk, named, not "iostream error"
            if error is not None:
                raise error from exc
            raise
        finally:
            self.args.output_dir, self.args.save_total_limit = final_root, limit
        self.accelerator.wait_for_everyone()
        if main:
            atomic_write_dir(os.path.join(final_root, name),
                             lambda staging: os.replace(os.path.join(scratch, name), staging))
            shutil.rmtree(scratch, ignore_errors=True)
            prune(final_root, limit, just_written=os.path.join(final_root, name))
        self.accelerator.wait_for_everyone()
