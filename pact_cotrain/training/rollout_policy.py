"""The weights rollouts are sampled with, for PACTTrainer (trainer.py): the trained model itself, a copy in
`train.rollout_dtype`, an unsharded copy under ZeRO-3 or FSDP, or a vLLM engine that holds its own
weights. A mixin of PACTTrainer, whose constructor sets the attributes used here (`rollout_dtype`,
`_rollout_copy`, `vllm_kwargs`, `_vllm`, `_vllm_synced_step`)."""

from __future__ import annotations

import copy
import time

import torch

from pact_cotrain.training import distributed


class RolloutPolicyMixin:
    @torch.no_grad()
    def _rollout_policy(self, model):
        """The model itself, or its `rollout_dtype` copy with the current weights. Only parameters are
        cast: buffers such as rotary frequencies keep their precision. Under ZeRO-3 or FSDP, an unsharded
        copy built once (distributed.py, item 5) whose weights are overwritten in place with the gathered
        ones before every rollout."""
        if distributed.sharding(self.accelerator) in ("zero3", "fsdp"):
            if self._rollout_copy is None:
                dtype = self.rollout_dtype or next(model.parameters()).dtype
                self._rollout_copy = distributed.unsharded_copy(self.accelerator, self.model, dtype)
            with distributed.full_parameters(self.accelerator, self.model) as named:
                distributed.load_full_parameters(self._rollout_copy, named)
            return self._rollout_copy
        if self.rollout_dtype is None or next(model.parameters()).dtype == self.rollout_dtype:
            return model
        if self._rollout_copy is None:
            self._rollout_copy = copy.deepcopy(model)
            # accelerate's mixed-precision wrapper is an instance `forward` whose closure holds the
            # ORIGINAL model's forward: deepcopy keeps that closure, so the copy would silently run the
            # trained model (in train mode, where gradient checkpointing drops the KV cache). Drop it.
            self._rollout_copy.__dict__.pop("forward", None)
            self._rollout_copy.__dict__.pop("_original_forward", None)
            for param in self._rollout_copy.parameters():
                param.requires_grad_(False)
                param.data = param.data.to(self.rollout_dtype)
        for dst, src in zip(self._rollout_copy.parameters(), model.parameters()):
            dst.copy_(src)
        return self._rollout_copy

    def vllm_backend(self):
        """The vLLM engine (built on first use from the policy's checkpoint directory), holding the
        policy's current weights: they are pushed in whenever an optimiser step has happened since the
        last push (and once at the start, which also covers a resumed run)."""
        model = self.accelerator.unwrap_model(self.model)
        if self._vllm is None:
            from pact_cotrain.rollout.vllm_backend import VLLMBackend

            if hasattr(model, "peft_config"):
                raise NotImplementedError("train.rollout_backend=vllm with LoRA: merge the adapter first "
                                          "(not wired in yet); use rollout_backend=hf")
            kwargs = dict(self.vllm_kwargs)
            # Several processes: one engine per process (tensor_parallel_size 1, its own seed), see distributed.py.
            kwargs.update(distributed.vllm_process_kwargs(self.accelerator, self.args.seed, kwargs))
            path = kwargs.pop("model_path", None) or model.config._name_or_path
            dtype = self.rollout_dtype or next(model.parameters()).dtype
            seed = kwargs.pop("seed", self.args.seed)
            self._vllm = VLLMBackend(path, eos_token_id=self.processing_class.eos_token_id,
                                     dtype=str(dtype).removeprefix("torch."), seed=seed, **kwargs)
        asleep = self._vllm.asleep
        if asleep:  # sleep level 2 dropped the weights: wake them and push them whatever the step
            self._vllm.wake_up(["weights"])
        if asleep or self._vllm_synced_step != self.state.global_step:
            started = time.perf_counter()
            with distributed.full_parameters(self.accelerator, self.model) as named:  # gathered if sharded
                self._vllm.sync_weights(named)
            self._vllm_synced_step = self.state.global_step
            self._metrics["train"]["vllm_sync_seconds"].append(time.perf_counter() - started)
        if asleep:
            self._vllm.wake_up(["kv_cache"])
        return self._vllm

    def rollouts_finished(self) -> None:
        """After a step's rollouts: a vLLM engine in sleep mode frees its GPU memory for the training passes."""
        if self._vllm is not None:
            self._vllm.sleep()

    def close_rollout_engine(self) -> None:
        """Shut the vLLM engine down (frees its memory); a later rollout would build it again."""
        if self._vllm is not None:
            self._vllm.close()
            self._vllm, self._vllm_synced_step = None, None
