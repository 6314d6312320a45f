"""This process's place among torchrun's ranks, and the process group the downloads and uploads wait on."""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass


@dataclass(frozen=True)
class Dist:
    """This process's place among the ranks (torchrun's environment; rank 0 of 1 without it)."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1
    local_world: int = 1
    node: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        env = os.environ
        world = int(env.get("WORLD_SIZE", "1"))
        local_world = int(env.get("LOCAL_WORLD_SIZE", str(world)))
        rank = int(env.get("RANK", "0"))
        node = int(env.get("GROUP_RANK", str(rank // max(local_world, 1))))
        return cls(rank, int(env.get("LOCAL_RANK", "0")), world, local_world, node)

    @property
    def nodes(self) -> int:
        return max(1, self.world // max(self.local_world, 1))


def init_process_group(dist: Dist) -> None:
    """Start the process group early (the downloads need a barrier); the trainer then reuses it."""
    if dist.world <= 1:
        return
    import torch
    import torch.distributed as td

    if td.is_initialized():
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group("nccl" if torch.cuda.is_available() else "gloo", timeout=_dt.timedelta(hours=2))


def barrier() -> None:
    import torch.distributed as td

    if td.is_available() and td.is_initialized():
        td.barrier()
