"""Lightning wiring of stage 1: :class:`VQGANModule` (VQGAN + losses + two Adam optimizers).

Manual optimization (Lightning 2 has no ``optimizer_idx``): each batch runs the VQGAN once, steps the
autoencoder on :meth:`VQGANLoss.generator_loss`, then the discriminators on
:meth:`VQGANLoss.discriminator_loss` of the same, detached reconstruction. The release ran the
forward once per optimizer; one forward is faster and updates the codebook EMA and BatchNorm
statistics once per batch. ``global_step`` counts autoencoder steps only (:func:`_step_uncounted`).
Precision, gradient accumulation, DDP and the checkpoint's keys (:func:`remap_release_state_dict`):
docs/training.md.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Mapping
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors

from tats.distributed import broadcast, is_distributed
from tats.faults import DEFAULT_MAX_NONFINITE_STEPS, NonFiniteGuard, nonfinite_flag
from tats.precision import autocast_off
from tats.vqgan.config import VQGANConfig
from tats.vqgan.losses import VQGANLoss, select_frames
from tats.vqgan.model import VQGAN

AUTOENCODER_PREFIXES = ("encoder.", "decoder.", "pre_vq_conv.", "post_vq_conv.", "codebook.")
LOSS_PREFIXES = ("image_discriminator.", "video_discriminator.", "perceptual_model.")


def remap_release_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Release VQGAN keys -> :class:`VQGANModule` keys (``encoder.*`` -> ``vqgan.encoder.*``,
    ``image_discriminator.*`` -> ``loss.image_discriminator.*``, ...). Keys already in our layout are
    kept; any other key is dropped."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        if key.startswith(("vqgan.", "loss.")):
            out[key] = value
        elif key.startswith(AUTOENCODER_PREFIXES):
            out["vqgan." + key] = value
        elif key.startswith(LOSS_PREFIXES):
            out["loss." + key] = value
    return out


def _step_uncounted(optimizer: Any) -> None:
    """``optimizer.step()`` on a LightningOptimizer without advancing ``trainer.global_step``.

    Lightning 2's manual loop counts a global step in hooks it attaches to every LightningOptimizer
    (``_on_before_step`` / ``_on_after_step``); they are detached for this call only, so the step still
    goes through the strategy and precision plugin (AMP scaling) like any other.
    """
    before, after = getattr(optimizer, "_on_before_step", None), getattr(optimizer, "_on_after_step", None)
    if before is None or after is None:  # not a LightningOptimizer (e.g. a bare call in a test)
        optimizer.step()
        return
    optimizer._on_before_step = optimizer._on_after_step = lambda: None
    try:
        optimizer.step()
    finally:
        optimizer._on_before_step, optimizer._on_after_step = before, after


def _buffers(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every buffer (codebook statistics, BatchNorm running statistics)."""
    return {name: buf.detach().clone() for name, buf in module.named_buffers()}


@torch.no_grad()
def _restore_buffers(module: torch.nn.Module, saved: Mapping[str, torch.Tensor]) -> None:
    for name, buf in module.named_buffers():
        buf.copy_(saved[name])


def speed_up(vqgan: VQGAN, loss: VQGANLoss, activation_checkpointing: bool = False,
             channels_last: bool = False, compile: bool = False) -> None:
    """Training speed and memory options, in place (parameter names, hence checkpoints, unchanged).

    - ``activation_checkpointing``: the encoder's and decoder's layers keep only their inputs and run
      again in the backward pass (:func:`tats.vqgan.modules.run_checkpointed`); same results, less
      memory.
    - ``channels_last``: the autoencoder and both discriminators in the channels-last memory format
      (``channels_last_3d`` / ``channels_last``); convolutions pick other kernels (float rounding).
    - ``compile``: ``torch.compile`` of the encoder, decoder and both discriminators with static shapes
      (the codebook, with its data-dependent restarts and collectives, and LPIPS stay eager).
    """
    from tats.vqgan.modules import Decoder, Encoder

    for module in (vqgan.encoder, vqgan.decoder):
        if isinstance(module, (Encoder, Decoder)):
            module.activation_checkpointing = activation_checkpointing
    if channels_last:
        vqgan.to(memory_format=torch.channels_last_3d)
        vqgan.channels_last_3d = True
        loss.video_discriminator.to(memory_format=torch.channels_last_3d)
        loss.image_discriminator.to(memory_format=torch.channels_last)
    if compile:
        for module in (vqgan.encoder, vqgan.decoder, loss.image_discriminator, loss.video_discriminator):
            module.compile(dynamic=False)


class VQGANModule(pl.LightningModule):
    """Trains a :class:`~tats.vqgan.model.VQGAN` (``self.vqgan``) with :class:`VQGANLoss` (``self.loss``).

    ``config``: a :class:`VQGANConfig` or its dict (``config.lr`` is the learning rate actually used,
    i.e. already scaled by the training script). ``gradient_clip_val`` / ``accumulate_grad_batches``: the
    trainer flags, honoured here because Lightning 2 refuses them with manual optimization. Batches are
    ``dict(video=(B, C, T, H, W) in [-0.5, 0.5], ...)``.
    """

    def __init__(
        self,
        config: VQGANConfig | Mapping[str, Any],
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str = "norm",
        accumulate_grad_batches: int = 1,
        allow_random_lpips: bool = False,
        lpips_cache_dir: str | None = None,
        train_args: Mapping[str, Any] | None = None,
        max_nonfinite_steps: int = DEFAULT_MAX_NONFINITE_STEPS,
        activation_checkpointing: bool = False,
        channels_last: bool = False,
        compile: bool = False,
    ) -> None:
        super().__init__()
        cfg = config if isinstance(config, VQGANConfig) else VQGANConfig.from_dict(config)
        self.save_hyperparameters({
            "config": cfg.to_dict(),
            "gradient_clip_val": gradient_clip_val,
            "gradient_clip_algorithm": gradient_clip_algorithm,
            "accumulate_grad_batches": int(accumulate_grad_batches),
            "allow_random_lpips": bool(allow_random_lpips),
            "lpips_cache_dir": lpips_cache_dir,
            "train_args": dict(train_args) if train_args is not None else None,
            "max_nonfinite_steps": int(max_nonfinite_steps),
            "activation_checkpointing": bool(activation_checkpointing),
            "channels_last": bool(channels_last),
            "compile": bool(compile),
        })
        # one guard per loss: each counts its own run of non-finite steps (tats.faults)
        self.nonfinite_ae = NonFiniteGuard(max_nonfinite_steps)
        self.nonfinite_disc = NonFiniteGuard(max_nonfinite_steps)
        self.fp32_fallbacks = 0  # fp16 forwards that overflowed and were rerun in fp32
        self.automatic_optimization = False
        self.config = cfg
        self.vqgan = VQGAN(cfg, channels_last_3d=channels_last)
        self.loss = VQGANLoss(cfg, allow_random_lpips=allow_random_lpips, lpips_cache_dir=lpips_cache_dir)
        speed_up(self.vqgan, self.loss, activation_checkpointing, channels_last, compile)
        self._last_batch_time: float | None = None
        self._unsynced_norms: list[torch.nn.Module] | None = None  # see _share_norm_statistics

    # ------------------------------------------------------------------------------- optimizers
    def configure_optimizers(self):
        """Adam(lr, betas (0.5, 0.9)) for the autoencoder and one for both discriminators (release)."""
        lr = self.config.lr
        opt_ae = torch.optim.Adam(self.vqgan.parameters(), lr=lr, betas=(0.5, 0.9))
        disc_params = [*self.loss.image_discriminator.parameters(),
                       *self.loss.video_discriminator.parameters()]
        opt_disc = torch.optim.Adam(disc_params, lr=lr, betas=(0.5, 0.9))
        return [opt_ae, opt_disc]

    def on_before_optimizer_step(self, optimizer: Any) -> None:
        """Clip here, not before ``opt.step()``: Lightning calls this hook inside the step, AFTER the AMP
        plugin unscaled the gradients (``MixedPrecision.optimizer_step`` -> ``scaler.unscale_`` ->
        ``_after_closure``), in manual optimization too. Clipping before ``opt.step()`` would clip the
        still-scaled fp16 gradients and shrink every update by about the loss scale."""
        val = self.hparams.gradient_clip_val
        if val:
            self.clip_gradients(optimizer, gradient_clip_val=val,
                                gradient_clip_algorithm=self.hparams.gradient_clip_algorithm)

    # ---------------------------------------------------------------------------------- training
    def _backward(self, loss: torch.Tensor, optimizer_index: int, sync: bool) -> None:
        """``manual_backward(loss)`` with optimizer ``optimizer_index``'s fp16 loss scaler
        (:class:`tats.train.scalers.PerOptimizerGradScaler`), and without DDP's gradient all-reduce unless
        ``sync``: the micro-batches before the last of an accumulation window accumulate locally
        (``strategy.block_backward_sync()``), and the last one's all-reduce carries the window's sum."""
        # Only the per-optimizer scaler plugin has select(); Lightning's own precision plugins have none.
        # Asked by name, so this module needs nothing from the training set-up (tats.train imports it).
        select = getattr(self.trainer.precision_plugin, "select", None)
        if select is not None:
            select(optimizer_index)
        block = None if sync else getattr(self.trainer.strategy, "block_backward_sync", None)
        with block() if block is not None else contextlib.nullcontext():
            self.manual_backward(loss)

    @torch.no_grad()
    def _share_norm_statistics(self) -> None:
        """Copy rank 0's running statistics of the BatchNorm layers that are not SyncBatchNorm (CPU
        processes) to every rank, in one broadcast per dtype. The trainer runs DDP without its own
        per-step broadcast of every buffer: the codebook keeps its buffers identical by all-reduce
        (16,384 x 256 codes would cost 32 MiB a step), SyncBatchNorm on GPUs keeps its statistics
        identical, and only these need copying."""
        if not is_distributed():
            return
        if self._unsynced_norms is None:
            self._unsynced_norms = [m for m in self.modules()
                                    if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
                                    and not isinstance(m, torch.nn.SyncBatchNorm)]
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        for m in self._unsynced_norms:  # (the buffers themselves are read anew: a .to() replaces them)
            for buf in m.buffers():
                by_dtype.setdefault(buf.dtype, []).append(buf)
        for bufs in by_dtype.values():
            flat = broadcast(_flatten_dense_tensors(bufs), 0)
            for buf, new in zip(bufs, _unflatten_dense_tensors(flat, bufs)):
                buf.copy_(new)

    @staticmethod
    def _nonfinite(loss: torch.Tensor, guard: NonFiniteGuard) -> bool:
        """True when ``loss`` is non-finite on any rank (``guard``'s cross-rank decision): tested on the
        device, read back once."""
        return guard.any_fn(nonfinite_flag(loss), loss.device)

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> torch.Tensor | None:
        x = batch["video"]  # (B, C, T, H, W) in [-0.5, 0.5]
        self._share_norm_statistics()
        opt_ae, opt_disc = self.optimizers()
        acc = max(int(self.hparams.accumulate_grad_batches), 1)
        update = (batch_idx + 1) % acc == 0 or self.trainer.is_last_batch
        step = self.global_step  # autoencoder steps so far (the release's global_step)
        # fp16: the buffers this batch starts from (codebook, BatchNorm statistics of the VQGAN and the
        # discriminators), in case its forward overflows and must be rerun
        fp16 = self.trainer.precision == "16-mixed"
        start = _buffers(self) if fp16 else None

        out = self.vqgan(x)
        frame_idx = self.loss.random_frame_index(x)  # (B,) shared by both steps
        self.toggle_optimizer(opt_ae)  # discriminator params frozen: no grads from the GAN terms
        ae_loss, logs = self.loss.generator_loss(x, out["recon"], out["commitment_loss"], step, frame_idx)
        # the one host read of this loss: it serves the fp16 overflow test and the guard alike
        bad = self._nonfinite(ae_loss, self.nonfinite_ae)
        if bad and fp16:
            # fp16 overflowed in the forward; the loss scaler only scales the backward, so it cannot help.
            # Rerun the batch in fp32 from the buffers it started with: its statistics count once.
            _restore_buffers(self, start)
            with autocast_off(x.device.type):
                out = self.vqgan(x)
                ae_loss, logs = self.loss.generator_loss(x, out["recon"], out["commitment_loss"], step,
                                                         frame_idx)
            self.fp32_fallbacks += 1
            bad = self._nonfinite(ae_loss, self.nonfinite_ae)
        # A non-finite loss on any rank skips the batch everywhere (NonFiniteGuard decides over all ranks, so
        # DDP stays in step; too many in a row stop the run): no backward, no step, global_step does not
        # advance. The codebook already refused the batch's statistics; gradients accumulated in this
        # window are dropped too, so a bad batch never leaks into an update.
        if self.nonfinite_ae.record(bad, step, "autoencoder loss"):
            opt_ae.zero_grad(set_to_none=True)
            opt_disc.zero_grad(set_to_none=True)
            self.untoggle_optimizer(opt_ae)
            self.log("train/nonfinite_steps", float(self.nonfinite_ae.total), on_step=True, on_epoch=False,
                     batch_size=x.shape[0])
            return None
        self._backward(ae_loss / acc, 0, sync=update)
        if update:
            opt_ae.step()  # gradient clipping: on_before_optimizer_step (after AMP unscaling)
            opt_ae.zero_grad(set_to_none=True)
        self.untoggle_optimizer(opt_ae)

        if self.loss.discriminators_active(step):
            self.toggle_optimizer(opt_disc)
            d_start = _buffers(self.loss) if fp16 else None
            d_loss, d_logs = self.loss.discriminator_loss(x, out["recon"], step, frame_idx)
            d_bad = self._nonfinite(d_loss, self.nonfinite_disc)
            if d_bad and fp16:
                _restore_buffers(self.loss, d_start)
                with autocast_off(x.device.type):
                    d_loss, d_logs = self.loss.discriminator_loss(x, out["recon"].float(), step, frame_idx)
                self.fp32_fallbacks += 1
                d_bad = self._nonfinite(d_loss, self.nonfinite_disc)
            d_bad = self.nonfinite_disc.record(d_bad, step, "discriminator loss")
            if d_bad:
                opt_disc.zero_grad(set_to_none=True)  # drop this window's discriminator gradients
            else:
                self._backward(d_loss / acc, 1, sync=update)
            if update and not d_bad:  # (an fp16 GradScaler refuses a step without any gradient)
                _step_uncounted(opt_disc)
                opt_disc.zero_grad(set_to_none=True)
            self.untoggle_optimizer(opt_disc)
            logs.update(d_logs)

        logs.update(perplexity=out["perplexity"], usage=out["usage"])
        if "entropy_loss" in out:
            logs["entropy_loss"] = out["entropy_loss"]
        if fp16:
            logs["fp32_fallbacks"] = torch.tensor(float(self.fp32_fallbacks))
        now = time.perf_counter()
        if self._last_batch_time is not None:
            logs["videos_per_sec"] = torch.tensor(x.shape[0] / max(now - self._last_batch_time, 1e-9))
        self._last_batch_time = now
        self.log_dict({f"train/{k}": v.float() for k, v in logs.items()}, on_step=True, on_epoch=False,
                      batch_size=x.shape[0])
        self.log("train/recon_loss_bar", logs["recon_loss"].float(), prog_bar=True, logger=False,
                 batch_size=x.shape[0])
        return ae_loss.detach()

    def on_train_epoch_start(self) -> None:
        self._last_batch_time = None

    # -------------------------------------------------------------------------------- validation
    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        x = batch["video"]
        out = self.vqgan(x)
        l1 = F.l1_loss(out["recon"], x)
        frame_idx = self.loss.random_frame_index(x)
        perceptual = self.loss.perceptual_loss(select_frames(x, frame_idx),
                                               select_frames(out["recon"], frame_idx))
        logs = dict(recon_loss=l1 * self.config.l1_weight, l1=l1, perceptual_loss=perceptual,
                    commitment_loss=out["commitment_loss"], perplexity=out["perplexity"], usage=out["usage"])
        if "entropy_loss" in out:
            logs["entropy_loss"] = out["entropy_loss"]
        self.log_dict({f"val/{k}": v.float() for k, v in logs.items()}, on_step=False, on_epoch=True,
                      sync_dist=True, batch_size=x.shape[0], prog_bar=False)

    @torch.no_grad()
    def log_videos(self, batch: Mapping[str, Any], max_videos: int = 4) -> dict[str, torch.Tensor]:
        """``{"inputs", "reconstructions"}``: ``(b, C, T, H, W)`` in [-0.5, 0.5] for the first ``max_videos``
        clips of ``batch``, reconstructed in eval mode (no codebook update, BatchNorm running stats)."""
        was_training = self.vqgan.training
        self.vqgan.eval()
        try:
            x = batch["video"][:max_videos]
            recon = self.vqgan(x)["recon"].clamp(-0.5, 0.5)
        finally:
            self.vqgan.train(was_training)
        return {"inputs": x.detach(), "reconstructions": recon.detach()}

    # ------------------------------------------------------------------------------- checkpoints
    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        """Accept the release's key layout too (``encoder.*`` -> ``vqgan.encoder.*``, ...)."""
        sd = checkpoint.get("state_dict", {})
        if any(k.startswith(AUTOENCODER_PREFIXES + LOSS_PREFIXES) for k in sd):
            checkpoint["state_dict"] = self._fit_state_dict(remap_release_state_dict(sd))

    def _fit_state_dict(self, sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        # LPIPS weights are only wanted when this run uses a perceptual loss
        own = self.state_dict().keys()
        return {k: v for k, v in sd.items() if k in own or not k.startswith("loss.perceptual_model.")}

    def load_weights(self, path_or_ckpt: str | Mapping[str, Any]) -> list[str]:
        """Initialise from a VQGAN checkpoint (the release's or ours) for fine-tuning: weights only, no
        optimizer or step. The codebook counts as initialised (release files lack our flag; see
        :class:`~tats.vqgan.codebook.Codebook`). Returns the module keys the file did not provide."""
        from tats.io.checkpoint import expect_kind, load_checkpoint
        from tats.io.registry import resolve_checkpoint

        path_or_ckpt = resolve_checkpoint(path_or_ckpt, "vqgan")  # a published name (ucf101, ...)
        ckpt = load_checkpoint(path_or_ckpt) if not isinstance(path_or_ckpt, Mapping) else path_or_ckpt
        expect_kind(ckpt, "vqgan", path_or_ckpt if not isinstance(path_or_ckpt, Mapping) else "checkpoint")
        sd = self._fit_state_dict(remap_release_state_dict(ckpt["state_dict"]))
        try:
            result = self.load_state_dict(sd, strict=False)
        except RuntimeError as err:
            raise ValueError(f"--init_ckpt {path_or_ckpt}: weights do not fit this config: {err}") from None
        if result.unexpected_keys:
            raise ValueError(f"--init_ckpt {path_or_ckpt}: unexpected keys {result.unexpected_keys[:5]}")
        return list(result.missing_keys)


@torch.no_grad()
def save_reconstructions(
    vqgan: VQGAN, video: torch.Tensor, path_png: str, max_videos: int = 4
) -> dict[str, float]:
    """Write a contact sheet with each input clip above its reconstruction and return the numbers.

    ``video (B, C, T, H, W)`` in [-0.5, 0.5]; the model runs in eval mode (no codebook update). Returns
    ``l1`` (mean absolute error in [-0.5, 0.5] units), ``perplexity`` and ``usage`` of this batch.
    """
    from einops import rearrange

    from tats.io.video import save_contact_sheet

    was_training = vqgan.training
    vqgan.eval()
    try:
        x = video[:max_videos]
        out = vqgan(x)
    finally:
        vqgan.train(was_training)
    recon = out["recon"].clamp(-0.5, 0.5)
    pairs = rearrange(torch.stack([x, recon], dim=1), "b two c t h w -> (b two) c t h w")  # input, recon, ...
    save_contact_sheet(pairs.float().cpu(), path_png, max_videos=2 * max_videos)
    return dict(l1=float((recon - x).abs().mean()), perplexity=float(out["perplexity"]),
                usage=float(out["usage"]))
