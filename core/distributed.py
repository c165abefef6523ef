"""Data-parallel training under ``torchrun``: one process per device, rank 0 writes.

Outside torchrun everything here is the identity. Under it (WORLD_SIZE > 1 in the environment)
the process group is joined once (nccl on GPUs, gloo on CPUs), the model is wrapped in DDP,
each rank trains on its own shard of every epoch's order, and only rank 0 writes checkpoints,
logs and events; the others wait at a barrier so none runs ahead of a checkpoint.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # set when the launcher decides (one GPU per rank)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)

    def shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's share of an epoch's order, padded (as DistributedSampler does) so every
        rank has the same number of batches."""
        if not self.enabled:
            return order
        pad = (-len(order)) % self.world_size
        if pad:
            order = torch.cat([order, order[:pad]])
        return order[self.rank :: self.world_size]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def current() -> DistContext:
    """The context of this process, joining the process group on first use under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext()
    cuda = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    device = None
    if cuda:
        local = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local)
        device = torch.device("cuda", local)
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)
