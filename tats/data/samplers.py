"""``--balanced_sampler``: class-balanced draws for data whose items carry several classes each.

The release names a ``BalancedRandomSampler`` over the MUGEN v2 dataset's ``classes_for_sampling`` (a
multi-hot ``(N, C)`` table of the characters and game events in each clip) and its dataset takes
``(item, class)`` pairs, but the sampler itself is not part of the release. Ours draws as its name and
help text say ("upsample minority classes"): each draw picks a class uniformly among the classes
that occur, then an item uniformly among the items that have it, and yields ``(item, class)`` so the
dataset can place the clip where that class is on screen. An epoch has ``N`` draws; items with no
class are never drawn.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch.utils.data import Sampler


class BalancedClassSampler(Sampler[tuple[int, int]]):
    """Uniform over classes, then uniform over the items of the drawn class.

    Args:
        classes: multi-hot ``(N, C)`` (tensor or nested lists); row ``i`` marks item ``i``'s classes.
        num_samples: draws per epoch (default ``N``).
        generator: optional ``torch.Generator`` (default: torch's global RNG, seeded by the trainer).
    """

    def __init__(self, classes, num_samples: int | None = None,
                 generator: torch.Generator | None = None) -> None:
        table = torch.as_tensor(classes)
        if table.ndim != 2 or len(table) == 0:
            raise ValueError("--balanced_sampler: expected a (items, classes) table, got shape "
                             f"{tuple(table.shape)}")
        self.members = [torch.nonzero(table[:, c], as_tuple=True)[0] for c in range(table.shape[1])]
        self.present = [c for c, m in enumerate(self.members) if len(m)]
        if not self.present:
            raise ValueError("--balanced_sampler: no item has any class")
        self.num_samples = len(table) if num_samples is None else int(num_samples)
        self.generator = generator

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[tuple[int, int]]:
        g = self.generator
        picks = torch.randint(len(self.present), (self.num_samples,), generator=g).tolist()
        for p in picks:
            cls = self.present[p]
            items = self.members[cls]
            yield int(items[torch.randint(len(items), (1,), generator=g)].item()), cls
