"""The non-finite guard's checks on 2 gloo processes holding different values (launched by
tests/test_guard_sharded.py): FSDP2 shards (torch's `fully_shard`; accelerate does not shard on CPU, so a
stand-in accelerator says FSDP), and DeepSpeed ZeRO-2/3 where deepspeed imports and initialises.

    python -m torch.distributed.run --nproc_per_node 2 tests/guard_sharded.py OUT

FSDP2: a NaN is put into process 1's local shard of one gradient (and then of one parameter) only; the
guard's check must find it on BOTH processes (process 0's own shards are finite), so both stop together.
DeepSpeed: a NaN input on process 1 makes the global gradient norm non-finite; the engine skips the step
inside backward, and the guard, called as the Trainer calls it, must stop the run on both processes.
Each process writes OUT/rank<r>.json.
"""

import json
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from torch.distributed.fsdp import fully_shard

from pact_cotrain.testing import exit_launched_process, tiny_llama, tiny_tokenizer
from pact_cotrain.training import guards

out = sys.argv[1]
dist.init_process_group("gloo")
rank = dist.get_rank()
result = {}

# ------------------------------------------------------------------ FSDP2
torch.manual_seed(0)
model = tiny_llama(tiny_tokenizer())
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
accelerator = SimpleNamespace(num_processes=2, distributed_type=DistributedType.FSDP, device=torch.device("cpu"),
                              state=SimpleNamespace(deepspeed_plugin=None), mixed_precision="no")
model(input_ids=torch.tensor([[1, 5, 9, 13]])).logits.sum().backward()
params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
result["fsdp_clean_grad"] = guards.agreed_non_finite(accelerator, guards.first_non_finite((n, p.grad) for n, p in params))
name, target = params[1]
if rank == 1:
    target.grad.to_local().view(-1)[0] = float("nan")
result["fsdp_local_grad"] = guards.first_non_finite((n, p.grad) for n, p in params)
result["fsdp_agreed_grad"] = guards.agreed_non_finite(accelerator, result["fsdp_local_grad"])
if rank == 1:
    with torch.no_grad():
        target.to_local().view(-1)[0] = float("nan")
result["fsdp_agreed_param"] = guards.agreed_non_finite(accelerator, guards.first_non_finite(params))
result["fsdp_name"] = name

# ------------------------------------------------------------------ DeepSpeed, where it runs here
try:
    import deepspeed
except ImportError as exc:
    result["deepspeed"] = f"not importable: {exc}"
else:
    for stage in (2, 3):
        net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 1))
        config = {"train_micro_batch_size_per_gpu": 1, "zero_optimization": {"stage": stage},
                  "optimizer": {"type": "SGD", "params": {"lr": 0.1}}, "zero_allow_untested_optimizer": True}
        engine, optimizer, _, _ = deepspeed.initialize(model=net, model_parameters=net.parameters(), config=config)
        ds_accelerator = SimpleNamespace(num_processes=2, distributed_type=DistributedType.DEEPSPEED,
                                         device=torch.device("cpu"), mixed_precision="no",
                                         state=SimpleNamespace(deepspeed_plugin=SimpleNamespace(
                                             zero_stage=stage, deepspeed_config=config)))
        ds_accelerator.optimizer_step_was_skipped = False
        trainer = SimpleNamespace(accelerator=ds_accelerator, current_task_ids=lambda: ["t"])
        guard = guards.NonFiniteGuard(trainer)
        state = SimpleNamespace(global_step=0)
        outcomes = []
        for bad in (False, True):
            x = torch.ones(1, 8) * (float("nan") if bad and rank == 1 else 1.0)
            engine.backward(engine(x).sum())
            engine.step()  # what accelerate's DeepSpeedEngineWrapper.backward does at a step's last backward
            # what accelerate's DeepSpeedOptimizerWrapper.step_was_skipped returns (it needs an Accelerator)
            ds_accelerator.optimizer_step_was_skipped = optimizer.overflow
            try:
                guard.on_pre_optimizer_step(None, state, None, model=engine.module)
                guard.on_optimizer_step(None, state, None, model=engine.module)
                outcomes.append("ok")
            except guards.NonFiniteUpdateError as exc:
                outcomes.append(str(exc))
        params_finite = all(bool(torch.isfinite(guards._local(p)).all()) for p in engine.module.parameters())
        result[f"zero{stage}"] = {"outcomes": outcomes, "params_finite": params_finite}

with open(f"{out}/rank{rank}.json", "w") as f:
    json.dump(result, f)
print(f"RANK {rank} done", flush=True)
exit_launched_process()
