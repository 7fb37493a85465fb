"""accelerate's own FSDP2 checkpoint files, written by 2 gloo processes (tests/test_checkpoint_layouts.py).

    python -m torch.distributed.run --nproc_per_node 2 tests/fsdp_checkpoint.py OUT STATE_DICT_TYPE

The tiny model is sharded with torch's `fully_shard` (accelerate does not shard on CPU), takes one AdamW
step, and `save_fsdp_model` / `save_fsdp_optimizer` (what the Trainer's `_save_checkpoint` calls under
FSDP) write its weights and optimiser state into OUT: `pytorch_model_fsdp.bin` and `optimizer.bin`
(FULL_STATE_DICT), or the torch.distributed.checkpoint folders `pytorch_model_fsdp_0/` and `optimizer_0/`
(SHARDED_STATE_DICT).
"""

import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate import PartialState
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import save_fsdp_model, save_fsdp_optimizer
from torch.distributed.fsdp import fully_shard

from pact_cotrain.testing import exit_launched_process, tiny_llama, tiny_tokenizer

out, state_dict_type = sys.argv[1], sys.argv[2]
PartialState()  # gloo on CPU, from torchrun's environment; accelerate's logging needs it
rank = dist.get_rank()
model = tiny_llama(tiny_tokenizer())
for layer in model.model.layers:
    fully_shard(layer)
fully_shard(model)
optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(input_ids=torch.tensor([[1, 5, 9, 13]]), labels=torch.tensor([[1, 5, 9, 13]])).loss.backward()
optimizer.step()
plugin = FullyShardedDataParallelPlugin(fsdp_version=2, state_dict_type=state_dict_type)
accelerator = SimpleNamespace(num_processes=dist.get_world_size(), process_index=rank)
save_fsdp_model(plugin, accelerator, model, out)
save_fsdp_optimizer(plugin, accelerator, optimizer, model, out)
print(f"RANK {rank} saved {state_dict_type}", flush=True)
exit_launched_process()
