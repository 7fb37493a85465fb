"""The colocated vLLM engine's defaults and its sleep mode (issue 30 item 5). vLLM is not installed here:
these test the arguments built from a config and the wake/sync/sleep order, with a recording engine."""

from types import SimpleNamespace

import pytest
import torch

from pact_cotrain.rollout.vllm_defaults import colocate_engine_kwargs


def test_gpu_defaults_fit_beside_training():
    kwargs = colocate_engine_kwargs({}, prompt_cap=4608, completion_cap=8192, on_gpu=True)
    assert kwargs == {"max_model_len": 4608 + 8192, "gpu_memory_utilization": 0.3, "enable_sleep_mode": True}


def test_cpu_has_no_sleep_mode_and_the_user_wins():
    assert colocate_engine_kwargs(None, prompt_cap=None, completion_cap=400, on_gpu=False) == {}
    assert colocate_engine_kwargs({}, prompt_cap=100, completion_cap=400, on_gpu=False) == {"max_model_len": 500}
    user = {"gpu_memory_utilization": 0.5, "enable_sleep_mode": False, "max_model_len": 2048}
    assert colocate_engine_kwargs(user, prompt_cap=100, completion_cap=400, on_gpu=True) == user


def test_the_trainer_gets_the_caps_and_all_rollouts_in_one_call(tmp_path, tokenizer):
    from pact_cotrain.recipes.train import build_trainer
    from pact_cotrain.testing import tiny_llama

    from test_trainer import small_config

    model = tiny_llama(tokenizer)
    cfg = small_config("grpo", tmp_path, "train.rollout_backend=vllm", "train.max_prompt_tokens=3000",
                       "sampling.generation_batch_size=2", "train.save_steps=0")
    trainer = build_trainer(cfg, model=model, tokenizer=tokenizer)
    assert trainer.vllm_kwargs["max_model_len"] == 3000 + cfg["sampling"]["max_completion_tokens"]
    assert trainer.generation_batch_size is None  # sampling.generation_batch_size chunks HF decoding only
    hf = build_trainer(small_config("grpo", tmp_path, "sampling.generation_batch_size=2", "train.save_steps=0",
                                    "output_dir=" + str(tmp_path / "hf")), model=model, tokenizer=tokenizer)
    assert hf.generation_batch_size == 2


class RecordingLLM:
    def __init__(self, calls):
        self.calls = calls

    def sleep(self, level):
        self.calls.append(f"sleep{level}")

    def wake_up(self, tags):
        self.calls.append("wake:" + ",".join(tags))

    def collective_rpc(self, method, kwargs):
        list(kwargs["weights_iterator"])
        self.calls.append(method)

    def reset_prefix_cache(self):
        self.calls.append("reset_prefix_cache")


def recording_backend(calls, sleep_mode):
    from pact_cotrain.rollout.vllm_backend import VLLMBackend

    backend = object.__new__(VLLMBackend)  # no engine: the recording one stands in for vllm.LLM
    backend.llm, backend.in_process, backend._on_cpu = RecordingLLM(calls), True, False
    backend.sleep_mode, backend.asleep = sleep_mode, False
    return backend


@pytest.mark.parametrize("sleep_mode", [True, False])
def test_sleep_between_rollouts_and_wake_with_fresh_weights(sleep_mode):
    from pact_cotrain.training.rollout_policy import RolloutPolicyMixin

    calls = []

    class Trainer(RolloutPolicyMixin):
        def __init__(self):
            model = torch.nn.Linear(2, 2)
            self.accelerator = SimpleNamespace(num_processes=1, unwrap_model=lambda m: m)
            self.model, self.state = model, SimpleNamespace(global_step=0)
            self._metrics = {"train": {"vllm_sync_seconds": []}}
            self._vllm, self._vllm_synced_step = recording_backend(calls, sleep_mode), None

    trainer = Trainer()
    for step in range(2):  # a step: rollouts, then the training passes
        trainer.state.global_step = step
        trainer.vllm_backend()
        calls.append("generate")
        trainer.rollouts_finished()
    if sleep_mode:
        assert calls == ["reload_weights", "reset_prefix_cache", "generate", "sleep2",
                         "wake:weights", "reload_weights", "reset_prefix_cache", "wake:kv_cache", "generate", "sleep2"]
    else:
        assert calls == ["reload_weights", "reset_prefix_cache", "generate",
                         "reload_weights", "reset_prefix_cache", "generate"]
    # asleep, the weights are pushed again on waking even where no optimiser step happened since
    if sleep_mode:
        calls.clear()
        trainer.vllm_backend()
        assert calls == ["wake:weights", "reload_weights", "reset_prefix_cache", "wake:kv_cache"]
