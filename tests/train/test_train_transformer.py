"""Stage-2 training: token layout, loss, optimizer groups, and few-step runs of train_transformer.main
for every conditioning (label, unconditional, text, audio, precomputed codes) on tiny CPU models."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tats.data.audio import write_tone_video
from tats.data.demo import make_demo_data
from tats.gpt.config import GPTConfig
from tats.gpt.lightning import TransformerModule, optimizer_groups
from tats.gpt.load import load_transformer
from tats.io.checkpoint import load_checkpoint, save_checkpoint
from tats.train.transformer import build_gpt_config
from tats.vqgan.config import VQGANConfig
from tats.vqgan.model import VQGAN
from tests.numerics import assert_close_to_scale

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_transformer  # noqa: E402

VQ = VQGANConfig(embedding_dim=8, n_codes=16, n_hiddens=16, downsample=(2, 4, 4), sequence_length=4,
                 resolution=16)  # latent grid (2, 4, 4): 32 codes per clip
TINY = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--batch_size", "4", "--num_workers", "0",
        "--gpus", "0", "--progress_bar_refresh_rate", "0", "--limit_val_batches", "1",
        "--val_check_interval", "2", "--num_sanity_val_steps", "0",
        "--sequence_length", "4", "--resolution", "16", "--base_lr", "1e-3"]


def _save_vqgan(config: VQGANConfig, path: Path) -> Path:
    model = VQGAN(config)
    save_checkpoint({"state_dict": {f"vqgan.{k}": v for k, v in model.state_dict().items()},
                     "hyper_parameters": {"config": config.to_dict()}}, path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("stage2")
    demo = make_demo_data(d / "demo.h5", n_train=16, n_test=8, sequence_length=4, resolution=16,
                          progress=False)
    return dict(dir=d, vqgan=_save_vqgan(VQ, d / "vqgan.ckpt"), demo=demo)


def _run(assets, name, *extra, steps=2):
    root = assets["dir"] / name
    args = ["--vqvae", str(assets["vqgan"]), "--data_path", str(assets["demo"]),
            "--default_root_dir", str(root), "--max_steps", str(steps), *TINY, *extra]
    return train_transformer.main(args), root / "checkpoints"


# --------------------------------------------------------------------------- unit: tokens, loss, optimizer
def _module(cond_type="label", n_cond_vocab=3, n_cond_tokens=1, every=0):
    t = math.ceil(2 / every) if every else 2
    cfg = GPTConfig(vocab_size=16 + n_cond_vocab, block_size=n_cond_tokens + t * 16 - 1, n_layer=1, n_head=2,
                    n_embd=16, cond_type=cond_type, n_cond_vocab=n_cond_vocab, n_cond_tokens=n_cond_tokens,
                    n_codes=16, latent_shape=(t, 4, 4), sample_every_n_latent_frames=every)
    return TransformerModule.from_vqgan(cfg, VQGAN(VQ))


def test_sequence_layout_and_loss():
    m = _module("label", 3)
    codes = torch.randint(0, 16, (2, 2, 4, 4))
    batch = dict(codes=codes, label=torch.tensor([2, 0]))
    idx = m.sequence(batch)
    assert idx.shape == (2, 33)
    assert idx[:, 0].tolist() == [2, 0] and torch.equal(idx[:, 1:], codes.flatten(1) + 3)  # (t, h, w) order
    loss, n = m.loss(batch)
    logits = m.transformer(idx[:, :-1])[:, 0:]  # from the (single) condition position on
    expected = F.cross_entropy(logits.reshape(-1, 19), idx[:, 1:].reshape(-1))
    assert n == 64 and torch.allclose(loss, expected)

    u = _module("none", 0)
    assert u.sequence(dict(codes=codes))[:, 0].tolist() == [0, 0]
    assert torch.equal(u.sequence(dict(codes=codes))[:, 1:], codes.flatten(1))  # unshifted vocabulary

    text = _module("text", 49408, 5)
    ids = text.sequence(dict(codes=codes, text=["a photo of a cat", "a cat"]))
    assert ids[:, :5].tolist() == [[49406, 320, 1125, 539, 49407], [49406, 320, 2368, 49407, 0]]
    assert torch.equal(ids[:, 5:], codes.flatten(1) + 49408)
    loss, n = text.loss(dict(codes=codes, text=["x", "y"]))
    assert n == 64 and loss.item() == pytest.approx(math.log(16 + 49408), rel=0.05)

    sparse = _module("label", 3, every=2)  # keep latent frames 0, 2, ... -> t = 1
    assert torch.equal(sparse.video_codes(batch), codes[:, ::2])
    with pytest.raises(ValueError, match="latent_shape"):
        m.video_codes(dict(codes=codes[:, :1]))


def test_frozen_vqgan_and_optimizer_groups():
    m = _module()
    m.train()
    assert not m.vqgan.training and m.transformer.training
    assert not any(p.requires_grad for p in m.vqgan.parameters())
    decay, no_decay = optimizer_groups(m.transformer, 0.01)
    names = {id(p): n for n, p in m.transformer.named_parameters()}
    decay_names = {names[id(p)] for p in decay["params"]}
    assert decay["weight_decay"] == 0.01 and no_decay["weight_decay"] == 0.0
    assert all(n.endswith("weight") and "ln" not in n and "emb" not in n for n in decay_names)
    assert {"blocks.0.attn.key.weight", "blocks.0.mlp.0.weight", "head.weight"} <= decay_names
    assert {"pos_emb", "tok_emb.weight", "ln_f.weight", "blocks.0.attn.key.bias"} <= {
        names[id(p)] for p in no_decay["params"]}
    opt = m.configure_optimizers()
    in_opt = {id(p) for g in opt.param_groups for p in g["params"]}
    assert in_opt == {id(p) for p in m.transformer.parameters()}
    assert opt.defaults["betas"] == (0.9, 0.95)


def test_activation_checkpointing_keeps_loss_and_grads():
    torch.manual_seed(0)
    plain = _module()
    ckpt = _module()
    ckpt.load_state_dict(plain.state_dict())
    from tats.gpt.lightning import enable_activation_checkpointing

    enable_activation_checkpointing(ckpt.transformer)
    batch = dict(codes=torch.randint(0, 16, (2, 2, 4, 4)), label=torch.tensor([1, 2]))
    losses = []
    for m in (plain, ckpt):
        loss, _ = m.loss(batch)
        loss.backward()
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])
    for (n, a), b in zip(plain.transformer.named_parameters(), ckpt.transformer.parameters()):
        assert_close_to_scale(b.grad, a.grad, max_ulps=16, what=n)  # recomputed forward, same arithmetic
    assert list(ckpt.state_dict()) == list(plain.state_dict())  # checkpoint keys unchanged


# ------------------------------------------------------------------------------------- few-step runs
def test_label_run_checkpoint_and_resume(assets):
    trainer, ckpts = _run(assets, "label", "--block_size", "32", steps=2)
    assert trainer.global_step == 2 and "val/loss" in trainer.callback_metrics
    assert math.isfinite(trainer.callback_metrics["val/loss"].item())
    assert (ckpts / "last.ckpt").is_file() and list(ckpts.glob("best-step*.ckpt"))
    ckpt = load_checkpoint(ckpts / "last.ckpt")
    assert ckpt["hyper_parameters"]["config"]["n_cond_vocab"] == 20  # classes read from the demo data
    assert ckpt["hyper_parameters"]["learning_rate"] == pytest.approx(4 * 1e-3)  # 1 x 1 x batch 4 x base_lr
    # the frozen VQGAN is stored unchanged
    original = load_checkpoint(assets["vqgan"])["state_dict"]
    assert all(torch.equal(ckpt["state_dict"][k], v) for k, v in original.items())
    model = load_transformer(ckpts / "last.ckpt")  # no flags needed
    assert model.config.cond_type == "label" and model.config.latent_shape == (2, 4, 4)
    assert model.vqgan.config.n_codes == 16

    trainer, _ = _run(assets, "label", "--block_size", "32", steps=3)  # same folder: resumes at step 2
    assert trainer.global_step == 3


def test_unconditional_and_text_runs(assets):
    trainer, ckpts = _run(assets, "uncond", "--unconditional", "--block_size", "32", "--no_resume",
                          "--precision", "bf16-mixed", "--activation_checkpointing")
    assert math.isfinite(trainer.callback_metrics["val/loss"].item())
    cfg = load_checkpoint(ckpts / "last.ckpt")["hyper_parameters"]["config"]
    assert cfg["cond_type"] == "none" and cfg["vocab_size"] == 16
    trainer, ckpts = _run(assets, "text", "--text_cond", "--text_seq_len", "8", "--block_size", "39",
                          "--no_resume")
    cfg = load_checkpoint(ckpts / "last.ckpt")["hyper_parameters"]["config"]
    assert cfg["cond_type"] == "text" and cfg["n_cond_tokens"] == 8 and cfg["vocab_size"] == 16 + 49408
    assert math.isfinite(trainer.callback_metrics["val/loss"].item())


def test_vtokens_run(assets, load_script):
    codes = assets["dir"] / "codes.h5"
    load_script("scripts/extract_codes.py").main([
        "--vqgan_ckpt", str(assets["vqgan"]), "--data_path", str(assets["demo"]), "--sequence_length", "4",
        "--resolution", "16", "--output", str(codes), "--batch_size", "8"])
    trainer, ckpts = _run(assets, "vtokens", "--vtokens", "--data_path", str(codes), "--block_size", "32",
                          "--no_resume")
    assert trainer.global_step == 2 and math.isfinite(trainer.callback_metrics["val/loss"].item())
    assert load_transformer(ckpts / "last.ckpt").config.n_cond_vocab == 20
    other = _save_vqgan(VQ, assets["dir"] / "other_vqgan.ckpt")
    with pytest.raises(SystemExit, match="not the VQGAN that wrote"):
        _run(assets, "vtokens_bad", "--vtokens", "--data_path", str(codes), "--vqvae", str(other))


def test_audio_run(assets):
    root = assets["dir"] / "drums"
    for split, n in (("train", 4), ("test", 2)):
        (root / split / "drum").mkdir(parents=True)
        for i in range(n):
            write_tone_video(root / split / "drum" / f"{i}.mp4", 300.0 * (i + 1), seconds=1.0, fps=8, size=16)
    stft_cfg = VQGANConfig(embedding_dim=8, n_codes=8, n_hiddens=8, downsample=(2, 8, 4), image_channels=1,
                           norm_type="batch", sequence_length=4, resolution=64)
    stft_vqgan = _save_vqgan(stft_cfg, assets["dir"] / "stft_vqgan.ckpt")
    # audio grid of a 4-frame clip: (4/2, 64/8, 16/4) = 2*8*4 = 64 condition tokens
    trainer, ckpts = _run(assets, "audio", "--cond_stage_key", "stft", "--stft_vqvae", str(stft_vqgan),
                          "--data_path", str(root), "--block_size", "95", "--batch_size", "2", "--no_resume")
    ckpt = load_checkpoint(ckpts / "last.ckpt")
    cfg = ckpt["hyper_parameters"]["config"]
    assert cfg["cond_type"] == "audio" and cfg["n_cond_tokens"] == 64 and cfg["n_cond_vocab"] == 8
    assert any(k.startswith("cond_stage_model.encoder.") for k in ckpt["state_dict"])
    assert math.isfinite(trainer.callback_metrics["val/loss"].item())
    model = load_transformer(ckpts / "last.ckpt")  # the audio VQGAN comes back with the transformer
    assert model.config.cond_type == "audio" and model.cond_vqgan is not None
    assert model.cond_vqgan.config.n_codes == 8 and tuple(model.cond_vqgan.config.downsample) == (2, 8, 4)


@pytest.mark.parametrize("extra, message", [
    (["--block_size", "31"], "block_size 31 is too small.*>= 32"),
    (["--block_size", "32", "--n_unmasked", "17"], "n_unmasked 17 must lie in"),
    (["--block_size", "32", "--vocab_size", "1024"], "vocab_size 1024 differs"),
    (["--block_size", "32", "--cond_stage_key", "stft"], "needs --stft_vqvae"),
])
def test_flags_are_validated_before_training(assets, extra, message):
    with pytest.raises(SystemExit, match=message):
        _run(assets, "invalid", *extra)
    assert not (assets["dir"] / "invalid" / "checkpoints").exists()


def test_release_readme_flags_parse():
    # Every flag of the README transformer commands (seeds 002 and 004) is accepted unchanged.
    argv = ("--num_workers 32 --val_check_interval 0.5 --progress_bar_refresh_rate 500 --gpus 8 "
            "--sync_batchnorm --batch_size 3 --unconditional --vqvae V.ckpt --data_path D "
            "--default_root_dir C --vocab_size 16384 "
            "--block_size 1280 --n_layer 24 --n_head 16 --n_embd 1024 --resolution 128 --sequence_length 20 "
            "--spatial_length 128 --n_unmasked 256 --max_steps 2000000 --sample_every_n_latent_frames 4 "
            "--frame_rate 8 --cond_stage_key text --stft_vqvae S.ckpt --text_cond --class_cond --vtokens "
            "--base_lr 4.5e-6 --accumulate_grad_batches 4 --image_folder --sample_every_n_frames 4").split()
    args = train_transformer.build_parser().parse_args(argv)
    assert args.n_unmasked == 256 and args.vqvae == "V.ckpt" and args.val_check_interval == 0.5


@pytest.mark.parametrize("command, latent, expected", [
    # TATS-base: 16 frames / 4 -> 4 x 16 x 16 = 1024 codes, 1 start token
    ("--unconditional --block_size 1024 --sequence_length 16", (4, 16, 16), (4, 16, 16)),
    # interpolation transformer: 20 frames -> 5 latent frames, n_unmasked = one latent frame
    ("--unconditional --block_size 1280 --sequence_length 20 --spatial_length 128 --n_unmasked 256",
     (5, 16, 16), (5, 16, 16)),
    # hierarchical AR transformer: 64 frames -> 16 latent frames, every 4th kept
    ("--unconditional --block_size 1024 --sequence_length 64 --sample_every_n_latent_frames 4 "
     "--spatial_length 128", (16, 16, 16), (4, 16, 16)),
])
def test_readme_commands_build_valid_configs(command, latent, expected):
    base = "--vocab_size 16384 --n_layer 24 --n_head 16 --n_embd 1024 --resolution 128 "
    args = train_transformer.build_parser().parse_args((base + command).split())
    cfg = build_gpt_config(args, latent, n_codes=16384, n_classes=1)
    assert cfg.latent_shape == expected and cfg.vocab_size == 16384 and cfg.block_size == args.block_size
    assert cfg.n_cond_tokens + cfg.n_latent_tokens - 1 == cfg.block_size


@pytest.mark.parametrize("kind, expected", [("linear", 1 - 3 / 4),
                                            ("cosine", 0.5 * (1 + math.cos(math.pi * 3 / 4)))])
def test_lr_decay_over_max_steps(assets, kind, expected):
    """--lr_decay: the last of 4 steps runs at the schedule's factor for progress 3/4 (the rate set before a
    step is the one it uses); the saved optimizer keeps the undecayed rate for a resumed run."""
    trainer, ckpts = _run(assets, f"decay_{kind}", "--lr_decay", kind, steps=4)
    group = trainer.optimizers[0].param_groups[0]
    lr = 4 * 1e-3  # batch 4 x --base_lr
    assert group["budget_lr"] == pytest.approx(lr) and group["lr"] == pytest.approx(lr * expected)
    saved = load_checkpoint(ckpts / "last.ckpt")["optimizer_states"][0]["param_groups"][0]
    assert saved["budget_lr"] == pytest.approx(lr)


def test_lr_decay_over_max_time():
    """Without --max_steps the budget is --max_time: progress is the share of the trainer's time spent."""
    from types import SimpleNamespace

    from pytorch_lightning.callbacks import Timer

    from tats.train.lr import BudgetLRDecay

    timer = Timer(duration=dict(seconds=100))
    timer.time_elapsed = lambda stage: 25.0
    timer.time_remaining = lambda stage: 75.0
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    trainer = SimpleNamespace(max_steps=-1, global_step=7, callbacks=[timer], optimizers=[opt])
    BudgetLRDecay("linear").on_train_batch_start(trainer, None, None, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 0.75)
    timer.time_elapsed, timer.time_remaining = (lambda stage: 90.0), (lambda stage: 10.0)
    BudgetLRDecay("linear").on_train_batch_start(trainer, None, None, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(2.0 * 0.1)  # from the undecayed rate, not compounded
    no_budget = SimpleNamespace(max_steps=-1, global_step=7, callbacks=[], optimizers=[opt])
    BudgetLRDecay("cosine").on_train_batch_start(no_budget, None, None, 0)
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # no budget: left alone
    with pytest.raises(ValueError, match="--lr_decay must be one of"):
        BudgetLRDecay("step")
