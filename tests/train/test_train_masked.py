"""train_transformer.py --objective masked and --cond_drop: few-step runs whose checkpoints load without
flags and sample, and the flags checked before training."""

from __future__ import annotations

import math

import pytest
import torch

from tats.gpt.load import load_transformer
from tats.io.checkpoint import load_checkpoint
from tats.sampling import sample_long, sample_short
from tests.train.test_train_transformer import _run, assets  # noqa: F401 (the module fixture)


def test_masked_run_checkpoint_loads_and_samples(assets):  # noqa: F811
    trainer, ckpts = _run(assets, "masked", "--objective", "masked", "--cond_drop", "0.1",
                          "--block_size", "32")
    assert trainer.global_step == 2 and math.isfinite(trainer.callback_metrics["val/loss"].item())
    hp = load_checkpoint(ckpts / "last.ckpt")["hyper_parameters"]
    assert hp["objective"] == "masked" and hp["cond_drop"] == 0.1 and hp["frame_cond_prob"] == 0.5
    # the whole sequence (1 label + 2x4x4 codes) is the masked model's block; the null label is in the
    # vocabulary
    assert hp["config"]["block_size"] == 33 and hp["config"]["vocab_size"] == 16 + 20 + 1
    model = load_transformer(ckpts / "last.ckpt")
    assert model.objective == "masked" and model.config.null_cond
    g = torch.Generator().manual_seed(0)
    codes = sample_long(model, 3, 2, cond=[0, 1], temporal_sample_pos=1, steps=2, cfg_scale=2.0, generator=g)
    assert codes.shape == (2, 3, 4, 4)
    assert model.decode(codes).shape == (2, 3, 6, 16, 16)


def test_guidance_gpt_run(assets):  # noqa: F811
    trainer, ckpts = _run(assets, "gpt_cfg", "--cond_drop", "0.2", "--block_size", "32", "--no_resume")
    model = load_transformer(ckpts / "last.ckpt")
    assert model.objective == "autoregressive" and model.config.null_cond
    assert model.config.vocab_size == 16 + 20 + 1 and model.config.block_size == 32
    codes = sample_short(model, 2, [3, 4], cfg_scale=3.0, generator=torch.Generator().manual_seed(0))
    assert codes.shape == (2, 2, 4, 4)


@pytest.mark.parametrize("extra, message", [
    (["--cond_drop", "0.1", "--unconditional"], "has none"),
    (["--cond_drop", "1.0"], r"\[0, 1\)"),
    (["--objective", "masked", "--sample_every_n_latent_frames", "2"], "for the GPT"),
])
def test_flags_are_checked(assets, extra, message):  # noqa: F811
    with pytest.raises(SystemExit, match=message):
        _run(assets, "bad", "--block_size", "32", *extra)
