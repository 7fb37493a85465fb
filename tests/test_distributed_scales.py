"""The pure parts of rollouts in every process (training/distributed.py), without launching processes.

* Loss scales: with process r's loss multiplied by s_r = N * D_r / D, DDP's gradient average
  (1/N) sum_r grad(s_r L_r) is the gradient of the loss over every process's rows, for each aggregation
  and for the SFT term, also when the processes hold different numbers of tokens or none.
* Micro-batches of a process carry its scale on top of their own.
* Seeds and draws: N processes use the single process's chunk seeds and its anchoring draw.
* vLLM per process: external_launcher, tensor_parallel_size 1, a seed per rank; the setups that would
  push parameter shards into the engine are refused.
"""

from types import SimpleNamespace

import pytest
import torch
from accelerate.utils import DistributedType

from pact_cotrain import losses
from pact_cotrain.errors import UserError
from pact_cotrain.training import distributed, microbatch

MAX_TOKENS = 5


def _rl(logp_p, logp_t, mask, adv, anchor, aggregation):
    return losses.anchored_rl_loss(logp_p, None, logp_t, None, adv, mask, anchor,
                                   aggregation=aggregation, max_tokens=MAX_TOKENS)[0]


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "token_sum_norm"])
@pytest.mark.parametrize("masks", ["unequal", "one_process_empty"])
def test_scaled_process_losses_average_to_the_step_gradient(aggregation, masks):
    gen = torch.Generator().manual_seed(0)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0], [1, 1, 0], [0, 0, 0]], dtype=torch.float)  # 4 / 2 tokens
    if masks == "one_process_empty":
        mask[2:] = 0
    logp_p, logp_t = (torch.randn(4, 3, generator=gen).requires_grad_() for _ in range(2))
    adv, anchor = torch.tensor([1.0, -1.0, 0.5, 2.0]), torch.tensor([True, True, False, False])
    step = _rl(logp_p, logp_t, mask, adv, anchor, aggregation)
    expected = torch.autograd.grad(step, [logp_p, logp_t])

    shares = [slice(0, 2), slice(2, 4)]  # process r holds one group of K=2 rows
    raw = [distributed.rl_raw_normaliser(mask[s], aggregation, MAX_TOKENS) for s in shares]
    ddp = 0.0
    for s, local in zip(shares, raw):
        scale = distributed.process_scale(local, sum(raw), 2, clamp=aggregation == "token_mean")
        ddp = ddp + scale * _rl(logp_p[s], logp_t[s], mask[s], adv[s], anchor[s], aggregation) / 2  # DDP: mean
    got = torch.autograd.grad(ddp, [logp_p, logp_t])
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)
    if aggregation == "token_mean" and masks == "unequal":  # the plain per-process mean is not the step's
        naive = sum(_rl(logp_p[s], logp_t[s], mask[s], adv[s], anchor[s], aggregation) for s in shares) / 2
        assert not torch.allclose(torch.autograd.grad(naive, [logp_p])[0], expected[0])


def test_scaled_process_sft_losses_average_to_the_step_gradient():
    gen = torch.Generator().manual_seed(1)
    logp = torch.randn(4, 4, generator=gen).requires_grad_()
    tool = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 1], [1, 0, 0, 0], [0, 0, 0, 0]], dtype=torch.float)
    reasoning = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=torch.float)
    answer = torch.zeros(4, 4)

    def sft(rows):
        return losses.component_sft_loss(logp[rows], reasoning[rows], tool[rows], 0.5, 1.0, answer[rows], 0.5)[0]

    expected = torch.autograd.grad(sft(slice(0, 4)), logp)[0]
    shares = [slice(0, 2), slice(2, 4)]
    batches = [{"sft_targets": [[0]] * 2, "sft_toolcall_mask": tool[s], "sft_reasoning_mask": reasoning[s],
                "sft_answer_mask": answer[s]} for s in shares]
    raw = [distributed.sft_raw_normaliser(b, 0.5, 0.5) for b in batches]
    assert raw[0] != raw[1]
    ddp = sum(distributed.process_scale(n, sum(raw), 2, clamp=True) * sft(s) / 2 for s, n in zip(shares, raw))
    torch.testing.assert_close(torch.autograd.grad(ddp, logp)[0], expected)
    assert distributed.sft_raw_normaliser({}, 0.5, 0.5) == 0.0  # a process without traces still reduces


def test_micro_batches_carry_their_process_scale():
    batch = {"plan": None, "completions": [[1, 2], [3], [4, 5, 6], [7]], "prompt_contexts": [[9] * 4] * 4,
             "trace_contexts": [[9] * 8] * 4, "loss_mask": torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]],
                                                                        dtype=torch.float),
             "advantages": torch.ones(4), "anchor": torch.tensor([True, True, False, False])}
    args = (7, 2, batch["anchor"], ~batch["anchor"], "token_mean", None, None)
    plain = microbatch.split_batch(batch, *args)
    scaled = microbatch.split_batch({**batch, "rl_loss_scale": 0.75}, *args)
    assert len(plain) >= 2
    assert [p["rl_loss_scale"] * 0.75 for p in plain] == pytest.approx([p["rl_loss_scale"] for p in scaled])


def test_processes_use_the_single_process_seeds_and_draw():
    seed, n = 1234, 2
    chunks_per_process = 3  # one process's P prompts in 3 generation chunks
    single = [microbatch.chunk_seed(seed, c) for c in range(n * chunks_per_process)]
    per_process = [distributed.rollout_chunk_seed(seed, c, chunks_per_process, r)
                   for r in range(n) for c in range(chunks_per_process)]
    assert per_process == single and len(set(single)) == len(single)
    draw = losses.draw_anchor_mask(8, 0.5, torch.Generator().manual_seed(3))
    assert torch.equal(torch.cat([distributed.local_share(draw, r, n) for r in range(n)]), draw)
    with pytest.raises(ValueError):
        distributed.local_share(draw[:7], 0, n)


def _accelerator(rank: int, n: int, kind=DistributedType.MULTI_CPU, zero_stage=None):
    plugin = SimpleNamespace(zero_stage=zero_stage)
    return SimpleNamespace(process_index=rank, local_process_index=rank, num_processes=n, distributed_type=kind,
                           state=SimpleNamespace(deepspeed_plugin=plugin))


def test_vllm_engine_per_process_arguments(monkeypatch):
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR"):
        monkeypatch.setenv(name, "unset")  # restored after the test
    monkeypatch.setenv("MASTER_PORT", "29555")
    assert distributed.vllm_process_kwargs(_accelerator(0, 1), 7, {}) == {}
    kwargs = distributed.vllm_process_kwargs(_accelerator(1, 2), 7, {"max_model_len": 2048})
    assert kwargs == {"distributed_executor_backend": "external_launcher", "tensor_parallel_size": 1, "seed": 8}
    import os

    assert (os.environ["RANK"], os.environ["LOCAL_RANK"], os.environ["WORLD_SIZE"]) == ("1", "1", "2")
    with pytest.raises(UserError, match="tensor_parallel_size"):
        distributed.vllm_process_kwargs(_accelerator(0, 2), 7, {"tensor_parallel_size": 2})
    # sharded launches get an engine too: it is loaded with the gathered full weights (full_parameters)
    for kind, stage in ((DistributedType.FSDP, None), (DistributedType.DEEPSPEED, 3), (DistributedType.DEEPSPEED, 2)):
        assert distributed.vllm_process_kwargs(_accelerator(0, 2, kind, zero_stage=stage), 7, {})["seed"] == 7
