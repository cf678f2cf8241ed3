"""Where training runs, and DistributedDataParallel under ``torchrun``: gloo on CPU, NCCL on
GPU (rank ``LOCAL_RANK`` takes ``cuda:LOCAL_RANK``); rank 0 alone writes.

``torchrun --nproc_per_node N -m lesionseg_training train ...`` sets ``WORLD_SIZE``/``RANK``;
``trainer.train_maybe_distributed`` then joins the process group, and the trainer wraps the network in
DDP, seeds each rank's crop sampler differently, and lets only rank 0 validate and save.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from napari_lesionseg.core.runtime import pick_device


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

    def agreed(self, value: float) -> float:
        """The largest of the ranks' ``value``, on every rank: one clock for a time budget (each
        rank's own differs by milliseconds, and the learning rate set from it made the ranks'
        weights drift apart)."""
        if not self.enabled:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return float(t.item())

    def weights_identical(self, net: torch.nn.Module) -> bool:
        """True when every rank holds bit-identical parameters. (BatchNorm running statistics
        are rank 0's: DDP broadcasts them from rank 0 before every forward, and rank 0 saves.)"""
        digest = module_digest(net)
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
    dev = pick_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if world <= 1:
        return DistContext(device=dev)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend_for(dev))
    return DistContext(dist.get_rank(), dist.get_world_size(), dev)


def leave_process_group(ctx: DistContext, finished: bool = True) -> None:
    """Leave the process group while the interpreter is whole: the wrappers of a finished run
    (DDP's reducer, the gloo work it issued) sit in reference cycles, and freed only at
    interpreter teardown they ended a finished run with SIGABRT ("terminate called without an
    active exception") in about 1 of 15-20 two-rank runs on a loaded 2-core VM. The ranks meet
    at a barrier only when the run ``finished``: a rank leaving on an error must not wait for
    peers that may be blocked in a collective it will never join (torchrun ends them)."""
    if ctx.enabled and dist.is_initialized():
        gc.collect()
        if finished:
            dist.barrier()
        dist.destroy_process_group()
        gc.collect()


def _active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor by its mean over the ranks, in place (no-op outside a process group).
    For gradients DDP does not see: the discriminator's, the dynamic gates' and the literal
    adaptation step's, all taken with ``torch.autograd.grad`` or on a module DDP does not wrap."""
    if not _active():
        return
    world = dist.get_world_size()
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t.div_(world)


def average_gradients_(module: torch.nn.Module) -> None:
    """Average the ``.grad`` of every parameter of ``module`` over the ranks."""
    average_([p.grad for p in module.parameters() if p.grad is not None])


def broadcast_module_(module: torch.nn.Module, src: int = 0) -> None:
    """Make every rank's parameters and buffers rank ``src``'s (a module DDP does not wrap)."""
    if not _active():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(t.data, src)


def module_digest(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters (by name), to compare ranks."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.named_parameters()):
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
