"""Correctness of VLLMBackend against the HF model: token exactness, log-prob agreement, seeds, weight sync.

Run in the vLLM environment (see scripts/setup_vllm_cpu.sh):

    .venv-vllm/bin/vllm-python benchmarks/vllm_backend_check.py --dtype bfloat16

1. Samples toolworld prompts with VLLMBackend, re-scores the exact sampled ids with the HF model in fp32
   (log_softmax(logits / T) gathered at each sampled id) and prints max/mean |vLLM - HF| per setting.
2. Same seed -> same ids; turns end at the first end-of-turn id (inclusive) and nowhere else.
3. Weight sync: perturbs the HF model (scales every down_proj, adds noise to every q_proj and to the
   embeddings, which the LM head is tied to, scales the final norm; rounded to bf16, as the checkpoint
   is), shows vLLM (still on the old weights) disagreeing with the HF re-score, calls
   `backend.load_weights(model)`, and shows vLLM's greedy ids and log-probs matching the perturbed HF
   model; then syncs the original weights back and checks the original outputs return.
"""

from __future__ import annotations

import argparse
import json
import time

import torch


def rescore(model, prompts, turns, temperature):
    """HF log_softmax(logits / temperature) at each sampled id, fp32, one sequence at a time."""
    out = []
    for prompt, turn in zip(prompts, turns):
        ids = torch.tensor([prompt + turn.token_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt) - 1 : -1].float()
        logps = torch.log_softmax(logits / temperature, dim=-1)
        out.append(logps.gather(-1, torch.tensor(turn.token_ids)[:, None])[:, 0])
    return out


def diff_stats(turns, hf_logps):
    diffs = torch.cat([(torch.tensor(t.logprobs) - h).abs() for t, h in zip(turns, hf_logps)])
    return {"tokens": int(diffs.numel()), "max_abs": float(f"{diffs.max():.3g}"),
            "mean_abs": float(f"{diffs.mean():.3g}"), "p99_abs": float(f"{diffs.quantile(0.99):.3g}")}


def check_turn_shape(turns, eos, max_new):
    for t in turns:
        assert len(t.token_ids) == len(t.logprobs), "one log-prob per sampled id"
        assert t.token_ids.count(eos) == (1 if t.finished else 0), "eos only as the last id of a finished turn"
        assert not t.finished or t.token_ids[-1] == eos
        assert t.finished or len(t.token_ids) == max_new, "unfinished turns use the whole budget"


def greedy_hf(model, prompts, eos, max_new):
    from pact_cotrain.rollout.backends import HFBackend
    return HFBackend(model, eos, eos).generate(prompts, max_new, greedy=True)


def common_prefix(a, b):
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--dtype", default="bfloat16", help="vLLM weights dtype (HF re-scores in fp32)")
    ap.add_argument("--n-prompts", type=int, default=6)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--json", default=None, help="write the results here too")
    args = ap.parse_args()

    from pact_cotrain.envs.toolworld import generate_tasks
    from pact_cotrain.models import resolve_model
    from pact_cotrain.recipes.common import load_model_and_tokenizer
    from pact_cotrain.render import prompt_ids
    from pact_cotrain.rollout.vllm_backend import VLLMBackend

    path = str(resolve_model(args.model))
    model, tok = load_model_and_tokenizer(path, "float32")
    eos = tok.eos_token_id
    tasks = generate_tasks(args.n_prompts, seed=1, split="test")
    prompts = [prompt_ids(tok, t) for t in tasks]
    print(f"model={path} vllm dtype={args.dtype} eos={eos} ({tok.convert_ids_to_tokens(eos)}) "
          f"prompts={len(prompts)} lens={[len(p) for p in prompts]}")

    started = time.perf_counter()
    backend = VLLMBackend(path, eos, dtype=args.dtype, max_model_len=4096, seed=0)
    print(f"engine init {time.perf_counter() - started:.1f}s; torch threads now {torch.get_num_threads()}")
    results = {"dtype": args.dtype, "logprob_agreement": {}, "weight_sync": {}}
    max_new = args.new_tokens

    # 1-2. sampling at several temperatures, token exactness and log-prob agreement
    for temperature in (1.0, 0.7):
        turns = backend.generate(prompts, max_new, temperature, 1.0, False, seed=123)
        again = backend.generate(prompts, max_new, temperature, 1.0, False, seed=123)
        other = backend.generate(prompts, max_new, temperature, 1.0, False, seed=124)
        check_turn_shape(turns, eos, max_new)
        assert [t.token_ids for t in turns] == [t.token_ids for t in again], "same seed, same ids"
        torch.manual_seed(5)
        via_torch = backend.generate(prompts, max_new, temperature, 1.0, False)
        torch.manual_seed(5)
        via_torch_again = backend.generate(prompts, max_new, temperature, 1.0, False)
        assert [t.token_ids for t in via_torch] == [t.token_ids for t in via_torch_again], "torch.manual_seed"
        stats = diff_stats(turns, rescore(model, prompts, turns, temperature))
        stats["finished"] = sum(t.finished for t in turns)
        stats["seed_124_differs"] = sum(a.token_ids != b.token_ids for a, b in zip(turns, other))
        results["logprob_agreement"][f"sample_T{temperature}"] = stats
        print(f"sample T={temperature}: {stats}")
    g_vllm = backend.generate(prompts, max_new, 1.0, 1.0, True)
    check_turn_shape(g_vllm, eos, max_new)
    g_hf = greedy_hf(model, prompts, eos, max_new)
    stats = diff_stats(g_vllm, rescore(model, prompts, g_vllm, 1.0))
    stats["identical_to_hf_greedy"] = sum(a.token_ids == b.token_ids for a, b in zip(g_vllm, g_hf))
    stats["common_prefix_with_hf_greedy"] = [common_prefix(a.token_ids, b.token_ids) for a, b in zip(g_vllm, g_hf)]
    stats["lengths"] = [len(t.token_ids) for t in g_vllm]
    results["logprob_agreement"]["greedy"] = stats
    print(f"greedy: {stats}")

    # 3. weight sync
    original = {n: p.detach().clone() for n, p in model.named_parameters()}
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for i, layer in enumerate(model.model.layers):
            layer.mlp.down_proj.weight.mul_(1.2 if i % 2 else 0.8)
            q = layer.self_attn.q_proj.weight
            q.add_(torch.randn(q.shape, generator=gen) * q.std() * 0.2)
        model.model.norm.weight.mul_(1.1)
        emb = model.model.embed_tokens.weight  # tied to lm_head in SmolLM2
        emb.add_(torch.randn(emb.shape, generator=gen) * emb.std() * 0.1)
        # Round to bf16 so that a bf16 engine holds exactly the HF weights: what remains is compute precision.
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    stale = backend.generate(prompts, max_new, 1.0, 1.0, True)
    stale_stats = diff_stats(stale, rescore(model, prompts, stale, 1.0))
    g_hf_new = greedy_hf(model, prompts, eos, max_new)
    stale_stats["identical_to_perturbed_hf_greedy"] = sum(a.token_ids == b.token_ids for a, b in zip(stale, g_hf_new))
    print(f"before sync (vLLM old weights vs perturbed HF): {stale_stats}")
    started = time.perf_counter()
    backend.load_weights(model)
    sync_s = time.perf_counter() - started
    synced = backend.generate(prompts, max_new, 1.0, 1.0, True)
    synced_stats = diff_stats(synced, rescore(model, prompts, synced, 1.0))
    synced_stats["identical_to_perturbed_hf_greedy"] = sum(a.token_ids == b.token_ids
                                                           for a, b in zip(synced, g_hf_new))
    synced_stats["common_prefix_with_perturbed_hf_greedy"] = [common_prefix(a.token_ids, b.token_ids)
                                                              for a, b in zip(synced, g_hf_new)]
    synced_stats["changed_vs_before_sync"] = sum(a.token_ids != b.token_ids for a, b in zip(synced, stale))
    synced_stats["sync_seconds"] = round(sync_s, 2)
    sampled = backend.generate(prompts, max_new, 1.0, 1.0, False, seed=7)
    synced_stats["sampled_T1_after_sync"] = diff_stats(sampled, rescore(model, prompts, sampled, 1.0))
    print(f"after sync: {synced_stats}")
    with torch.no_grad():
        for n, p in model.named_parameters():
            p.copy_(original[n])
    backend.load_weights(model)
    restored = backend.generate(prompts, max_new, 1.0, 1.0, True)
    restored_ok = [a.token_ids for a in restored] == [b.token_ids for b in g_vllm]
    max_lp = max(max(abs(x - y) for x, y in zip(a.logprobs, b.logprobs)) for a, b in zip(restored, g_vllm))
    print(f"synced back the original weights: greedy ids identical to the first run: {restored_ok}, "
          f"max |logp diff| {max_lp:.2e}")
    results["weight_sync"] = {"before_sync": stale_stats, "after_sync": synced_stats,
                              "restored_identical": restored_ok, "restored_max_logp_diff": max_lp}
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
