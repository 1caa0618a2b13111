"""Loading release and our transformer checkpoints; token layouts of every conditioning."""

from __future__ import annotations

import argparse
import copy

import pytest
import torch

from tats.gpt import GPT, GPTConfig, build_mask
from tats.gpt.conditioning import codes_to_ids, cond_tokens, ids_to_codes
from tats.gpt.load import guess_downsample, load_transformer
from tats.gpt.video_transformer import VideoTransformer
from tats.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tests.numerics import assert_close_to_scale

pytestmark = pytest.mark.usefixtures("one_thread")


def release_args(**kw) -> argparse.Namespace:
    base = dict(vqvae="PATH/TO/vqgan.ckpt", unconditional=False, cond_stage_key="label", class_cond_dim=5,
                vtokens=False, vtokens_pos=False, block_size=128, n_layer=2, n_head=2, n_embd=16,
                n_unmasked=0, sample_every_n_latent_frames=0, stft_vqvae=None, first_stage_key="video",
                sequence_length=8, resolution=32, gpus=8, some_future_flag=True)
    base.update(kw)
    return argparse.Namespace(**base)


def release_ckpt(gpt: GPT, args: argparse.Namespace, first_stage: dict | None = None) -> dict:
    sd = {f"transformer.{k}": v for k, v in gpt.state_dict().items()}
    sd.update({f"first_stage_model.{k}": v for k, v in (first_stage or {}).items()})
    hp = {"args": args, "ckpt_path": None, "ignore_keys": [], "first_stage_key": "video",
          "cond_stage_key": args.cond_stage_key, "pkeep": 1.0, "sos_token": 0}
    return {"state_dict": sd, "hyper_parameters": hp, "hparams_name": "kwargs", "epoch": 0,
            "global_step": 0, "pytorch-lightning_version": "1.5.4", "callbacks": {},
            "optimizer_states": [], "lr_schedulers": []}


def fixture_first_stage(fixtures_dir) -> dict:
    sd = load_checkpoint(fixtures_dir / "gpt_label.ckpt")["state_dict"]
    return {k[len("first_stage_model."):]: v for k, v in sd.items() if k.startswith("first_stage_model.")}


def test_release_label_checkpoint_logits(fixtures_dir):
    io = torch.load(fixtures_dir / "gpt_label_io.pt")
    model = load_transformer(fixtures_dir / "gpt_label.ckpt", with_vqgan=False)
    cfg = model.config
    assert (cfg.cond_type, cfg.n_cond_vocab, cfg.n_codes, cfg.vocab_size) == ("label", 5, 48, 53)
    assert (cfg.block_size, cfg.n_layer, cfg.n_head, cfg.n_embd) == (128, 2, 4, 48)
    assert cfg.latent_shape == (2, 8, 8) and cfg.n_cond_tokens == 1
    with torch.no_grad():
        logits = model.transformer(io["idx"][:, :-1])
        exact = copy.deepcopy(model.transformer).double()(io["idx"][:, :-1])  # same weights, float64
    # In ulps of scale (tests/numerics.py; max|logit| = 1.28) the release's float32 logits are 4.0 (max) /
    # 0.69 (mean) from float64, ours 4.2 / 0.67; LayerNorm eps 1e-6 for 1e-5 costs 8200 / 730 and the
    # tanh GELU 2200 / 310.
    assert_close_to_scale(io["logits"], exact, max_ulps=16, mean_ulps=2)
    assert_close_to_scale(logits, exact, max_ulps=16, mean_ulps=2)
    assert torch.equal(model.cond_tokens(io["cond"][:, 0], 2), io["cond"])
    # ids -> codes: clamp(id - 5, 0, 47); a class id sampled as a code becomes code 0
    ids = torch.tensor([[0, 4, 5, 52]])
    assert model.ids_to_codes(ids).tolist() == [[0, 0, 0, 47]]
    assert torch.equal(model.codes_to_ids(model.ids_to_codes(io["idx"][:, 1:], (2, 8, 8))), io["idx"][:, 1:])


def test_release_checkpoint_with_vqgan(fixtures_dir):
    model = load_transformer(fixtures_dir / "gpt_label.ckpt", vqgan_ckpt=fixtures_dir / "vqgan.ckpt")
    assert tuple(model.vqgan.config.downsample) == (4, 4, 4)
    assert not any(p.requires_grad for p in model.vqgan.parameters())
    model.train()
    assert not model.vqgan.training and model.transformer.training
    inner = load_transformer(fixtures_dir / "gpt_label.ckpt")  # the VQGAN stored inside
    assert inner.vqgan.config.n_codes == 48 and inner.latent_shape == (2, 8, 8)


def test_vqgan_checkpoint_as_gpt_is_refused(fixtures_dir):
    with pytest.raises(CheckpointError, match="VQGAN checkpoint"):
        load_transformer(fixtures_dir / "vqgan.ckpt")


def test_release_unconditional_and_interpolation(fixtures_dir, tmp_path):
    """Release-format files built from the tsv layouts: unconditional, and an n_unmasked model."""
    first_stage = fixture_first_stage(fixtures_dir)
    assert guess_downsample(first_stage, 8, 32, 128) == (4, 4, 4)
    cfg = GPTConfig(vocab_size=48, block_size=128, n_layer=2, n_head=2, n_embd=16, n_codes=48)
    gpt = GPT(cfg)
    args = release_args(unconditional=True, class_cond_dim=None)
    path = tmp_path / "uncond.ckpt"
    save_checkpoint(release_ckpt(gpt, args, first_stage), path)
    model = load_transformer(path, with_vqgan=False)
    c = model.config
    assert (c.cond_type, c.n_cond_vocab, c.vocab_size, c.latent_shape) == ("none", 0, 48, (2, 8, 8))
    assert model.cond_tokens(None, 3).tolist() == [[0], [0], [0]]  # start token 0, shared with code 0
    assert model.ids_to_codes(torch.tensor([[0, 47]])).tolist() == [[0, 47]]

    # interpolation model: 3 latent frames of 4x4 + 1 start token, n_unmasked = 16
    icfg = GPTConfig(vocab_size=48, block_size=48, n_layer=1, n_head=2, n_embd=16, n_unmasked=16, n_codes=48)
    igpt = GPT(icfg)
    args = release_args(unconditional=True, class_cond_dim=None, n_unmasked=16, block_size=48,
                        sequence_length=12, resolution=16)
    sd = release_ckpt(igpt, args)
    stored = sd["state_dict"]["transformer.blocks.0.attn.mask"]
    assert torch.equal(stored, build_mask(48, 16))
    model = load_transformer(sd, with_vqgan=False)
    assert model.config.n_unmasked == 16 and not model.transformer.is_causal
    # A file whose flags say 0 but whose stored mask is not causal: the stored mask is used.
    sd["hyper_parameters"]["args"].n_unmasked = 0
    assert not load_transformer(sd, with_vqgan=False).transformer.is_causal


def test_our_checkpoint_round_trip(tmp_path):
    cfg = GPTConfig(vocab_size=30, block_size=24, n_layer=1, n_head=2, n_embd=16, cond_type="label",
                    n_cond_vocab=6, n_codes=24, latent_shape=(2, 3, 4))
    gpt = GPT(cfg).eval()
    ckpt = {"state_dict": {f"transformer.{k}": v for k, v in gpt.state_dict().items()},
            "hyper_parameters": {"config": cfg.to_dict()}}
    save_checkpoint(ckpt, tmp_path / "ours.ckpt")
    with pytest.warns(UserWarning, match="decoding is unavailable"):
        model = load_transformer(tmp_path / "ours.ckpt")
    assert model.config == cfg and model.vqgan is None
    idx = torch.randint(0, 30, (2, 24))
    with torch.no_grad():
        torch.testing.assert_close(model.transformer(idx), gpt(idx))
    with pytest.raises(RuntimeError, match="vqgan_ckpt"):
        model.decode(torch.zeros(1, 2, 3, 4, dtype=torch.long))


def test_token_layouts():
    label = GPTConfig(vocab_size=53, n_cond_vocab=5, n_codes=48, cond_type="label", latent_shape=(1, 2, 2))
    assert cond_tokens(label, 3, 2).tolist() == [[3], [3]]
    assert cond_tokens(label, torch.tensor([1, 2]), 2).tolist() == [[1], [2]]
    with pytest.raises(ValueError, match=r"\[0, 5\)"):
        cond_tokens(label, 5, 1)
    with pytest.raises(ValueError, match="class id"):
        cond_tokens(label, None, 1)
    codes = torch.tensor([[[[0, 1], [2, 47]]]])  # (1, 1, 2, 2)
    assert codes_to_ids(label, codes).tolist() == [[5, 6, 7, 52]]

    text = GPTConfig(vocab_size=49408 + 48, n_cond_vocab=49408, n_codes=48, cond_type="text", n_cond_tokens=6,
                     latent_shape=(1, 2, 2))
    ids = cond_tokens(text, "a cat", 2)
    assert ids.shape == (2, 6) and ids[0, 0] == 49406  # CLIP start-of-text first
    assert codes_to_ids(text, codes).tolist() == [[49408, 49409, 49410, 49455]]
    assert ids_to_codes(text, torch.tensor([[3, 49408 + 47, 49408 + 60]])).tolist() == [[0, 47, 47]]
    with pytest.raises(ValueError, match="6 tokens"):
        cond_tokens(text, torch.zeros(2, 5, dtype=torch.long), 2)

    audio = GPTConfig(vocab_size=64 + 48, n_cond_vocab=64, n_codes=48, cond_type="audio", n_cond_tokens=8,
                      latent_shape=(1, 2, 2))
    a = torch.randint(0, 64, (2, 2, 4))
    assert torch.equal(cond_tokens(audio, a, 2), a.flatten(1))  # audio codes first, unshifted
    assert codes_to_ids(audio, codes).tolist() == [[64, 65, 66, 111]]
    with pytest.raises(ValueError, match="unconditional"):
        cond_tokens(GPTConfig(), 1, 1)


def test_video_transformer_helpers():
    cfg = GPTConfig(vocab_size=10, block_size=12, n_layer=1, n_head=1, n_embd=8, n_codes=10,
                    latent_shape=(1, 3, 4))
    model = VideoTransformer(GPT(cfg))
    assert model.latent_shape == (1, 3, 4) and model.device == torch.device("cpu")
