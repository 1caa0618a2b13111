"""Resuming: a rerun of the same command continues from the newest checkpoint in ``--default_root_dir``.

Checkpoints are written atomically (:class:`tats.train.trainer.AtomicCheckpointIO`) under
``<default_root_dir>/checkpoints``: ``step########.ckpt`` every ``--ckpt_every_n_steps`` optimizer steps,
``last.ckpt``, and ``best-step########.ckpt`` for the monitored validation metric. Rerunning the same
command resumes from the newest of them (:func:`resolve_resume`), so an interrupted job is restarted by
running it again.
"""

from __future__ import annotations

import argparse
import os
import warnings
from pathlib import Path
from typing import Callable

from tats.distributed import rank_zero_print
from tats.io.checkpoint import CheckpointError, load_checkpoint

CHECKPOINT_DIR = "checkpoints"


def peek_global_step(path: Path) -> int | None:
    """``global_step`` stored in a checkpoint, (memory-mapped, weights only); None if unreadable."""
    try:
        ckpt = load_checkpoint(path, map_location="cpu", mmap=True)
    except Exception:  # noqa: BLE001 - a truncated or foreign file is simply not a resume candidate
        return None
    step = ckpt.get("global_step") if isinstance(ckpt, dict) else None
    return int(step) if step is not None else None


def find_resume_checkpoint(default_root_dir: str | os.PathLike) -> Path | None:
    """The checkpoint a rerun should resume from: highest stored ``global_step`` in
    ``<default_root_dir>/checkpoints``, ties broken in favour of ``last*.ckpt`` and then the newest mtime.
    Unreadable files (e.g. a crash while writing with a non-atomic writer) are skipped with a warning."""
    ckpt_dir = Path(default_root_dir) / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        return None
    ranked = []
    for path in ckpt_dir.glob("*.ckpt"):
        if not path.is_file():
            continue
        step = peek_global_step(path)
        if step is None:
            warnings.warn(f"skipping unreadable checkpoint {path} (looking for one to resume)", stacklevel=2)
            continue
        ranked.append((step, path.name.startswith("last"), path.stat().st_mtime, path))
    if not ranked:
        return None
    return max(ranked, key=lambda r: r[:3])[3]


def remove_torn_temp_files(default_root_dir: str | os.PathLike, log: Callable[..., None] = rank_zero_print
                           ) -> list[Path]:
    """Delete the ``.<name>.ckpt.*.tmp`` files of :func:`tats.io.checkpoint.save_checkpoint` that a kill
    during a checkpoint save left in ``<default_root_dir>/checkpoints``; returns the deleted paths.
    Called when a run starts, before any save can be in flight (the target files were never touched)."""
    ckpt_dir = Path(default_root_dir) / CHECKPOINT_DIR
    removed = []
    for tmp in sorted(ckpt_dir.glob(".*.ckpt.*.tmp")) if ckpt_dir.is_dir() else []:
        try:
            tmp.unlink()
        except FileNotFoundError:  # another rank of the same job removed it first
            continue
        removed.append(tmp)
    if removed:
        log(f"removed {len(removed)} partial checkpoint file(s) left by an interrupted save in {ckpt_dir}")
    return removed


def resolve_resume(args: argparse.Namespace, log: Callable[..., None] = rank_zero_print) -> str | None:
    """``ckpt_path`` for ``Trainer.fit``: ``--resume_from_checkpoint``, else (unless ``--no_resume``) the
    newest checkpoint of ``--default_root_dir``, else None (fresh run). Torn temporary files of an
    interrupted save are removed first (:func:`remove_torn_temp_files`)."""
    remove_torn_temp_files(args.default_root_dir, log)
    explicit = getattr(args, "resume_from_checkpoint", None)
    if explicit:
        if not Path(explicit).is_file():
            raise CheckpointError(f"--resume_from_checkpoint: file not found: {explicit}")
        log(f"resuming from {explicit} (--resume_from_checkpoint)")
        return str(explicit)
    if getattr(args, "no_resume", False):
        return None
    found = find_resume_checkpoint(args.default_root_dir)
    if found is not None:
        log(f"resuming from {found} (global step {peek_global_step(found)}); pass --no_resume to start over")
        return str(found)
    return None
