"""One object for "am I one process or many": `torchrun` sets the environment, everything else asks here."""
from __future__ import annotations

import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None

    @classmethod
    def from_env(cls) -> "Distributed":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world == 1:
            return cls()
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if not torch_dist.is_initialized():
            torch_dist.init_process_group(backend=backend)
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")), backend)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device(self, choice: str) -> torch.device:
        if choice != "auto":
            return torch.device(choice)
        return torch.device(f"cuda:{self.local_rank}") if torch.cuda.is_available() else torch.device("cpu")

    def wrap(self, model):
        if self.world == 1:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device = next(model.parameters()).device
        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def sum(self, value):
        """The sum of a number over all processes (the number itself with one process)."""
        if self.world == 1:
            return value
        device = torch.device(f"cuda:{self.local_rank}") if self.backend == "nccl" else torch.device("cpu")
        tensor = torch.tensor(float(value), dtype=torch.float64, device=device)
        torch_dist.all_reduce(tensor)
        return type(value)(tensor.item())

    def no_sync(self, model, last: bool):
        """Skip the gradient all-reduce on every micro-batch but the last of a step."""
        return model.no_sync() if self.world > 1 and not last else nullcontext()

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        if self.world > 1 and torch_dist.is_initialized():
            torch_dist.destroy_process_group()
