"""Small torch.distributed helpers, resolved at call time, and printing on rank 0.

The codebook's all-reduce and broadcast and the non-finite guard's cross-rank decision use them.
Lightning creates the process group inside ``Trainer.fit`` (after the modules were built), so nothing
here decides at import or construction time whether training is distributed: every helper checks
``torch.distributed.is_initialized()`` when it is called and is a no-op / identity otherwise.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import torch
import torch.distributed as dist


def is_distributed() -> bool:
    """True inside an initialised process group (DDP run), False otherwise."""
    return dist.is_available() and dist.is_initialized()


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


def any_across_ranks(flag: bool | torch.Tensor, device: torch.device | str = "cpu") -> bool:
    """True when ``flag`` is True on any rank; identity when not distributed.

    ``flag``: a host bool, or a 0-dim/1-element bool tensor on the device, which is all-reduced there
    and read once: a single device-to-host sync per decision. ``device``: where a host flag is put for
    the collective (NCCL needs CUDA).
    """
    if not torch.is_tensor(flag):
        if not is_distributed():
            return bool(flag)
        flag = torch.tensor(bool(flag), device=device)
    if not is_distributed():
        return bool(flag)
    t = flag.reshape(1).float()
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


def rank_zero_print(*msg: Any) -> None:
    """Print on global rank 0 only (rank from the launcher's environment, before the Trainer exists)."""
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", os.environ.get("SLURM_PROCID", "0")))) == 0:
        print(*msg, file=sys.stdout, flush=True)
