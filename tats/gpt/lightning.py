"""Stage-2 training: the GPT over a frozen VQGAN's codes, as a thin LightningModule.

The release's objective: a sequence is the condition ids followed by the video codes (see
:mod:`tats.gpt.conditioning`), scored with cross-entropy from the last condition position on; AdamW
on the release's settings. The checkpoint holds the GPT, the frozen VQGAN(s) and their configs as
plain dicts, so :func:`tats.gpt.load.load_transformer` rebuilds everything without flags. The details
(sequence, optimizer, checkpoint keys): docs/training.md.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from tats.faults import DEFAULT_MAX_NONFINITE_STEPS, NonFiniteGuard
from tats.gpt.conditioning import check_labels, codes_to_ids, cond_tokens, drop_condition
from tats.gpt.config import GPTConfig
from tats.gpt.crop_positions import CropPositions
from tats.gpt.model import GPT
from tats.precision import autocast_off
from tats.vqgan.config import VQGANConfig
from tats.vqgan.model import VQGAN

BASE_LR = 4.5e-6  # the release's default --base_lr; lr = accumulate * gpus * batch * base_lr


def subsample_latent_frames(codes: torch.Tensor, every: int) -> torch.Tensor:
    """Keep every ``every``-th latent frame of ``codes (B, t, h, w)`` (``every <= 0``: all frames).
    The hierarchical AR transformer trains on this sparse frame grid (as in the release)."""
    return codes[:, ::every] if every > 0 else codes


def optimizer_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW parameter groups: weights of ``nn.Linear`` layers decay; biases, LayerNorm,
    embeddings and ``pos_emb`` do not (the release, "Transformer"). Frozen parameters are left out."""
    decay: set[str] = set()
    for mname, module in model.named_modules():
        if isinstance(module, nn.Linear):
            decay.add(f"{mname}.weight" if mname else "weight")
    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    return [
        {"params": [p for n, p in params.items() if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in params.items() if n not in decay], "weight_decay": 0.0},
    ]


def enable_activation_checkpointing(gpt: GPT) -> None:
    """Recompute each block's activations in the backward pass instead of storing them.

    Patches the blocks' ``forward`` in place (parameter names, hence checkpoints, are unchanged);
    only training forwards without a KV cache are checkpointed.
    """
    for block in gpt.blocks:
        plain = block.forward

        def forward(x, input_pos=None, kv_len=None, last_only=False, _plain=plain):
            if torch.is_grad_enabled() and input_pos is None:
                return checkpoint(_plain, x, None, None, use_reentrant=False)
            return _plain(x, input_pos, kv_len, last_only=last_only)

        block.forward = forward


def _frozen(model: VQGAN) -> VQGAN:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def _encode_fp32(vqgan: VQGAN, x: torch.Tensor) -> torch.Tensor:
    """``vqgan.encode`` outside autocast: under ``--precision bf16-mixed`` the codes stay exactly the
    fp32 ones (the same as ``scripts/extract_codes.py`` writes)."""
    with autocast_off(x.device.type):
        return vqgan.encode(x.to(next(vqgan.parameters()).dtype))


class TransformerModule(pl.LightningModule):
    """``self.transformer`` (GPT, trained) over ``self.vqgan`` (frozen, eval mode, never optimised).

    Args:
        config: GPTConfig or its dict (``cond_type``, ``n_cond_vocab``, ``n_cond_tokens``,
            ``latent_shape`` describe the token layout).
        vqgan_config: the video VQGAN's config (dict or VQGANConfig); weights come from a
            checkpoint (``from_vqgan``/``load_from_checkpoint``). None: batches carry precomputed
            ``codes`` (the release's ``--vtokens`` without ``--vqvae``) and no VQGAN is stored.
        cond_vqgan_config: the audio (STFT) VQGAN's config for ``cond_type="audio"``, else None.
        learning_rate: the already scaled lr (``tats.train.lr.scale_transformer_lr``); None = ``base_lr``.
        weight_decay: AdamW decay of Linear weights.
        activation_checkpointing: recompute block activations in backward (less memory).
        compile: ``torch.compile`` the GPT in place (same parameter names).
        truncate_captions: cut captions longer than ``n_cond_tokens`` BPE ids (False: an error).
        vtokens_pos_grid: ``(t, h, w)`` full token grid for the release's ``--vtokens_pos`` position
            embedding of cropped clips (:mod:`tats.gpt.crop_positions`); batches then carry ``cbox``.
        cond_drop: share of training clips whose condition is replaced by the null one (classifier-free
            guidance; needs ``config.null_cond``). 0: the release's training.

    Batches: ``dict(video=(B, C, T, H, W) in [-0.5, 0.5])`` or precomputed ``dict(codes=(B, t, h, w))``,
    plus ``label (B,)``, ``text`` (B captions) or ``stft (B, 1, T, 64, 16)`` per the conditioning.
    """

    def __init__(
        self,
        config: GPTConfig | Mapping[str, Any],
        vqgan_config: VQGANConfig | Mapping[str, Any] | None,
        cond_vqgan_config: VQGANConfig | Mapping[str, Any] | None = None,
        learning_rate: float | None = None,
        base_lr: float = BASE_LR,
        weight_decay: float = 0.01,
        activation_checkpointing: bool = False,
        compile: bool = False,
        cond_stage_key: str | None = None,
        max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS,
        truncate_captions: bool = True,
        vtokens_pos_grid: tuple[int, int, int] | list[int] | None = None,
        cond_drop: float = 0.0,
    ) -> None:
        super().__init__()
        gpt_config = config if isinstance(config, GPTConfig) else GPTConfig.from_dict(config)
        vq_config = (
            vqgan_config if vqgan_config is None or isinstance(vqgan_config, VQGANConfig)
            else VQGANConfig.from_dict(vqgan_config)
        )
        stft_config = (
            cond_vqgan_config
            if cond_vqgan_config is None or isinstance(cond_vqgan_config, VQGANConfig)
            else VQGANConfig.from_dict(cond_vqgan_config)
        )
        if cond_drop > 0 and not gpt_config.null_cond:
            raise ValueError("cond_drop > 0 needs a null condition in the vocabulary (config.null_cond)")
        if gpt_config.cond_type == "audio" and stft_config is None:
            raise ValueError("audio conditioning needs the STFT VQGAN (--stft_vqvae)")
        # Plain dicts only: loading needs no flags and no pickled classes.
        self.save_hyperparameters(
            {
                "config": gpt_config.to_dict(),
                "vqgan_config": vq_config.to_dict() if vq_config is not None else None,
                "cond_vqgan_config": stft_config.to_dict() if stft_config is not None else None,
                "cond_stage_key": cond_stage_key or gpt_config.cond_type,
                "learning_rate": learning_rate if learning_rate is not None else base_lr,
                "base_lr": base_lr,
                "weight_decay": weight_decay,
                "activation_checkpointing": activation_checkpointing,
                "compile": compile,
                "max_nonfinite_steps": max_nonfinite_steps,
                "truncate_captions": truncate_captions,
                "vtokens_pos_grid": list(vtokens_pos_grid) if vtokens_pos_grid else None,
                "cond_drop": cond_drop,
            }
        )
        self.nonfinite = NonFiniteGuard(max_nonfinite_steps)
        self.config = gpt_config
        self.transformer = self.build_transformer(gpt_config)
        self.crop_positions = CropPositions(self.transformer, vtokens_pos_grid) if vtokens_pos_grid else None
        self.vqgan = _frozen(VQGAN(vq_config)) if vq_config is not None else None
        self.cond_stage_model = _frozen(VQGAN(stft_config)) if stft_config is not None else None
        if activation_checkpointing:
            enable_activation_checkpointing(self.transformer)
        if compile:
            self.transformer.compile()  # in place: the state-dict keys stay "transformer.*"
        self._step_start: float | None = None
        # a non-finite micro-batch drops its whole accumulation window on every rank (training_step)
        self._drop_window = False

    def build_transformer(self, config: GPTConfig) -> nn.Module:
        """The trained model: the GPT (a subclass builds another, e.g. the masked model)."""
        return GPT(config)

    @classmethod
    def from_vqgan(
        cls, config: GPTConfig, vqgan: VQGAN, cond_vqgan: VQGAN | None = None, **kwargs: Any
    ) -> TransformerModule:
        """A fresh GPT over already trained VQGAN(s): their weights are copied in and frozen."""
        module = cls(config, vqgan.config if vqgan is not None else None,
                     cond_vqgan.config if cond_vqgan is not None else None, **kwargs)
        if vqgan is not None:
            module.vqgan.load_state_dict(vqgan.state_dict())
        if cond_vqgan is not None:
            module.cond_stage_model.load_state_dict(cond_vqgan.state_dict())
        return module

    def train(self, mode: bool = True) -> TransformerModule:
        """Lightning switches modules to train mode each epoch; the VQGANs must stay in eval
        (batch-norm statistics and codebook EMA are frozen)."""
        super().train(mode)
        if self.vqgan is not None:
            self.vqgan.eval()
        if self.cond_stage_model is not None:
            self.cond_stage_model.eval()
        return self

    # ------------------------------------------------------------------ tokens
    @torch.no_grad()
    def video_codes(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """The clip's codes ``(B, t, h, w)`` as the transformer sees them: precomputed
        ``batch["codes"]`` or the frozen VQGAN's encoding of ``batch["video"]``, then every
        ``sample_every_n_latent_frames``-th latent frame."""
        if "codes" in batch:
            codes = batch["codes"].long()
        elif "video" in batch and self.vqgan is None:
            raise ValueError("this transformer has no VQGAN (trained on precomputed codes): batches need "
                             "'codes'")
        elif "video" in batch:
            codes = _encode_fp32(self.vqgan, batch["video"])
        else:
            raise KeyError(
                "a transformer batch needs 'video' (B, C, T, H, W) or precomputed 'codes' (B, t, h, w)"
            )
        codes = subsample_latent_frames(codes, self.config.sample_every_n_latent_frames)
        if tuple(codes.shape[1:]) != tuple(self.config.latent_shape):
            raise ValueError(
                f"the clip's code grid {tuple(codes.shape[1:])} differs from the transformer's latent_shape "
                f"{tuple(self.config.latent_shape)} (check --sequence_length / --resolution / "
                "--sample_every_n_latent_frames against the VQGAN and the data)"
            )
        return codes

    @torch.no_grad()
    def condition(self, batch: Mapping[str, Any], batch_size: int) -> torch.Tensor:
        """Condition ids ``(B, n_cond_tokens)`` from the batch per ``config.cond_type``."""
        kind = self.config.cond_type
        if kind == "none":
            cond = None
        elif kind == "label":
            cond = batch["label"]
        elif kind == "text":
            if "text" not in batch:
                raise KeyError("text conditioning needs captions: the batch has no 'text' (does the dataset "
                               "have captions?)")
            text = batch["text"]
            cond = text if torch.is_tensor(text) else list(text)  # token ids (B, n) or captions
        else:
            if "stft" not in batch:
                raise KeyError("audio conditioning needs 'stft' (B, 1, T, 64, 16) in the batch (--stft_data)")
            stft = batch["stft"].to(self.device)  # (B, 1, T, F, W)
            cond = _encode_fp32(self.cond_stage_model, stft).flatten(1)  # (B, n_cond_tokens)
        return cond_tokens(self.config, cond, batch_size, device=self.device,
                           truncate=self.hparams.get("truncate_captions", True),
                           check_range=not self.training)  # labels: see on_before_batch_transfer

    def sequence(self, batch: Mapping[str, Any]) -> torch.Tensor:
        """Full token sequence ``(B, n_cond_tokens + t*h*w)``: condition ids, then shifted codes."""
        codes = self.video_codes(batch)
        cond = self.condition(batch, codes.shape[0])
        if self.training:  # classifier-free guidance: some clips are seen without their condition
            cond = drop_condition(self.config, cond, self.hparams.get("cond_drop", 0.0))
        return torch.cat([cond, codes_to_ids(self.config, codes)], dim=1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, T, vocab)`` of the GPT for token ids ``(B, T)``."""
        return self.transformer(idx)

    def loss(self, batch: Mapping[str, Any]) -> tuple[torch.Tensor, int]:
        """Cross-entropy (nats per video token) and the number of tokens scored."""
        idx = self.sequence(batch)  # (B, n_cond + L)
        n_cond = self.config.n_cond_tokens
        if self.crop_positions is not None:
            if "cbox" not in batch:
                raise KeyError("--vtokens_pos needs the crop box of every clip: the batch has no 'cbox'")
            with self.crop_positions.boxes_for(batch["cbox"]):
                logits = self.transformer(idx[:, :-1])  # (B, L, V)
        else:
            logits = self.transformer(idx[:, :-1])  # (B, n_cond + L - 1, V)
        logits = logits[:, n_cond - 1 :]  # (B, L, V): predictions of the L video tokens
        target = idx[:, n_cond:]  # (B, L)
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), target.reshape(-1))
        return loss, target.numel()

    # ------------------------------------------------------------------ Lightning hooks
    def on_before_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        """Class ids are checked here, on the host, before the batch moves to the device: the same
        check on the device would cost a sync every step."""
        if self.config.cond_type == "label" and isinstance(batch, Mapping) and "label" in batch:
            check_labels(torch.as_tensor(batch["label"]), self.config.n_cond_vocab)
        return batch

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        self._step_start = time.perf_counter()

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        if batch_idx % self.trainer.accumulate_grad_batches == 0:
            self._drop_window = False  # a new accumulation window
        if self._drop_window:
            return self._zero_loss()  # the rest of a window that had a non-finite micro-batch (below)
        loss, n_tokens = self.loss(batch)
        self._n_tokens = n_tokens
        if self.nonfinite.check(loss, self.global_step):
            # The guard decided over all ranks, so every rank drops this whole accumulation window: its
            # micro-batches from here on back-propagate a zero loss, and on_after_backward takes away
            # the gradients of the earlier ones before the optimizer sees them. Those ran under DDP's
            # no_sync: stepping on them would update each replica with its own local gradients. (Lightning
            # refuses a None return under DDP.)
            self._drop_window = True
            self.log("train/nonfinite_steps", float(self.nonfinite.total), on_step=True, on_epoch=False)
            return self._zero_loss()
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=n_tokens)
        return loss

    def _zero_loss(self) -> torch.Tensor:
        """0, reaching every trainable parameter (DDP expects a gradient for each), with zero gradients."""
        return sum(p.sum() * 0.0 for p in self.parameters() if p.requires_grad)

    def on_after_backward(self) -> None:
        if not self._drop_window:
            return
        if getattr(self.trainer.precision_plugin, "scaler", None) is not None:
            # fp16: infinite gradients make the loss scaler skip the step (and lower the scale)
            for p in self.parameters():
                if p.grad is not None:
                    p.grad.fill_(float("inf"))
        else:
            for p in self.parameters():
                p.grad = None  # the optimizer skips parameters without a gradient: no update at all

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self._step_start is not None:
            dt = max(time.perf_counter() - self._step_start, 1e-9)
            # tokens/s of this process's micro-batch (forward + backward + optimizer step)
            self.log("train/tokens_per_sec", self._n_tokens / dt, on_step=True, on_epoch=False)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor:
        loss, n_tokens = self.loss(batch)
        self.log("val/loss", loss, prog_bar=True, on_step=False, on_epoch=True, sync_dist=True,
                 batch_size=n_tokens)
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        groups = optimizer_groups(self.transformer, self.hparams["weight_decay"])
        return torch.optim.AdamW(groups, lr=self.hparams["learning_rate"], betas=(0.9, 0.95))
