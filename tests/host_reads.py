"""Counting the reads of tensor values on the host (``.item()``, ``bool(t)``, ``.tolist()``, ...).

On a GPU each such read waits for the device: a sync. On the CPU they cost nothing, but counting them
shows how many syncs the same code would make on a GPU, so the suite can hold the training steps to
their budget without one (``tests/train/test_host_reads.py``, ``scripts/gpu_check_more.py``).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections import Counter
from collections.abc import Iterator

import torch

READS = ("item", "tolist", "__bool__", "__float__", "__int__", "__index__", "nonzero")


class HostReads:
    """``counts[name]``: reads by method; ``total``: all of them."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.active = False

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def _from_optimizer() -> bool:
    """A read from torch.optim: its step counters live on the host even when training on a GPU (unless
    ``capturable``), so reading them is no sync."""
    caller = sys._getframe(2).f_code.co_filename
    return f"torch{os.sep}optim{os.sep}" in caller


@contextlib.contextmanager
def patched() -> Iterator[HostReads]:
    """Count host reads of tensor values while ``reads.active`` is True (the caller turns it on around
    the code it measures) inside this block."""
    reads = HostReads()
    saved = {name: getattr(torch.Tensor, name) for name in READS}

    def wrap(name: str, original):
        def counted(self, *args, **kwargs):
            if reads.active and not _from_optimizer():
                reads.counts[name] += 1
                reads.active = False  # a read inside a read (e.g. __bool__ calling item) counts once
                try:
                    return original(self, *args, **kwargs)
                finally:
                    reads.active = True
            return original(self, *args, **kwargs)
        return counted

    for name, original in saved.items():
        setattr(torch.Tensor, name, wrap(name, original))
    try:
        yield reads
    finally:
        for name, original in saved.items():
            setattr(torch.Tensor, name, original)


@contextlib.contextmanager
def counting_method(cls: type, method: str) -> Iterator[list[Counter[str]]]:
    """Count the host reads of every call of ``cls.method``; yields a list with one Counter per call."""
    calls: list[Counter[str]] = []
    original = getattr(cls, method)
    with patched() as reads:
        def measured(self, *args, **kwargs):
            reads.counts.clear()
            reads.active = True
            try:
                return original(self, *args, **kwargs)
            finally:
                reads.active = False
                calls.append(Counter(reads.counts))

        setattr(cls, method, measured)
        try:
            yield calls
        finally:
            setattr(cls, method, original)
