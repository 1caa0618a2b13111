"""Training losses of the VQGAN: L1 + LPIPS + image/video GAN + feature matching + commitment.

The formula is the release's "Losses" (docs/training.md writes it out): the generator step's terms and
the discriminator step's hinge or vanilla loss, each GAN term present only when its weight is positive
and switched on at ``discriminator_iter_start``. Every term is reduced in float32 whatever the autocast,
and networks whose terms are multiplied by zero are not run (the release ran them and multiplied by 0).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tats.vqgan.config import VQGANConfig


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(relu(1 - real)) + mean(relu(1 + fake)))`` (scalar)."""
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def vanilla_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """``0.5 * (mean(softplus(-real)) + mean(softplus(fake)))`` (scalar): the non-saturating GAN loss."""
    return 0.5 * (F.softplus(-logits_real).mean() + F.softplus(logits_fake).mean())


D_LOSSES = {"hinge": hinge_d_loss, "vanilla": vanilla_d_loss}


def disc_factor(global_step: int, discriminator_iter_start: int) -> float:
    """The release's ``adopt_weight``: 0 before ``discriminator_iter_start``, 1 from it on."""
    return 1.0 if global_step >= discriminator_iter_start else 0.0


def select_frames(video: torch.Tensor, frame_idx: torch.Tensor) -> torch.Tensor:
    """One frame per clip: ``video (B, C, T, H, W)``, ``frame_idx LongTensor (B,)`` -> ``(B, C, H, W)``."""
    batch = torch.arange(video.shape[0], device=video.device)
    return video[batch, :, frame_idx]  # advanced indices on dims 0 and 2 -> (B, C, H, W)


def feature_matching_loss(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Sum over discriminator blocks but the last (the logits) of ``L1(fake_i, real_i.detach())``.

    The release weights each block by ``4 / (3 + 1) = 1`` (pix2pixHD's ``4 / (n_layers + 1)`` with the
    layer count fixed at 3), so every block counts once whatever ``disc_layers`` is.
    """
    total = fake[0].new_zeros((), dtype=torch.float32)
    for f, r in zip(fake[:-1], real[:-1]):
        total = total + F.l1_loss(f.float(), r.detach().float())  # float32 reduction under autocast
    return total


class VQGANLoss(nn.Module):
    """Holds ``image_discriminator`` (2D, on frames), ``video_discriminator`` (3D, on clips) and
    ``perceptual_model`` (LPIPS, or None when ``perceptual_weight == 0``); child names match the release's
    state-dict keys (under ``loss.`` in :class:`~tats.vqgan.lightning.VQGANModule`).

    Modules not passed in are built from ``config``: discriminators from
    :mod:`tats.vqgan.discriminators` (``disc_channels``, ``disc_layers``, BatchNorm), LPIPS with
    :meth:`tats.metrics.lpips.LPIPS.pretrained` (``allow_random_lpips`` lets it fall back to random VGG
    features with a loud warning instead of failing when the weights are not fetched).
    """

    def __init__(
        self,
        config: VQGANConfig,
        perceptual_model: nn.Module | None = None,
        image_discriminator: nn.Module | None = None,
        video_discriminator: nn.Module | None = None,
        allow_random_lpips: bool = False,
        lpips_cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        if image_discriminator is None or video_discriminator is None:
            from tats.vqgan.discriminators import NLayerDiscriminator2D, NLayerDiscriminator3D

            # BatchNorm whatever --norm_type says: the release's discriminators always use it (their
            # state dicts hold running statistics)
            args = (config.image_channels, config.disc_channels, config.disc_layers, "batch")
            image_discriminator = image_discriminator or NLayerDiscriminator2D(*args)
            video_discriminator = video_discriminator or NLayerDiscriminator3D(*args)
        self.image_discriminator = image_discriminator
        self.video_discriminator = video_discriminator
        if perceptual_model is None and config.perceptual_weight > 0:
            from tats.metrics.lpips import LPIPS

            perceptual_model = LPIPS.pretrained(cache_dir=lpips_cache_dir, allow_random=allow_random_lpips)
        self.perceptual_model = perceptual_model if config.perceptual_weight > 0 else None
        if self.perceptual_model is not None:
            self.perceptual_model.requires_grad_(False)
        self.d_loss_fn = D_LOSSES[config.disc_loss_type]

    def train(self, mode: bool = True) -> VQGANLoss:
        # LPIPS stays in eval mode (its heads' Dropout off) so the perceptual loss is deterministic. The
        # release let Lightning switch it to train mode with the rest of the model; we do not keep that.
        super().train(mode)
        if self.perceptual_model is not None:
            self.perceptual_model.eval()
        return self

    # ------------------------------------------------------------------------------------ activity
    def use_image_discriminator(self, global_step: int) -> bool:
        """Whether the 2D discriminator's terms are non-zero at ``global_step``."""
        cfg = self.config
        return disc_factor(global_step, cfg.discriminator_iter_start) > 0 and cfg.image_gan_weight > 0

    def use_video_discriminator(self, global_step: int) -> bool:
        """Whether the 3D discriminator's terms are non-zero at ``global_step``."""
        cfg = self.config
        return disc_factor(global_step, cfg.discriminator_iter_start) > 0 and cfg.video_gan_weight > 0

    def discriminators_active(self, global_step: int) -> bool:
        """Whether a discriminator step is due at ``global_step`` (else it is skipped entirely)."""
        return self.use_image_discriminator(global_step) or self.use_video_discriminator(global_step)

    def random_frame_index(self, video: torch.Tensor) -> torch.Tensor:
        """``LongTensor (B,)``: the frame of each clip seen by LPIPS and the 2D discriminator."""
        return torch.randint(0, video.shape[2], (video.shape[0],), device=video.device)

    # ------------------------------------------------------------------------------------- losses
    def perceptual_loss(self, frames: torch.Tensor, frames_rec: torch.Tensor) -> torch.Tensor:
        """``perceptual_weight * mean(LPIPS(frames, frames_rec))``; frames ``(B, C, H, W)``.

        Quirk kept from the release: the frames are passed in [-0.5, 0.5], not the [-1, 1]
        LPIPS was calibrated for, so released checkpoints were trained with exactly this loss.
        """
        if self.perceptual_model is None:
            return frames.new_zeros(())
        return self.perceptual_model(frames, frames_rec).float().mean() * self.config.perceptual_weight

    def generator_loss(
        self,
        video: torch.Tensor,
        recon: torch.Tensor,
        commitment_loss: torch.Tensor,
        global_step: int,
        frame_idx: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Autoencoder objective. ``video``, ``recon``: ``(B, C, T, H, W)`` in [-0.5, 0.5];
        ``commitment_loss``: scalar from the codebook. Returns ``(total scalar, parts)`` where ``parts``
        holds the detached terms: ``l1`` (unweighted), ``recon_loss`` (weighted, the release's
        ``train/recon_loss``), ``perceptual_loss``, ``commitment_loss``, ``g_image_loss``, ``g_video_loss``,
        ``image_gan_feat_loss``, ``video_gan_feat_loss``, ``aeloss`` (= disc_factor * GAN term),
        ``gan_feat_loss``, ``ae_total``.
        """
        cfg = self.config
        if frame_idx is None:
            frame_idx = self.random_frame_index(video)
        zero = recon.new_zeros((), dtype=torch.float32)
        l1 = F.l1_loss(recon.float(), video.float())  # every reduction in float32 (module docstring)
        recon_loss = l1 * cfg.l1_weight
        frames, frames_rec = select_frames(video, frame_idx), select_frames(recon, frame_idx)  # (B, C, H, W)
        perceptual = self.perceptual_loss(frames, frames_rec)
        factor = disc_factor(global_step, cfg.discriminator_iter_start)
        g_image = g_video = feat_image = feat_video = zero
        if self.use_image_discriminator(global_step):
            logits_fake, feats_fake = self.image_discriminator(frames_rec)
            with torch.no_grad():  # real features are targets only (detached in the L1)
                _, feats_real = self.image_discriminator(frames)
            g_image = -logits_fake.float().mean()
            feat_image = feature_matching_loss(feats_fake, feats_real)
        if self.use_video_discriminator(global_step):
            logits_fake, feats_fake = self.video_discriminator(recon)
            with torch.no_grad():
                _, feats_real = self.video_discriminator(video)
            g_video = -logits_fake.float().mean()
            feat_video = feature_matching_loss(feats_fake, feats_real)
        aeloss = factor * (cfg.image_gan_weight * g_image + cfg.video_gan_weight * g_video)
        gan_feat = factor * cfg.gan_feat_weight * (feat_image + feat_video)
        total = recon_loss + commitment_loss + aeloss + perceptual + gan_feat
        parts = dict(l1=l1, recon_loss=recon_loss, perceptual_loss=perceptual,
                     commitment_loss=commitment_loss, g_image_loss=g_image, g_video_loss=g_video,
                     image_gan_feat_loss=feat_image, video_gan_feat_loss=feat_video, aeloss=aeloss,
                     gan_feat_loss=gan_feat, ae_total=total)
        return total, {k: v.detach() for k, v in parts.items()}

    def discriminator_loss(
        self,
        video: torch.Tensor,
        recon: torch.Tensor,
        global_step: int,
        frame_idx: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Discriminator objective on real ``video`` vs ``recon`` (detached here), ``(B, C, T, H, W)``.

        Returns ``(d_loss scalar, parts)`` with ``d_image_loss``, ``d_video_loss``, ``d_loss`` and the mean
        logits ``logits_image_real/fake``, ``logits_video_real/fake``. Zero (and no forward pass) before
        ``discriminator_iter_start``.
        """
        cfg = self.config
        if frame_idx is None:
            frame_idx = self.random_frame_index(video)
        video, recon = video.detach(), recon.detach()
        zero = recon.new_zeros((), dtype=torch.float32)
        parts = dict(d_image_loss=zero, d_video_loss=zero)
        if self.use_image_discriminator(global_step):
            real, _ = self.image_discriminator(select_frames(video, frame_idx))
            fake, _ = self.image_discriminator(select_frames(recon, frame_idx))
            real, fake = real.float(), fake.float()  # float32 reductions under autocast
            parts.update(d_image_loss=self.d_loss_fn(real, fake), logits_image_real=real.mean(),
                         logits_image_fake=fake.mean())
        if self.use_video_discriminator(global_step):
            real, _ = self.video_discriminator(video)
            fake, _ = self.video_discriminator(recon)
            real, fake = real.float(), fake.float()
            parts.update(d_video_loss=self.d_loss_fn(real, fake), logits_video_real=real.mean(),
                         logits_video_fake=fake.mean())
        factor = disc_factor(global_step, cfg.discriminator_iter_start)
        d_loss = factor * (cfg.image_gan_weight * parts["d_image_loss"]
                           + cfg.video_gan_weight * parts["d_video_loss"])
        parts["d_loss"] = d_loss
        return d_loss, {k: v.detach() for k, v in parts.items()}
