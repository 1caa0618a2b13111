"""Small torch.distributed helpers, resolved at call time.

Lightning creates the process group inside ``Trainer.fit`` (after the modules were built), so nothing
here decides at import or construction time whether training is distributed: every helper checks
``torch.distributed.is_initialized()`` when it is called and is a no-op / identity otherwise.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group (DDP run), False otherwise."""
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    """Processes in the group (1 when not distributed)."""
    return dist.get_world_size() if is_distributed() else 1


def global_rank() -> int:
    """This process's rank: from the process group, else from the launcher's environment (torchrun
    ``RANK``, SLURM ``SLURM_PROCID``), else 0. Usable before Lightning has set up the group."""
    if is_distributed():
        return dist.get_rank()
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        if var in os.environ:
            return int(os.environ[var])
    return 0


def is_rank_zero() -> bool:
    return global_rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum ``tensor`` in place over all ranks (no-op when not distributed); returns it."""
    if is_distributed():
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def broadcast(tensor: torch.Tensor, src: int = 0) -> torch.Tensor:
    """Overwrite ``tensor`` in place with rank ``src``'s copy (no-op when not distributed); returns it."""
    if is_distributed():
        dist.broadcast(tensor, src)
    return tensor


def any_across_ranks(flag: bool, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is True on any rank (one small all-reduce; identity when not distributed).

    ``device``: where the 1-element flag lives for the collective (the loss's device: NCCL needs CUDA).
    """
    if not is_distributed():
        return bool(flag)
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)
