"""FSQ and LFQ inside the VQGAN: trained by train_vqgan.py, recorded in the checkpoint and rebuilt from
it without flags, and their integer codes feeding the GPT and the long-video sampler unchanged."""

from __future__ import annotations

import pytest
import torch

import train_transformer
import train_vqgan
from tats.data.demo import make_demo_data
from tats.gpt.load import load_transformer
from tats.sampling import sample_long
from tats.vqgan.config import VQGANConfig
from tats.vqgan.load import load_vqgan
from tats.vqgan.quantizers import FSQ, LFQ
from tests.tiny_models import save_vqgan

COMMON = ["--accelerator", "cpu", "--devices", "1", "--num_workers", "0", "--batch_size", "2",
          "--limit_val_batches", "1", "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0",
          "--no_resume"]
VQGAN = ["--n_hiddens", "16", "--downsample", "2", "4", "4", "--resolution", "16", "--sequence_length", "4",
         "--discriminator_iter_start", "2", "--disc_channels", "8", "--disc_layers", "2",
         "--log_videos_every_n_steps", "0", "--perceptual_weight", "0", "--norm_type", "batch",
         "--max_steps", "4"]
GPT = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--sequence_length", "8", "--resolution", "16",
       "--block_size", "64", "--base_lr", "1e-3", "--max_steps", "3"]
ARMS = {"fsq": (["--quantizer", "fsq", "--fsq_levels", "5", "4", "3"], FSQ, 60, 3),
        "lfq": (["--quantizer", "lfq", "--lfq_bits", "6"], LFQ, 64, 6)}


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    return make_demo_data(tmp_path_factory.mktemp("q") / "demo.h5", n_train=8, n_test=2, sequence_length=8,
                          resolution=16, progress=False)


@pytest.fixture(scope="module", params=sorted(ARMS))
def trained(request, demo, tmp_path_factory):
    """(quantizer name, its VQGAN checkpoint after 4 steps with the GAN from step 2, the module)."""
    root = tmp_path_factory.mktemp(request.param)
    _, module = train_vqgan.main([*COMMON, *VQGAN, *ARMS[request.param][0], "--data_path", str(demo),
                                  "--default_root_dir", str(root / "vqgan")])
    return request.param, root / "vqgan" / "checkpoints" / "last.ckpt", module


def test_the_checkpoint_rebuilds_the_quantizer_without_flags(trained):
    name, ckpt, module = trained
    _, cls, n_codes, width = ARMS[name]
    vqgan = load_vqgan(ckpt)
    assert vqgan.config.quantizer == name and isinstance(vqgan.codebook, cls)
    assert (vqgan.config.n_codes, vqgan.config.embedding_dim) == (n_codes, width)  # from the levels / bits
    x = torch.rand(2, 3, 4, 16, 16) - 0.5
    module.vqgan.eval()
    with torch.no_grad():
        codes = vqgan.encode(x)
        assert codes.dtype == torch.long and 0 <= int(codes.min()) and int(codes.max()) < n_codes
        torch.testing.assert_close(codes, module.vqgan.encode(x), rtol=0, atol=0)
        torch.testing.assert_close(vqgan.decode(codes), module.vqgan.decode(codes), rtol=0, atol=0)


def test_training_logs_usage_and_perplexity(trained):
    name, _, module = trained
    metrics = module.trainer.callback_metrics
    assert 0 < float(metrics["train/usage"]) <= 1 and float(metrics["train/perplexity"]) >= 1
    assert torch.isfinite(metrics["train/d_loss"])  # the discriminators ran on its reconstructions
    assert ("train/entropy_loss" in metrics) == (name == "lfq")  # LFQ's penalty, logged apart


def test_decoding_then_encoding_the_codes_keeps_them(trained):
    """The quantizer's own round trip: the latents each code stands for quantize back to that code
    (the autoencoder around it is barely trained here; benchmarks/bench_quantizers.py measures the
    whole model's round trip on the demo's trained tokenizers)."""
    name, ckpt, _ = trained
    vqgan = load_vqgan(ckpt)
    q = vqgan.codebook
    ids = torch.arange(q.n_codes).reshape(1, 1, 1, -1)  # every code once
    latents = q.lookup(ids).double()  # (1, D, 1, 1, K): what the decoder receives for each code
    if name == "fsq":  # codes() bounds its input by tanh first: invert the paper's bound for the grid values
        levels = torch.tensor(vqgan.config.fsq_levels, dtype=torch.float64)[:, None, None, None]
        half_l = (levels - 1) * (1 - 1e-3) / 2
        offset = (levels % 2 == 0).double() * 0.5
        rounded = latents * torch.div(levels, 2, rounding_mode="floor")  # the integer level r
        target = rounded - 0.25 * rounded.sign()  # rounds to r; the outermost levels lie past the bound
        latents = torch.atanh((target + offset) / half_l) - torch.atanh(offset / half_l)
    assert torch.equal(q.codes(latents.float()), ids)


def test_the_gpt_trains_on_its_codes_and_long_sampling_runs(trained, demo, tmp_path):
    name, ckpt, _ = trained
    trainer = train_transformer.main([*COMMON, *GPT, "--vqvae", str(ckpt), "--data_path", str(demo),
                                      "--default_root_dir", str(tmp_path / "gpt")])
    assert trainer.global_step == 3 and torch.isfinite(trainer.callback_metrics["train/loss"])
    model = load_transformer(tmp_path / "gpt" / "checkpoints" / "last.ckpt")
    n_codes = ARMS[name][2]
    assert model.config.n_codes == n_codes
    t = model.config.latent_shape[0]
    codes = sample_long(model, t + 2, 2, cond=[0, 1], temporal_sample_pos=t - 1, greedy=True)
    assert codes.shape == (2, t + 2, 4, 4) and 0 <= int(codes.min()) and int(codes.max()) < n_codes
    video = model.vqgan.decode(codes)
    assert video.shape == (2, 3, 2 * (t + 2), 16, 16) and torch.isfinite(video).all()


@pytest.mark.parametrize("flags, message", [
    (["--quantizer", "fsq"], "--quantizer fsq needs --fsq_levels"),
    (["--quantizer", "fsq", "--fsq_levels", "2", "8"], "each at least 3"),
    (["--fsq_levels", "8", "8"], "--fsq_levels is for --quantizer fsq, not vq"),
    (["--quantizer", "lfq"], "--quantizer lfq needs --lfq_bits between 1 and 30"),
    (["--quantizer", "lfq", "--lfq_bits", "31"], "--lfq_bits between 1 and 30, got 31"),
    (["--quantizer", "fsq", "--lfq_bits", "8", "--fsq_levels", "5", "5"],
     "--lfq_bits is for --quantizer lfq"),
])
def test_bad_quantizer_flags_are_usage_errors_naming_them(flags, message, capsys):
    with pytest.raises(SystemExit):
        train_vqgan.main([*COMMON, *VQGAN, *flags])
    assert message in capsys.readouterr().err


def test_a_vocabulary_beyond_the_dense_head_is_refused_naming_the_flags(demo, tmp_path):
    config = VQGANConfig(n_hiddens=16, downsample=(2, 4, 4), resolution=16, sequence_length=4,
                         norm_type="batch", quantizer="lfq", lfq_bits=21)
    vq = save_vqgan(tmp_path / "lfq21.ckpt", config=config)
    with pytest.raises(SystemExit, match=r"2097152 codes.*at most 2\*\*20.*--lfq_bits \(<= 20\)"):
        train_transformer.main([*COMMON, *GPT, "--vqvae", str(vq), "--data_path", str(demo),
                                "--default_root_dir", str(tmp_path / "gpt")])
