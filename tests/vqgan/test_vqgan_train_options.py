"""VQGAN training options for speed and memory: the bf16 convolution work-around, float32 loss reductions,
activation checkpointing, channels-last, and bf16 training following fp32."""

from __future__ import annotations

import copy

import pytest
import pytorch_lightning as pl
import torch
import torch.nn.functional as F

from tats.metrics.lpips import LPIPS
from tats.vqgan import VQGAN, VQGANConfig
from tats.vqgan.codebook import Codebook
from tats.vqgan.discriminators import Conv2d, Conv3d, NLayerDiscriminator3D, pad_small_dims
from tats.vqgan.lightning import VQGANModule
from tats.vqgan.losses import VQGANLoss
from tests.numerics import assert_close_to_scale

BF16 = dict(device_type="cpu", dtype=torch.bfloat16)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm())


def _grads(conv: torch.nn.Module, x: torch.Tensor, bf16: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and input gradients of ``mean(conv(x)^2)``."""
    conv.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    with torch.autocast(**BF16, enabled=bf16):
        y = conv(x)
    y.float().square().mean().backward()
    return conv.weight.grad.clone(), x.grad


@pytest.mark.parametrize("shape", [(2, 8, 3, 9, 9), (2, 8, 2, 3, 17), (2, 8, 5, 9, 9), (2, 8, 1, 1, 1)])
def test_padding_small_dims_is_the_same_convolution(shape):
    """The work-around (explicit zero padding of the dims smaller than the kernel, then no padding there) is
    the convolution itself: outputs and both gradients equal the plain conv's in float32."""
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(8, 8, 4, stride=(1, 2, 2), padding=2)
    x = torch.randn(shape, requires_grad=True)
    padded, padding = pad_small_dims(x, conv.kernel_size, conv.padding)
    assert padding == tuple(0 if s < 4 else 2 for s in shape[2:])
    out = F.conv3d(padded, conv.weight, conv.bias, conv.stride, padding)
    ref = conv(x)
    assert_close_to_scale(out, ref, max_ulps=16, what="output")
    gw, gx = torch.autograd.grad(out.square().mean(), (conv.weight, x))
    rw, rx = torch.autograd.grad(ref.square().mean(), (conv.weight, x))
    assert_close_to_scale(gw, rw, max_ulps=64, what="weight gradient")
    assert_close_to_scale(gx, rx, max_ulps=64, what="input gradient")


@pytest.mark.parametrize("cls, shape", [(Conv3d, (2, 16, 3, 9, 9)), (Conv3d, (2, 64, 2, 10, 10)),
                                        (Conv2d, (2, 16, 1, 1))])
def test_bf16_weight_gradient_of_a_small_input_is_right(cls, shape):
    """PyTorch 2.14's CPU bf16 convolution gets the weight gradient wrong (relative error ~1, inf, NaN) when a
    padded dim is smaller than the kernel; the discriminators' convolutions give fp32's up to bf16 rounding
    (about 0.004), with the plain convolution's parameters and keys."""
    torch.manual_seed(0)
    conv = cls(shape[1], shape[1], 4, stride=2 if cls is Conv2d else 1, padding=2)
    x = torch.randn(shape)
    w32, x32 = _grads(conv, x, bf16=False)
    w16, x16 = _grads(conv, x, bf16=True)
    assert _rel(w16, w32) < 0.02 and _rel(x16, x32) < 0.02
    assert list(conv.state_dict()) == ["weight", "bias"]


def test_video_discriminator_gradients_under_bf16():
    """16 frames through 3 layers: ``model3`` sees 3 frames (16 -> 9 -> 5 -> 3). Every weight gradient under a
    bf16 autocast is finite and near fp32's: bf16 rounding through the batch-normalised layers costs up to
    0.11 here (the first layer's, 0.003 for the last ones), while before the work-around model3's
    gradient was off by 1e32."""
    torch.manual_seed(0)
    disc = NLayerDiscriminator3D(3, 16, 3).train()
    x = torch.rand(2, 3, 16, 32, 32) - 0.5
    grads = {}
    for bf16 in (False, True):
        ref = copy.deepcopy(disc)
        with torch.autocast(**BF16, enabled=bf16):
            logits, feats = ref(x)
        assert feats[3].shape[2] == 4 and feats[2].shape[2] == 3  # model3's input has 3 frames
        logits.float().mean().backward()
        grads[bf16] = {n: p.grad for n, p in ref.named_parameters()}
    for name, g32 in grads[False].items():
        assert torch.isfinite(grads[True][name]).all(), name
        if name.endswith("weight"):  # (a bias before a batch norm has a zero gradient, up to rounding)
            assert _rel(grads[True][name], g32) < 0.25, name
    assert _rel(grads[True]["model3.0.weight"], grads[False]["model3.0.weight"]) < 0.1


def _cfg(**kw) -> VQGANConfig:
    base = dict(embedding_dim=8, n_codes=32, n_hiddens=16, downsample=(4, 4, 4), norm_type="batch",
                sequence_length=16, resolution=16, disc_channels=16, disc_layers=3, perceptual_weight=1.0,
                gan_feat_weight=4.0, discriminator_iter_start=0, lr=1e-3)
    base.update(kw)
    return VQGANConfig(**base)


def test_losses_and_lpips_reduce_in_float32_under_bf16():
    torch.manual_seed(0)
    lpips = LPIPS().eval()
    loss = VQGANLoss(_cfg(), perceptual_model=lpips).train()
    x = torch.rand(2, 3, 16, 16, 16) - 0.5
    recon = (x + 0.1 * torch.randn_like(x)).requires_grad_(True)
    with torch.autocast(**BF16):
        assert lpips(x[:, :, 0], recon[:, :, 0]).dtype == torch.float32
        total, parts = loss.generator_loss(x, recon.bfloat16(), torch.tensor(0.1), 0)
        d_loss, d_parts = loss.discriminator_loss(x, recon.bfloat16(), 0)
    assert total.dtype == d_loss.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in (*parts.values(), *d_parts.values()))
    # in float64 LPIPS stays float64
    assert LPIPS().double()(x[:, :, 0].double(), recon[:, :, 0].double()).dtype == torch.float64


@pytest.mark.parametrize("bf16", [False, True])
def test_activation_checkpointing_keeps_outputs_gradients_and_statistics(bf16):
    """Checkpointed encoder and decoder: the same reconstruction and gradients, and BatchNorm statistics and
    the codebook updated once per forward, although the layers run twice."""
    torch.manual_seed(0)
    plain = VQGAN(_cfg(downsample=(2, 4, 4), sequence_length=4)).train()
    ckpt = copy.deepcopy(plain)
    ckpt.encoder.activation_checkpointing = ckpt.decoder.activation_checkpointing = True
    x = torch.rand(2, 3, 4, 16, 16) - 0.5
    outs = []
    for model in (plain, ckpt):
        torch.manual_seed(1)  # the codebook's init draws
        with torch.autocast(**BF16, enabled=bf16):
            out = model(x)
        (out["recon"].float().square().mean() + out["commitment_loss"]).backward()
        outs.append(out["recon"])
    assert torch.equal(outs[0], outs[1])
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        assert_close_to_scale(q.grad, p.grad, max_ulps=16, what=name)  # the same arithmetic, recomputed
    for (name, b), c in zip(plain.named_buffers(), ckpt.buffers()):
        assert torch.equal(b, c), name
    bn = ckpt.decoder.conv_blocks[0].res1.norm1
    assert int(bn.num_batches_tracked) == 1 and bn.momentum == 0.1
    with torch.no_grad():  # no graph: the plain path
        assert torch.equal(ckpt.eval()(x)["recon"], plain.eval()(x)["recon"])


def test_speed_options_keep_the_state_dict_and_outputs():
    """Checkpointing, channels-last and compile change no parameter name; channels-last gives the same
    reconstruction up to float rounding."""
    torch.manual_seed(0)
    plain = VQGANModule(_cfg(perceptual_weight=0.0))
    fast = VQGANModule(_cfg(perceptual_weight=0.0), activation_checkpointing=True, channels_last=True)
    fast.load_state_dict(plain.state_dict())
    assert list(fast.state_dict()) == list(plain.state_dict())
    assert fast.hparams.activation_checkpointing and fast.hparams.channels_last and not fast.hparams.compile
    assert fast.vqgan.encoder.conv_first.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    x = torch.rand(1, 3, 16, 16, 16) - 0.5
    with torch.no_grad():
        assert_close_to_scale(fast.vqgan.eval()(x)["recon"], plain.vqgan.eval()(x)["recon"], max_ulps=64)
    compiled = VQGANModule(_cfg(perceptual_weight=0.0), compile=True)  # compiled lazily, on first call
    assert list(compiled.state_dict()) == list(plain.state_dict())


class _Losses(pl.Callback):
    """Keeps each training step's (autoencoder total, discriminator) loss."""

    def __init__(self) -> None:
        self.seen: list[tuple[float, float]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.seen.append((float(outputs["loss"]), float(trainer.callback_metrics["train/d_loss"])))


def test_bf16_training_follows_fp32(tmp_path):
    """Ten steps with both GANs and LPIPS on from step 0, 16-frame clips (the video discriminator's
    ``model3`` sees 3 frames), from the same weights and batches. GAN training amplifies any difference,
    so "bf16 noise" is measured here: an fp32 run whose starting weights were rounded to bf16 once drifts
    from the fp32 run as far as bf16 training does (up to 4% of a loss by step 10). bf16 must stay within
    twice that drift, every loss finite, and the first step (before any update) within 0.5% of fp32's:
    a loss reduced in bf16, or the convolution bug that made the discriminator's weights inf in the first
    step, fails that."""
    from torch.utils.data import DataLoader

    gen = torch.Generator().manual_seed(0)
    coarse = torch.rand(20, 3, 4, 4, 4, generator=gen)
    clips = [dict(video=v) for v in F.interpolate(coarse, size=(16, 16, 16), mode="trilinear") - 0.5]
    losses = {}
    for name, precision in (("fp32", "32-true"), ("rounded", "32-true"), ("bf16", "bf16-mixed")):
        torch.manual_seed(0)
        with pytest.warns(UserWarning, match="RANDOM"):
            # (an empty weights folder: random VGG weights even where the real ones are cached)
            module = VQGANModule(_cfg(lr=1e-4), allow_random_lpips=True, lpips_cache_dir=str(tmp_path),
                                 activation_checkpointing=True)
        if name == "rounded":
            with torch.no_grad():
                for p in module.parameters():
                    p.copy_(p.bfloat16().float())
        seen = _Losses()
        trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=10, precision=precision, logger=False,
                             enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False, limit_val_batches=0, callbacks=[seen])
        trainer.fit(module, DataLoader(clips, batch_size=2))
        assert module.nonfinite_ae.total == module.nonfinite_disc.total == 0
        losses[name] = torch.tensor(seen.seen)  # (10, 2): autoencoder total, discriminator
    fp32 = losses["fp32"]
    assert torch.isfinite(losses["bf16"]).all()
    drift = ((losses["rounded"] - fp32) / fp32).abs().max()
    rel = ((losses["bf16"] - fp32) / fp32).abs()
    assert rel[0].max() < 0.005, rel[0]
    assert rel.max() < 2 * drift, (rel, drift)


def test_initialised_flag_is_read_from_the_device_only_when_written():
    cb = Codebook(4, 2).train()
    reads = []
    flag = cb.initialized

    class Spy(torch.Tensor):
        def __bool__(self):
            reads.append(1)
            return super().__bool__()

    cb.initialized = flag.as_subclass(Spy)
    cb(torch.randn(1, 2, 1, 2, 2))  # initialises from the batch: read, written
    cb(torch.randn(1, 2, 1, 2, 2))  # read once more (the flag was written)
    cb(torch.randn(1, 2, 1, 2, 2))
    cb(torch.randn(1, 2, 1, 2, 2))
    assert len(reads) == 2 and cb.is_initialized()
    cb.initialized.fill_(False)  # written from outside: seen at once
    assert not cb.is_initialized()


def test_nonfinite_batch_without_restarts_is_skipped_on_the_device():
    """With ``no_random_restart`` the skip of a non-finite batch is decided without a host read."""
    cb = Codebook(3, 1, no_random_restart=True).train()
    cb.initialized.fill_(True)
    before = {k: v.clone() for k, v in cb.state_dict().items()}
    z = torch.tensor([1.0, float("nan"), 11.0]).view(1, 1, 1, 1, 3)
    cb(z)
    for k, v in cb.state_dict().items():
        assert torch.equal(v, before[k]), k
    cb(torch.tensor([1.0, 2.0, 11.0]).view(1, 1, 1, 1, 3))
    assert not torch.equal(cb.N, before["N"])
