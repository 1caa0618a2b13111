"""NonFiniteGuard: counting, the limit and its message, the cross-rank decision; and the two ways the
training modules use it in Lightning 2 (automatic optimization: training_step returns None; manual
optimization: no backward/step), checked on tiny modules."""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from tats.faults import DEFAULT_MAX_NONFINITE_STEPS, NonFiniteGuard, NonFiniteLossError
from tats.train.flags import add_fault_args


def test_guard_counts_and_resets():
    g = NonFiniteGuard(max_consecutive=2)
    assert g.check(torch.tensor(1.0), 0) is False
    assert g.check(torch.tensor(float("nan")), 1) is True
    assert g.check(torch.tensor([1.0, float("inf")]), 2) is True  # any element
    assert (g.total, g.consecutive, g.last_step) == (2, 2, 2)
    assert g.check(0.5, 3) is False and g.consecutive == 0 and g.total == 2  # a good step resets the run
    assert g.check(None, 4) is False
    g.check(float("-inf"), 5)
    g.check(math.nan, 6)
    with pytest.raises(NonFiniteLossError, match=r"at step 7: 3 steps in a row.*--max_nonfinite_steps 2"):
        g.check(torch.tensor(float("nan")), 7)
    assert g.state_dict() == {"total": 5, "consecutive": 3}
    h = NonFiniteGuard()
    h.load_state_dict(g.state_dict())
    assert (h.total, h.consecutive, h.max_consecutive) == (5, 3, DEFAULT_MAX_NONFINITE_STEPS)


def test_guard_limit_zero_and_validation():
    with pytest.raises(NonFiniteLossError, match="step 12"):
        NonFiniteGuard(0).check(torch.tensor(float("nan")), 12, "discriminator loss")
    with pytest.raises(ValueError, match="--max_nonfinite_steps"):
        NonFiniteGuard(-1)
    parser = add_fault_args(add_fault_args(argparse.ArgumentParser()))  # twice: added once
    args = parser.parse_args(["--max_nonfinite_steps", "3"])
    assert args.max_nonfinite_steps == 3


def test_guard_decision_is_taken_over_ranks():
    # a finite loss here, but another rank had a NaN: this rank must skip too (or DDP would hang)
    seen = []
    g = NonFiniteGuard(5, any_fn=lambda flag, device: (seen.append(flag), True)[1])
    assert g.check(torch.tensor(1.0), 0) is True and g.total == 1
    assert len(seen) == 1 and not bool(seen[0])  # this rank's own flag: finite


class _Auto(pl.LightningModule):
    """Automatic optimization: the GPT module's wiring (training_step returns None to skip)."""

    def __init__(self, bad_steps: set[int], limit: int) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.bad, self.guard, self.weights = bad_steps, NonFiniteGuard(limit), []

    def training_step(self, batch, batch_idx):
        loss = self.lin(batch[0]).pow(2).mean()
        if batch_idx in self.bad:
            loss = loss * float("nan")
        self.weights.append(self.lin.weight.detach().clone())
        if self.guard.check(loss, self.global_step):
            return None
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)


class _Manual(_Auto):
    """Manual optimization: the VQGAN module's wiring (no backward, no step)."""

    def __init__(self, bad_steps: set[int], limit: int) -> None:
        super().__init__(bad_steps, limit)
        self.automatic_optimization = False

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        loss = self.lin(batch[0]).pow(2).mean() * (float("nan") if batch_idx in self.bad else 1.0)
        self.weights.append(self.lin.weight.detach().clone())
        if self.guard.check(loss, self.global_step, "autoencoder loss"):
            opt.zero_grad(set_to_none=True)
            return None
        self.manual_backward(loss)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach()


def _fit(module: pl.LightningModule, n_batches: int = 6) -> pl.Trainer:
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(2 * n_batches, 2)),
                                       batch_size=2)
    trainer = pl.Trainer(max_epochs=1, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(module, data)
    return trainer


@pytest.mark.parametrize("cls", [_Auto, _Manual])
def test_nonfinite_steps_are_skipped_in_lightning2(cls):
    module = cls({1, 2}, limit=3)
    trainer = _fit(module)
    w = module.weights  # weights seen at the start of each batch
    assert torch.equal(w[1], w[2]) and torch.equal(w[2], w[3])  # batches 1 and 2 changed nothing
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[3], w[4])  # the finite ones did
    assert torch.isfinite(module.lin.weight).all()
    assert module.guard.total == 2 and module.guard.consecutive == 0
    # Lightning 2 still counts the skipped automatic steps in global_step (its optimizer.step ran with no
    # gradients); manual optimization counts only real steps
    assert trainer.global_step == (6 if cls is _Auto else 4)


@pytest.mark.parametrize("cls", [_Auto, _Manual])
def test_too_many_nonfinite_steps_stop_the_run(cls):
    with pytest.raises(NonFiniteLossError, match=r"at step \d+: 3 steps in a row"):
        _fit(cls({1, 2, 3, 4}, limit=2))


# ------------------------------------------------------------------ the training scripts, NaNs injected
ROOT = Path(__file__).resolve().parents[2]


def _poison(real, calls: list[int], bad: set[int]):
    """Wrap a loss method returning ``(loss, extra)`` so that its calls number ``bad`` return NaN."""

    def wrapper(self, *args, **kwargs):
        loss, extra = real(self, *args, **kwargs)
        calls.append(len(calls))
        return (loss * float("nan") if len(calls) - 1 in bad else loss), extra

    return wrapper


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    from tats.data.demo import make_demo_data

    return make_demo_data(tmp_path_factory.mktemp("nan") / "demo.h5", n_train=8, n_test=2, sequence_length=8,
                          resolution=16, progress=False)


VQ_ARGV = ("--gpus 0 --num_workers 0 --batch_size 2 --embedding_dim 8 --n_codes 16 --n_hiddens 8 "
           "--norm_type batch --downsample 2 4 4 --resolution 16 --sequence_length 4 "
           "--discriminator_iter_start 0 --disc_channels 8 --disc_layers 2 --perceptual_weight 0 "
           "--log_videos_every_n_steps 0 --limit_val_batches 1 --num_sanity_val_steps 0 "
           "--progress_bar_refresh_rate 0").split()


def test_vqgan_script_skips_and_stops_on_nonfinite_losses(demo, tmp_path, monkeypatch):
    from tats.vqgan.losses import VQGANLoss

    sys.path.insert(0, str(ROOT))
    import train_vqgan

    calls: list[int] = []
    real = VQGANLoss.generator_loss
    monkeypatch.setattr(VQGANLoss, "generator_loss", _poison(real, calls, {1, 2}))
    argv = [*VQ_ARGV, "--data_path", str(demo), "--max_steps", "3", "--default_root_dir", str(tmp_path / "a")]
    trainer, module = train_vqgan.main(argv)
    assert trainer.global_step == 3 and len(calls) == 5  # two batches skipped, not counted as steps
    assert module.nonfinite_ae.total == 2
    assert all(torch.isfinite(p).all() for p in module.parameters())
    calls.clear()
    monkeypatch.setattr(VQGANLoss, "generator_loss", _poison(real, calls, set(range(1, 99))))
    with pytest.raises(NonFiniteLossError, match=r"autoencoder loss at step 1: 3 steps in a row"):
        train_vqgan.main([*argv[:-1], str(tmp_path / "b"), "--max_nonfinite_steps", "2"])


def test_transformer_script_skips_nonfinite_losses(demo, tmp_path, monkeypatch):
    from tats.gpt.lightning import TransformerModule
    from tests.tiny_models import save_vqgan

    sys.path.insert(0, str(ROOT))
    import train_transformer

    calls: list[int] = []
    real = TransformerModule.loss
    monkeypatch.setattr(TransformerModule, "loss", _poison(real, calls, {1, 2}))
    argv = ["--gpus", "0", "--vqvae", str(save_vqgan(tmp_path / "vq.ckpt")), "--data_path", str(demo),
            "--sequence_length", "8", "--resolution", "16", "--n_layer", "1", "--n_head", "2",
            "--n_embd", "16", "--block_size", "16", "--batch_size", "2", "--num_workers", "0",
            "--max_steps", "4",
            "--limit_val_batches", "0", "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0",
            "--default_root_dir", str(tmp_path / "run")]
    trainer = train_transformer.main(argv)
    module = trainer.lightning_module
    assert module.nonfinite.total == 2 and trainer.global_step == 4  # Lightning 2 counts skipped steps
    assert all(torch.isfinite(p).all() for p in module.transformer.parameters())
