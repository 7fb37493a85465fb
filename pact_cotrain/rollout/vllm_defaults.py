"""The colocated vLLM engine's defaults: what lets it sit beside training on one GPU (issue 30 item 5).

Each training process builds its own engine in its own process (TRL's colocate mode), on the GPU that
already holds the policy, its gradients and optimiser state. vLLM's own defaults assume the GPU is its
alone, so unless `train.vllm` sets them:

* `gpu_memory_utilization: 0.3`, TRL 1.16's colocate default (`GRPOConfig.vllm_gpu_memory_utilization`),
  instead of vLLM's 0.9, which it would take after the training state is already there.
* `enable_sleep_mode: true` on a GPU: between one step's rollouts and the next, the engine releases its
  weights and KV cache (vLLM's `sleep(level=2)`), and the trainer wakes it and pushes the current weights
  before the next rollouts (`RolloutPolicyMixin`), as TRL's colocate mode does with `vllm_enable_sleep_mode`.
  Not on CPU, where vLLM has no sleep mode.
* `max_model_len` = the prompt cap + the completion cap of the config (`train.max_prompt_tokens`, or the
  model's context minus the completion cap; `sampling.max_completion_tokens`): the longest sequence a
  rollout can reach, instead of a fixed 4,096 that FTRL's ~4.1k-token prompts alone exceed.

The generation batch: vLLM schedules requests itself within its KV-cache budget, so the trainer hands it
all of a process's rollouts at once (`sampling.generation_batch_size` chunks HF decoding only).
"""

from __future__ import annotations

COLOCATE_GPU_MEMORY_UTILIZATION = 0.3  # TRL 1.16, GRPOConfig.vllm_gpu_memory_utilization


def colocate_engine_kwargs(user: dict | None, prompt_cap: int | None, completion_cap: int, on_gpu: bool) -> dict:
    """`VLLMBackend` keyword arguments: the user's `train.vllm` over the defaults above."""
    kwargs: dict = {}
    if prompt_cap is not None:
        kwargs["max_model_len"] = int(prompt_cap) + int(completion_cap)
    if on_gpu:
        kwargs["gpu_memory_utilization"] = COLOCATE_GPU_MEMORY_UTILIZATION
        kwargs["enable_sleep_mode"] = True
    kwargs.update(user or {})
    return kwargs
