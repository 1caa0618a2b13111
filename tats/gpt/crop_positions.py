"""The release's ``--vtokens_pos``: absolute positions of cropped token windows.

With ``--vtokens`` the release trains on random ``--spatial_length`` squares cropped from each clip's
token grid; ``--vtokens_pos`` adds a learned embedding per cell of the full grid,
``vtokens_pos_emb (1, seq, res, res, E)`` (zeros at start, the release's name), so the model knows
where its crop lies: the crop's cells, flattened in (t, h, w) order, are added to the inputs at
positions ``0 .. L - 1`` on top of ``pos_emb`` (input ``i`` carries the place of the token it
predicts). A forward hook on ``tok_emb`` adds them, with the batch's boxes ``(B, 4) = [y0, y1, x0, x1]``
set around the call (:meth:`CropPositions.boxes_for`), so the GPT's forward is left as it is.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
import torch.nn as nn

from tats.gpt.model import GPT

#: State-dict name of the embedding (the release's).
PARAM = "vtokens_pos_emb"


class CropPositions:
    """Adds the crop's grid embedding to ``gpt``'s token embeddings (see the module docstring).

    Args:
        gpt: the model; it gets the parameter :data:`PARAM` of shape ``(1, t, h, w, n_embd)``.
        grid: ``(t, h, w)``, the full token grid of a clip (latent frames, rows, columns).
    """

    def __init__(self, gpt: GPT, grid: Sequence[int]) -> None:
        self.grid = tuple(int(g) for g in grid)
        if len(self.grid) != 3:
            raise ValueError(f"vtokens_pos grid must be (t, h, w), got {grid}")
        gpt.register_parameter(PARAM, nn.Parameter(torch.zeros(1, *self.grid, gpt.config.n_embd)))
        self.gpt = gpt
        self.boxes: torch.Tensor | None = None
        gpt.tok_emb.register_forward_hook(self._add)

    def embeddings(self, boxes: torch.Tensor) -> torch.Tensor:
        """``(B, t * (y1 - y0) * (x1 - x0), E)``: each box's cells of the grid, flattened (t, h, w)."""
        table = getattr(self.gpt, PARAM)[0]  # (t, h, w, E)
        rows = [table[:, y0:y1, x0:x1].reshape(-1, table.shape[-1]) for y0, y1, x0, x1 in boxes.tolist()]
        return torch.stack(rows)

    def _add(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        if self.boxes is None:
            raise RuntimeError("this transformer was trained with --vtokens_pos: every forward needs the "
                               "crop boxes of its clips ([y0, y1, x0, x1] in the token grid)")
        pos = self.embeddings(self.boxes)  # (B, L, E)
        if pos.shape[:2] != output.shape[:2]:
            raise ValueError(f"--vtokens_pos: the crops cover {pos.shape[1]} grid cells but the input has "
                             f"{output.shape[1]} tokens (it needs one condition token and every latent "
                             "frame)")
        return output + pos.to(output.dtype)

    @contextmanager
    def boxes_for(self, boxes: torch.Tensor) -> Iterator[None]:
        """Use ``boxes (B, 4)`` for the forward passes inside the ``with`` block."""
        self.boxes = torch.as_tensor(boxes).reshape(-1, 4)
        try:
            yield
        finally:
            self.boxes = None
