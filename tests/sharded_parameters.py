"""FSDP2-sharded parameters gathered for rollouts (launched by tests/test_sharded_parameters.py, 2 gloo
processes). accelerate does not shard on CPU, so the model is sharded with torch's own `fully_shard`
and a stand-in accelerator says FSDP; the gathered weights, loaded into an unsharded copy, must be the
model's, and the padded part count the largest over processes.

    python -m torch.distributed.run --nproc_per_node 2 tests/sharded_parameters.py OUT
"""

import copy as copy_module
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.utils import DistributedType
from torch.distributed.fsdp import fully_shard

from pact_cotrain.testing import exit_launched_process, tiny_llama, tiny_tokenizer
from pact_cotrain.training import distributed
from pact_cotrain.training.rollout_policy import RolloutPolicyMixin

dist.init_process_group("gloo")
rank = dist.get_rank()
torch.manual_seed(0)
tok = tiny_tokenizer()
reference = tiny_llama(tok)
model = tiny_llama(tok)
model.load_state_dict(reference.state_dict())
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
accelerator = SimpleNamespace(num_processes=dist.get_world_size(), distributed_type=DistributedType.FSDP,
                              device=torch.device("cpu"), unwrap_model=lambda m: m)
assert distributed.sharding(accelerator) == "fsdp"
local_shape = tuple(model.model.embed_tokens.weight.to_local().shape)
copy = distributed.unsharded_copy(accelerator, model, torch.bfloat16)
with distributed.full_parameters(accelerator, model) as named:
    distributed.load_full_parameters(copy, named)
same = all(torch.equal(p.to(torch.bfloat16), dict(copy.named_parameters())[name])
           for name, p in reference.named_parameters())
ids = torch.tensor([[1, 5, 9, 13]])
bf16_reference = copy_module.deepcopy(reference)
for p in bf16_reference.parameters():  # parameters only, as every rollout copy: rotary buffers stay fp32
    p.data = p.data.to(torch.bfloat16)
logits_match = torch.allclose(copy(input_ids=ids).logits.float(), bf16_reference(input_ids=ids).logits.float())
padded = distributed.padded_count(accelerator, 3 if rank == 0 else 5)


class Trainer(RolloutPolicyMixin):
    """What `_rollout_policy` reads of PACTTrainer."""

    def __init__(self):
        self.accelerator, self.model, self.rollout_dtype, self._rollout_copy = accelerator, model, torch.bfloat16, None


trainer = Trainer()
first = trainer._rollout_policy(model)
# one optimiser step on the sharded model and the same step on the unsharded reference (both ranks see the
# same batch, so the averaged gradient is the reference's)
for m in (model, reference):
    optimizer = torch.optim.SGD(m.parameters(), lr=1.0)
    m(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
second = trainer._rollout_policy(model)
refreshed = all(torch.allclose(p.to(torch.bfloat16).float(), dict(second.named_parameters())[name].float(), atol=1e-2)
                for name, p in reference.named_parameters())
moved = not torch.equal(reference.model.embed_tokens.weight.to(torch.bfloat16), bf16_reference.model.embed_tokens.weight)
# One write of the line and its newline: print() writes them separately, and two processes sharing the pipe
# then interleave as "...refreshed=TrueRANK 0 ...", which the test's parser read as one line.
sys.stdout.write(f"RANK {rank} class={type(copy).__name__} local={local_shape} full={tuple(copy.model.embed_tokens.weight.shape)} "
                 f"same={same} logits={logits_match} padded={padded} once={second is first} refreshed={refreshed and moved}\n")
sys.stdout.flush()
exit_launched_process()  # all checks are printed above; see its docstring
