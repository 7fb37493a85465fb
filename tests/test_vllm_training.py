"""PACTTrainer with `train.rollout_backend=vllm`: rollouts come from the vLLM engine, the trained weights
are pushed into it before every rollout, and after training it generates what the HF model does.

Skipped unless vllm is importable. To run it: `.venv-vllm/bin/vllm-python -m pytest tests/test_vllm_training.py`.
"""

from __future__ import annotations

import pytest

pytest.importorskip("vllm")

import torch  # noqa: E402

from pact_cotrain.config import load_config
from pact_cotrain.recipes.train import build_trainer  # noqa: E402
from pact_cotrain.rollout.backends import HFBackend  # noqa: E402

pytestmark = pytest.mark.slow


def test_pact_trains_with_vllm_rollouts_and_syncs_weights(tmp_path):
    from transformers import LlamaForCausalLM

    from pact_cotrain.testing import save_tiny_llama_for_vllm, tiny_tokenizer

    tok = tiny_tokenizer()
    save_tiny_llama_for_vllm(tok, tmp_path / "init")
    model = LlamaForCausalLM.from_pretrained(tmp_path / "init", dtype=torch.float32)
    cfg = load_config("pact", [
        "train.k=2", "train.prompts_per_step=2", "data.n_train=8", "sampling.max_new_tokens_per_turn=12",
        "sampling.max_completion_tokens=48", "sampling.max_turns=2", "train.report_to=[]", "train.disable_tqdm=true",
        "train.learning_rate=1e-2", "train.max_steps=2", "train.save_steps=0", f"output_dir={tmp_path}/run",
        "train.rollout_backend=vllm", "train.vllm={max_model_len: 2048, kv_cache_memory_bytes: 67108864}"])
    trainer = build_trainer(cfg, model=model, tokenizer=tok)
    trainer.train()

    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == 2 and all("vllm_sync_seconds" in h and h["rollout_tokens"] > 0 for h in logs)
    backend = trainer.vllm_backend()  # pushes the final weights (one optimiser step after the last rollout)
    assert trainer._vllm_synced_step == 2
    prompts = [tok.encode(text) for text in ("Where was Ola Vesk born?", "The answer is")]
    ours = backend.generate(prompts, 16, 1.0, 1.0, True)
    model.eval()
    hf = HFBackend(model, tok.eos_token_id, tok.pad_token_id).generate(prompts, 16, greedy=True)
    assert [t.token_ids for t in ours] == [t.token_ids for t in hf]
    for a, b in zip(ours, hf):
        assert torch.allclose(torch.tensor(a.logprobs), torch.tensor(b.logprobs), atol=1e-3)
    fresh = LlamaForCausalLM.from_pretrained(tmp_path / "init", dtype=torch.float32).eval()
    untrained = HFBackend(fresh, tok.eos_token_id, tok.pad_token_id).generate(prompts, 16, greedy=True)
    assert [t.logprobs for t in untrained] != [t.logprobs for t in hf]  # training did move the weights
    backend.close()

