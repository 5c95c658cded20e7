"""torchrun support: one process per GPU (or per CPU process with gloo), DistributedDataParallel for the
segmentation network, an explicit gradient all-reduce for the small discriminators.

Each process reads its own share of the sample stream with the per-GPU batch `data.batch_size`; the
effective batch is batch_size x world size. With bn_mode=train, BatchNorm uses SyncBatchNorm on GPUs
(batch statistics over the global batch); with gloo on CPU each process keeps its own running averages
(only rank 0's are saved and evaluated). The default bn_mode=frozen makes that moot.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_type: str) -> DistEnv:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistEnv()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device_type == "cuda" else "gloo")
    return DistEnv(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def average_gradients(module: torch.nn.Module, env: DistEnv) -> None:
    if not env.enabled:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= env.world


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def broadcast_flag(flag: bool, env: DistEnv, device: torch.device) -> bool:
    """True on every rank if any rank raised it (Ctrl-C or divergence seen by one process stops all)."""
    if not env.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t)
    return bool(t.item() > 0)
