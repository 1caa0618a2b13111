"""Stage-2 training of the masked-token transformer (``train_transformer.py --objective masked``).

The GPT's LightningModule with another model and loss: the same batches, codes, condition ids (and
condition dropout for guidance), optimizer and logging; the sequence goes in whole with a share of its
codes replaced by the ``[MASK]`` id (:func:`tats.gpt.masked.training_mask`), and the loss is the
cross-entropy of the masked codes only (MaskGIT). Checkpoints are the GPT's layout plus
``hyper_parameters["objective"] = "masked"``, which :func:`tats.gpt.load.load_transformer` reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from tats.gpt.config import GPTConfig
from tats.gpt.lightning import TransformerModule
from tats.gpt.masked import OBJECTIVE, MaskedConfig, MaskedTransformer, training_mask

__all__ = ["MaskedTransformerModule"]


class MaskedTransformerModule(TransformerModule):
    """``self.transformer`` is a :class:`MaskedTransformer`; arguments as :class:`TransformerModule`'s,
    plus ``frame_cond_prob``: the share of training clips whose first latent frames are given whole
    (see :func:`training_mask`). ``vtokens_pos_grid`` (cropped token windows) is not supported."""

    def __init__(self, config: GPTConfig | Mapping[str, Any], *args: Any, frame_cond_prob: float = 0.5,
                 objective: str = OBJECTIVE, **kwargs: Any) -> None:
        if objective != OBJECTIVE:  # a saved hyper-parameter: load_from_checkpoint passes it back
            raise ValueError(f"MaskedTransformerModule trains the {OBJECTIVE!r} objective, got {objective!r}")
        config = MaskedConfig.from_dict(config.to_dict() if isinstance(config, GPTConfig) else config)
        if kwargs.get("vtokens_pos_grid"):
            raise ValueError("the masked model reads whole clips: --vtokens_pos crops are not supported")
        if not 0 <= frame_cond_prob <= 1:
            raise ValueError(f"frame_cond_prob must lie in [0, 1], got {frame_cond_prob}")
        super().__init__(config, *args, **kwargs)
        self.config = config
        self.hparams["objective"] = OBJECTIVE
        self.hparams["frame_cond_prob"] = frame_cond_prob

    def build_transformer(self, config: GPTConfig) -> nn.Module:
        return MaskedTransformer(MaskedConfig.from_dict(config.to_dict()))

    def loss(self, batch: Mapping[str, Any],
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
        """Cross-entropy (nats per masked code) and the number of masked codes scored."""
        idx = self.sequence(batch)  # (B, n_cond + L)
        n_cond = self.config.n_cond_tokens
        masked = training_mask(idx.shape[0], self.config.latent_shape, self.hparams["frame_cond_prob"],
                               generator, idx.device)  # (B, L)
        target = idx[:, n_cond:] - self.config.n_cond_vocab  # (B, L) codes
        inputs = idx.clone()
        inputs[:, n_cond:] = idx[:, n_cond:].masked_fill(masked, self.config.mask_id)
        logits = self.transformer(inputs)  # (B, L, n_codes)
        loss = F.cross_entropy(logits[masked].float(), target[masked])
        return loss, int(masked.sum())

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        # The same masks at every validation (seeded by the batch), so validation losses compare.
        generator = torch.Generator(device=self.device).manual_seed(batch_idx)
        loss, n_tokens = self.loss(batch, generator)
        self.log("val/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=n_tokens)
        return loss
