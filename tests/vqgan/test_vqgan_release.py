"""Release compatibility: the fixture checkpoint's outputs, the reference key layout, loading paths."""

from __future__ import annotations

import argparse
import ast
import copy
import warnings

import pytest
import torch

from tats.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tats.vqgan import VQGAN, NLayerDiscriminator2D, NLayerDiscriminator3D, VQGANConfig
from tats.vqgan.load import infer_vqgan_config, load_first_stage, load_vqgan, vqgan_from_state_dict
from tests.numerics import assert_close_to_scale


def test_release_fixture_encode_decode(fixtures_dir):
    model = load_vqgan(fixtures_dir / "vqgan.ckpt")
    io = torch.load(fixtures_dir / "vqgan_io.pt")
    assert not model.training and model.config.downsample == (4, 4, 4)
    assert model.config.norm_type == "batch" and model.codebook.initialized.item()
    with torch.no_grad():
        codes = model.encode(io["video"])
        decoded = model.decode(io["codes"])
        exact = copy.deepcopy(model).double().decode(io["codes"])  # the same weights in float64
    # The nearest codes are far from ties (in float64 the closest runner-up is 0.02 away in squared
    # distance, where float32 latents are off by 7e-6), so they are equal on every machine.
    assert torch.equal(codes, io["codes"])
    # The release's float32 decode sits 14.2 ulps of scale (max) / 2.0 (mean) from the float64 one
    # (tests/numerics.py; scale = max|decoded| = 68.4, so 1.2e-4 / 1.7e-5). That comparison involves no
    # float32 arithmetic of ours, so it is the same on every CPU. A wrong BatchNorm eps (1e-6 for 1e-5)
    # in any one of the nine decoder norms costs 34-93 / 5.2-12.
    assert_close_to_scale(io["decoded"], exact, max_ulps=24, mean_ulps=3)
    # Our float32 decode, in whatever summation order this CPU and thread count use, is as close to
    # float64 as the release's was (measured 8.5-15.4 / 1.3-2.0 over thread counts and SIMD widths).
    assert_close_to_scale(decoded, exact, max_ulps=32, mean_ulps=4)


def _read_tsv(path):
    lines = path.read_text().splitlines()
    config = ast.literal_eval(lines[0].split("config:", 1)[1].strip())
    rows = {}
    for line in lines[1:]:
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        rows[key] = (tuple(ast.literal_eval(shape)), dtype)
    return config, rows


def _layout(config: VQGANConfig) -> dict:
    parts = {"": VQGAN(config),
             "image_discriminator.": NLayerDiscriminator2D(config.image_channels, config.disc_channels,
                                                           config.disc_layers),
             "video_discriminator.": NLayerDiscriminator3D(config.image_channels, config.disc_channels,
                                                           config.disc_layers)}
    out = {}
    for prefix, module in parts.items():
        for k, v in module.state_dict().items():
            if k != "codebook.initialized":  # ours, not in release files
                out[prefix + k] = (tuple(v.shape), str(v.dtype).replace("torch.", ""))
    return out


@pytest.mark.parametrize("norm_type", ["batch", "group"])
def test_key_layout_matches_reference_tsv(reference_dir, norm_type):
    config_d, rows = _read_tsv(reference_dir / "vqgan_state_dict.tsv")
    rows = {k: v for k, v in rows.items() if not k.startswith("perceptual_model.")}  # LPIPS: not ours
    config = VQGANConfig.from_dict({**config_d, "norm_type": norm_type})
    assert config.downsample == (4, 8, 8)
    ours = _layout(config)
    if norm_type == "group":  # GroupNorm keeps weight/bias only; discriminators stay BatchNorm
        rows = {k: v for k, v in rows.items() if k.startswith(("image_", "video_"))
                or not k.endswith(("running_mean", "running_var", "num_batches_tracked"))}
    assert ours == rows


def test_our_checkpoint_round_trip(tmp_path):
    config = VQGANConfig(n_codes=16, embedding_dim=4, n_hiddens=4, downsample=(2, 2, 2), norm_type="batch",
                         sequence_length=4, resolution=8)
    model = VQGAN(config)
    model.train()(torch.rand(2, 3, 4, 8, 8) - 0.5)  # initialise the codebook, move batch statistics
    ckpt = {"state_dict": {f"vqgan.{k}": v for k, v in model.state_dict().items()},
            "hyper_parameters": {"config": config.to_dict()}}
    save_checkpoint(ckpt, tmp_path / "ours.ckpt")
    loaded = load_vqgan(tmp_path / "ours.ckpt")
    assert loaded.config == config and loaded.codebook.initialized.item()
    video = torch.rand(1, 3, 4, 8, 8) - 0.5
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), model.eval().encode(video))
        torch.testing.assert_close(loaded(video)["recon"], model(video)["recon"])


def test_transformer_checkpoint(fixtures_dir):
    path = fixtures_dir / "gpt_label.ckpt"
    with pytest.raises(CheckpointError, match="transformer checkpoint"):
        load_vqgan(path)
    with pytest.warns(UserWarning, match="assuming \\[4, 4, 4\\]"):
        first = load_first_stage(path)
    c = first.config
    assert (c.n_codes, c.embedding_dim, c.n_hiddens, c.norm_type) == (48, 8, 16, "batch")
    assert (c.sequence_length, c.resolution) == (8, 32)  # from the transformer's flags
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_first_stage(path, downsample=(2, 4, 4)).config.downsample == (2, 4, 4)
    assert first.encode(torch.zeros(1, 3, 8, 32, 32)).shape == (1, 2, 8, 8)


def test_infer_config_and_errors(fixtures_dir):
    sd = load_checkpoint(fixtures_dir / "vqgan.ckpt")["state_dict"]
    config = infer_vqgan_config(sd, downsample=(4, 4, 4))
    assert (config.n_codes, config.embedding_dim, config.n_hiddens) == (48, 8, 16)
    assert (config.disc_channels, config.disc_layers) == (16, 3)
    with pytest.raises(ValueError, match="implies 3 down blocks"):
        infer_vqgan_config(sd, downsample=(8, 8, 8))
    with pytest.raises(ValueError, match="do not fit"):
        vqgan_from_state_dict(sd, VQGANConfig.from_dict({**config.to_dict(), "n_codes": 64}))
    with pytest.raises(CheckpointError, match="not found"):
        load_vqgan(fixtures_dir / "missing.ckpt")


def test_release_flags_missing_norm_type_follow_the_weights(fixtures_dir):
    ckpt = load_checkpoint(fixtures_dir / "vqgan.ckpt")
    args = vars(ckpt["hyper_parameters"]["args"]).copy()
    del args["norm_type"]  # an older run's flags: the default would be "group"
    ckpt["hyper_parameters"] = {"args": argparse.Namespace(**args)}
    with pytest.warns(UserWarning, match="using 'batch'"):
        model = load_vqgan(ckpt)  # an already loaded dict is accepted too
    assert model.config.norm_type == "batch"
