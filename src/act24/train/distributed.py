"""Data-parallel training under torchrun: FSDP2 (`fully_shard`) per block, bf16 mixed precision.

Every rank draws the same global batch and trains on its slice of it, so a run on N GPUs
sees the data of one GPU with the same global batch. Dense training then follows the same
trajectory up to reduction order. With 2:4 on, the FFN's token grouping and dense-feature
split stay rank-local (each rank groups and counts only its own tokens, with no
communication), so the weight gradients' 2:4 approximation differs from one GPU's and the
runs agree statistically, not step for step.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


_host_group = None  # gloo group for host-side agreements (any_rank): made by init, released by shutdown


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def init(device_type: str) -> DistContext:
    """Join the process group torchrun set up: NCCL with one GPU per rank, or gloo on CPUs."""
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if device_type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPUs are visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", device_id=device if device.type == "cuda" else None)
    global _host_group
    # host-side agreements get their own gloo group: NCCL reduces device tensors only (a flag agreed
    # through it would wait for the GPU every step), and interleaved with FSDP2's collectives on a
    # gloo default group they made processes abort at exit
    _host_group = dist.new_group(backend="gloo")
    return DistContext(dist.get_rank(), dist.get_world_size(), device)


def shutdown() -> None:
    global _host_group
    if dist.is_initialized():
        dist.destroy_process_group()
    # released here, while the interpreter is alive: a used gloo group left to be destroyed during
    # interpreter finalization aborted the process now and then ("terminate called without an active exception")
    _host_group = None


def shard(model: torch.nn.Module, device: torch.device) -> None:
    """fully_shard each block, then the rest; bf16 parameters and fp32 gradient reduction on GPUs."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if device.type == "cuda" \
        else MixedPrecisionPolicy()
    for block in model.blocks:
        fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)


def local_slice(batch: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    per_rank = batch.shape[0] // ctx.world_size
    return batch[ctx.rank * per_rank : (ctx.rank + 1) * per_rank]


def mean_over_ranks(value: float, device: torch.device) -> float:
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.item() / dist.get_world_size()


def any_rank(flag: bool) -> bool:
    """True on every rank if `flag` is True on any: one decision the ranks share (a host-side all-reduce
    on init's gloo group, no GPU synchronisation)."""
    t = torch.tensor([int(flag)], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_host_group)
    return bool(t.item())


def barrier() -> None:
    dist.barrier()
