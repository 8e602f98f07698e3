"""Data-parallel pretraining: :func:`moladapt.pretrain.pretrain` under ``torchrun``.

Run the same script with ``torchrun --nproc_per_node N script.py``: when ``WORLD_SIZE > 1``
:func:`pretrain` initialises the default process group from the environment (``gloo`` on
CPU, ``nccl`` on CUDA), wraps the encoder and the stage's objective heads in one
:class:`~torch.nn.parallel.DistributedDataParallel`, gives each rank every
``N``-th molecule of the epoch's shuffled order (DistributedSampler-style, same seed on all
ranks, padded so every rank runs the same number of batches), lets only rank 0 write
checkpoints, and synchronises (buffers from rank 0, barrier) at the end of each epoch.

``batch_size`` is per process: the effective batch is ``batch_size × N``.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: ``world_size == 1`` means not distributed."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_from_env(device: str | torch.device = "cpu") -> DistContext:
    """Join the process group described by ``torchrun``'s environment, if there is one.

    Single-process (``WORLD_SIZE`` unset or 1, and no group initialised): a no-op context.
    An already-initialised group is used as is. A group created here stays up for later
    calls (re-creating one in the same process is fragile) and is destroyed at exit.
    """
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(),
                           int(os.environ.get("LOCAL_RANK", "0")))
    if env_world_size() <= 1:
        return DistContext()
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available")
    backend = "nccl" if torch.device(device).type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    atexit.register(_destroy)
    return DistContext(dist.get_rank(), dist.get_world_size(),
                       int(os.environ.get("LOCAL_RANK", "0")))


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def resolve_device(device: str | torch.device, ctx: DistContext) -> torch.device:
    """``cuda`` → ``cuda:<LOCAL_RANK>`` in a distributed run; anything else unchanged."""
    device = torch.device(device)
    if ctx.enabled and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", ctx.local_rank)
        torch.cuda.set_device(device)
    return device


def shard_indices(order: np.ndarray, ctx: DistContext) -> np.ndarray:
    """This rank's share of ``order``: padded (repeating its start) to a multiple of the
    world size, then every ``world_size``-th element from ``rank`` (as DistributedSampler)."""
    if not ctx.enabled or len(order) == 0:
        return order
    per_rank = -(-len(order) // ctx.world_size)
    return np.resize(order, per_rank * ctx.world_size)[ctx.rank :: ctx.world_size]


class JointModel(nn.Module):
    """Encoder + one stage's objectives as one module, so DDP sees all their parameters.

    ``forward(batch, generator)`` returns the stacked per-objective losses ``[K]``.
    """

    def __init__(self, encoder: nn.Module, objectives: list[nn.Module],
                 always_differentiable: bool = False) -> None:
        super().__init__()
        self.encoder = encoder
        self.objectives = nn.ModuleList(objectives)
        self.always_differentiable = always_differentiable

    def forward(self, batch, generator: torch.Generator) -> Tensor:
        losses = torch.stack([o(self.encoder, batch, generator) for o in self.objectives])
        if self.always_differentiable and torch.is_grad_enabled() and not losses.requires_grad:
            # nothing to learn from this batch on this rank, but it must still run backward
            # (with zero gradients), or the other ranks' gradient all-reduce waits forever
            losses = losses + sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)
        return losses


def wrap(encoder: nn.Module, objectives: list[nn.Module], ctx: DistContext):
    """A callable ``(batch, generator) -> losses [K]``: DDP-wrapped when distributed.

    ``find_unused_parameters`` is on because an objective may leave a head unused in a
    batch (e.g. no bond masked). Constructing DDP broadcasts rank 0's parameters.
    """
    if not ctx.enabled:
        return JointModel(encoder, objectives)
    joint = JointModel(encoder, objectives, always_differentiable=True)
    return nn.parallel.DistributedDataParallel(joint, device_ids=None, find_unused_parameters=True)


def sync_buffers(module: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm statistics) to every rank."""
    if ctx.enabled:
        for b in module.buffers():
            dist.broadcast(b, src=0)


def mean_across(values: list[float], ctx: DistContext, device: torch.device) -> list[float]:
    """The mean over ranks of each value (the values themselves when not distributed)."""
    if not ctx.enabled:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()

