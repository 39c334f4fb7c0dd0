"""One object for "am I one process or many": `torchrun` sets the environment, everything else asks here."""

from __future__ import annotations

import contextlib
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist

from mixsd.config import ConfigError


@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    fsdp: bool = False

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

    def wrap(self, model, fsdp: bool = False):
        """DDP, or FSDP2 (`fully_shard`, in place) on every decoder layer and the root for models that do not
        fit one device. Build the optimizer after this: FSDP turns parameters into shards."""
        if fsdp and self.world == 1:
            raise ConfigError("--fsdp needs several processes: run under torchrun --nproc_per_node N")
        self.fsdp = fsdp
        if self.world == 1:
            return model
        device = next(model.parameters()).device
        if fsdp:
            from torch.distributed.device_mesh import init_device_mesh
            from torch.distributed.fsdp import fully_shard

            mesh = init_device_mesh(device.type, (self.world,))
            layer_types = set(getattr(model, "_no_split_modules", None) or [])
            for module in model.modules():
                if type(module).__name__ in layer_types:
                    fully_shard(module, mesh=mesh)
            fully_shard(model, mesh=mesh)
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    def gather_state(self, model, optimizer) -> tuple[dict | None, dict]:
        """(full model state or None for "the module's own", optimizer state) for a checkpoint. Under FSDP
        every process must call this (it gathers shards); only the main process gets the full dicts."""
        if not self.fsdp:
            return None, optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            get_model_state_dict,
            get_optimizer_state_dict,
        )

        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return get_model_state_dict(model, options=options), get_optimizer_state_dict(model, optimizer, options=options)

    def load_optimizer(self, model, optimizer, state: dict) -> None:
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        set_optimizer_state_dict(
            model, optimizer, optim_state_dict=state, options=StateDictOptions(full_state_dict=True)
        )

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
        if self.world == 1 or last:
            return nullcontext()
        return self._fsdp_no_sync(model) if self.fsdp else model.no_sync()

    @staticmethod
    @contextlib.contextmanager
    def _fsdp_no_sync(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)

    def barrier(self) -> None:
        if self.world > 1:
            torch_dist.barrier()

    def close(self) -> None:
        """Every process reaches this point before any tears the group down (none exits while another still
        talks to it)."""
        if self.world > 1 and torch_dist.is_initialized():
            torch_dist.barrier()
            torch_dist.destroy_process_group()
