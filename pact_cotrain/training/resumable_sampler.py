"""TRL's RepeatSampler with a state that a checkpoint can hold, so a resume in any epoch replays that
epoch's order (a fresh sampler would replay epoch 1's).

Each pass draws one permutation from the sampler's generator. The state keeps the generator state
before the current pass and the one after it: a resume mid-epoch restarts that epoch's pass from the
former (the trainer then skips the batches already trained), a resume at an epoch boundary starts
the next pass from the latter.
"""

from __future__ import annotations

from trl.trainer.utils import RepeatSampler


class ResumableRepeatSampler(RepeatSampler):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.passes = 0  # passes started
        self._before_pass = None
        self._resume: dict | None = None  # {pass index: generator state} to start the next pass from
        self.resume_pass = None  # set by the trainer: the pass (epoch) the resumed run starts with

    def steps_per_pass(self) -> int:
        return (self.num_samples // self.batch_size) * self.repeat_count

    def __iter__(self):
        if self.shuffle:
            if self._resume is not None:
                index = self.resume_pass if self.resume_pass is not None else min(self._resume)
                if index not in self._resume:
                    raise RuntimeError(f"sampler state has passes {sorted(self._resume)}, not {index}")
                self.generator.set_state(self._resume[index])
                self.passes, self._resume = index, None
            self._before_pass = self.generator.get_state()
        self.passes += 1
        return super().__iter__()

    def state_dict(self) -> dict:
        if not self.shuffle:
            return {"passes": self.passes, "states": {}}
        states = {self.passes: self.generator.get_state()}
        if self._before_pass is not None:
            states[self.passes - 1] = self._before_pass
        return {"passes": self.passes, "states": states}

    def load_state_dict(self, state: dict) -> None:
        self._resume = dict(state["states"]) or None
