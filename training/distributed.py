"""Where training runs, and DistributedDataParallel under ``torchrun``: gloo on CPU, NCCL on
GPU (rank ``LOCAL_RANK`` takes ``cuda:LOCAL_RANK``); rank 0 alone writes.

``torchrun --nproc_per_node N -m lesionseg_training train ...`` sets ``WORLD_SIZE``/``RANK``;
``train_maybe_distributed`` then joins the process group, and the trainer wraps the network in
DDP, seeds each rank's crop sampler differently, and lets only rank 0 validate and save.
"""

from __future__ import annotations

import os
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from napari_lesionseg.core.configs import ConfigError

from .config import TrainConfig


def train_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: ``cuda:<local rank>`` when PyTorch sees a GPU, else the CPU (Apple MPS only
    when asked for by name). A GPU asked for but not present is a clear error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        name = f"cuda:{local_rank}"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"run.device {name!r} was asked for, but PyTorch sees no CUDA GPU")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("run.device 'mps' was asked for, but PyTorch sees no Apple GPU")
    return torch.device(name)


def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    def any_flag(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (keeps ranks in lockstep)."""
        if not self.enabled:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def weights_identical(self, net: torch.nn.Module) -> bool:
        """True when every rank holds bit-identical parameters. (BatchNorm running statistics
        are rank 0's: DDP broadcasts them from rank 0 before every forward, and rank 0 saves.)"""
        import hashlib

        h = hashlib.sha256()
        for k, v in sorted(net.named_parameters()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        digest = h.hexdigest()
        if not self.enabled:
            return True
        gathered: list[str | None] = [None] * self.world
        dist.all_gather_object(gathered, digest)
        return len(set(gathered)) == 1

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


def init_from_env(device: str = "auto") -> DistContext:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = train_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(dev))
    return DistContext(dist.get_rank(), dist.get_world_size(), dev)


def train_maybe_distributed(cfg: TrainConfig, run_dir: str | Path, *, resume: bool = False,
                            init_from: torch.nn.Module | None = None, lineage: dict | None = None
                            ) -> Generator[dict[str, Any], None, Path]:
    from .trainer import train

    ctx = init_from_env(cfg.run.device)
    try:
        result = yield from train(cfg, run_dir, resume=resume, dist_ctx=ctx, init_from=init_from, lineage=lineage)
    finally:
        if ctx.enabled and dist.is_initialized():
            dist.destroy_process_group()
    return result
