"""The release's command lines on its own data formats, at tiny sizes on the CPU: the text-conditioned
MUGEN transformer on a CoinRun folder (then text-to-video sampling), the audio-conditioned one on STFT
pickles (then the release's audio sampler), ``--smap_cond`` on an HDF5 pair, ``--vtokens --vtokens_pos``
on a token file, and a VQGAN on CoinRun semantic maps (``--smap_only``)."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import pytest
import torch

from tats.gpt.load import load_transformer
from tats.io.checkpoint import CheckpointError, load_checkpoint
from tats.vqgan.config import VQGANConfig
from tests.release_formats import (
    write_coinrun_folder,
    write_smap_hdf5,
    write_stft_drums,
    write_token_hdf5,
    write_video_hdf5,
)
from tests.tiny_models import save_vqgan, stft_vqgan_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_transformer  # noqa: E402

# the release README's transformer command, sizes shrunk (and --gpus 8 -> 0 for the CPU)
RELEASE = ("--num_workers 0 --val_check_interval 0.5 --progress_bar_refresh_rate 0 --gpus 0 --batch_size 2 "
           "--n_layer 1 --n_head 2 --n_embd 16 --max_steps 2 --limit_val_batches 1 --num_sanity_val_steps 0")


def _train(*argv: str):
    return train_transformer.main([*RELEASE.split(), *argv])


def test_mugen_text_command_trains_and_samples(tmp_path, load_script, one_thread):
    data = write_coinrun_folder(tmp_path / "coinrun", n_train=4, n_test=2, n_frames=12)
    vq = save_vqgan(tmp_path / "vqgan.ckpt")  # 8 frames of 16 px -> a (4, 2, 2) grid
    # 256 text tokens (the release's CoinRun default) + 16 video tokens - 1 = 271
    trainer = _train("--text_cond", "--cond_stage_key", "text", "--vqvae", str(vq), "--data_path", str(data),
                     "--default_root_dir", str(tmp_path / "run"), "--vocab_size", "16", "--block_size", "271",
                     "--resolution", "16", "--sequence_length", "8")
    assert trainer.global_step == 2
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    hp = load_checkpoint(ckpt)["hyper_parameters"]
    assert hp["config"]["n_cond_tokens"] == 256 and hp["config"]["cond_type"] == "text"
    assert hp["truncate_captions"] is True
    with pytest.raises(SystemExit, match=r"--block_size 270 is too small.*>= 271"):
        _train("--text_cond", "--vqvae", str(vq), "--data_path", str(data), "--block_size", "270",
               "--resolution", "16", "--sequence_length", "8", "--default_root_dir", str(tmp_path / "bad"))
    text = load_script("scripts/sample_text_cond.py")
    base = ["--gpt_ckpt", str(ckpt), "--n_sample", "1", "--greedy", "--save", str(tmp_path),
            "--device", "cpu", "--no_progress"]
    summary = text.main([*base, "--text", "Mugen jumps up to a platform", "--save_name", "given"])
    assert summary["n_sample"] == 1 and (tmp_path / "given" / "samples.npy").is_file()
    text.main([*base, "--data_path", str(data), "--n_captions", "2", "--save_name", "from_data"])
    # the test episodes' whole-episode automatic text (from frame 0: the release's "a bit" quirk)
    assert json.loads((tmp_path / "from_data" / "captions.json").read_text()) == ["Mugen walks a bit"] * 2


def test_audio_command_on_stft_pickles_trains_and_samples(tmp_path, monkeypatch, one_thread):
    stft = write_stft_drums(tmp_path / "AudioSet_Drums", {"train": ["a", "b", "c"], "test": ["d", "e"]})
    # the release's drums reader makes 96 px frames: a 32x downsample gives a 3x3 grid, 8 frames -> 4 x 9
    vq = save_vqgan(tmp_path / "vqgan.ckpt", config=VQGANConfig(
        embedding_dim=4, n_codes=16, n_hiddens=2, downsample=(2, 32, 32), norm_type="batch",
        sequence_length=8, resolution=96))
    stft_vq = save_vqgan(tmp_path / "stft_vqgan.ckpt", config=stft_vqgan_config(), seed=1)  # 4 audio tokens
    trainer = _train("--cond_stage_key", "stft", "--stft_data", "--stft_vqvae", str(stft_vq),
                     "--vqvae", str(vq), "--data_path", str(stft), "--vocab_size", "16", "--block_size", "39",
                     "--default_root_dir", str(tmp_path / "run"), "--sequence_length", "8")
    assert trainer.global_step == 2 and math.isfinite(trainer.callback_metrics["val/loss"].item())
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    assert load_checkpoint(ckpt)["hyper_parameters"]["config"]["n_cond_tokens"] == 4
    with pytest.raises(SystemExit, match=r"from its stft/ folder; pass --data_path .*AudioSet_Drums/stft"):
        _train("--cond_stage_key", "stft", "--stft_vqvae", str(stft_vq), "--vqvae", str(vq), "--data_path",
               str(tmp_path / "AudioSet_Drums"), "--block_size", "39", "--sequence_length", "8")
    # the release's sampling command under its own script name
    monkeypatch.setattr(sys, "argv", [
        "sample_vqgan_transformer_audio_cond.py", "--gpt_ckpt", str(ckpt), "--dataset", "drum", "--n_sample",
        "2", "--data_path", str(tmp_path / "AudioSet_Drums"), "--save", str(tmp_path), "--save_name", "au",
        "--device", "cpu", "--no_progress"])
    runpy.run_path(str(ROOT / "sample_vqgan_transformer_audio_cond.py"), run_name="__main__")
    sources = json.loads((tmp_path / "au" / "sources.json").read_text())
    assert [Path(p).name for p in sources] == ["d.mp4", "e.mp4"]  # the test split's videos
    assert (tmp_path / "au" / "samples.npy").is_file()


def test_smap_cond_command_trains(tmp_path, one_thread):
    video = write_video_hdf5(tmp_path / "video.h5", {"train": [9, 9], "test": [9]}, size=16)
    smap = write_smap_hdf5(tmp_path / "smap.h5", {"train": [9, 9], "test": [9]}, n_classes=5, size=16)
    vq = save_vqgan(tmp_path / "vqgan.ckpt")
    trainer = _train("--unconditional", "--smap_cond", "1", "--data_path", str(video),
                     "--data_path2", str(smap), "--image_channels2", "5", "--vqvae", str(vq),
                     "--block_size", "16", "--resolution", "16", "--sequence_length", "8",
                     "--default_root_dir", str(tmp_path / "run"))
    assert trainer.global_step == 2
    batch = next(iter(trainer.datamodule.train_dataloader()))
    assert batch["video"].shape == (2, 3, 8, 16, 16) and batch["video_smap"].shape == (2, 5, 8, 16, 16)


def test_vtokens_pos_command_trains(tmp_path, one_thread):
    tokens = write_token_hdf5(tmp_path / "tokens.h5", {"train": [6, 7, 8], "test": [6]}, grid=6)
    # 4 latent frames of 3x3 crops: 1 start token + 36 - 1 = 36 inputs
    trainer = _train("--unconditional", "--vtokens", "--vtokens_pos", "--data_path", str(tokens),
                     "--resolution", "6", "--spatial_length", "3", "--sequence_length", "4",
                     "--block_size", "36", "--base_lr", "1e-3", "--default_root_dir", str(tmp_path / "run"))
    assert trainer.global_step == 2
    ckpt = load_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt")
    emb = ckpt["state_dict"]["transformer.vtokens_pos_emb"]  # the release's name and grid
    assert emb.shape == (1, 4, 6, 6, 16) and emb.abs().sum() > 0  # trained away from its zero start
    cfg = ckpt["hyper_parameters"]["config"]
    assert cfg["latent_shape"] == [4, 3, 3] and cfg["vocab_size"] == 16384  # the release's token vocabulary
    assert not any(k.startswith("vqgan.") for k in ckpt["state_dict"])  # trained without a VQGAN
    with pytest.raises(CheckpointError, match="trained with --vtokens_pos"):
        load_transformer(tmp_path / "run" / "checkpoints" / "last.ckpt")
    with pytest.raises(SystemExit, match="--vtokens_pos needs --vtokens"):
        _train("--unconditional", "--vtokens_pos", "--data_path", str(tokens), "--sequence_length", "4")


def test_vqgan_on_coinrun_semantic_maps(tmp_path, load_script, one_thread):
    data = write_coinrun_folder(tmp_path / "coinrun", n_train=2, n_test=1, n_frames=8)
    trainer, module = load_script("train_vqgan.py").main([
        "--data_path", str(data), "--smap_only", "--use_onehot_smap", "--image_channels", "19",
        "--resolution", "16", "--sequence_length", "4", "--embedding_dim", "4", "--n_codes", "8",
        "--n_hiddens", "4", "--norm_type", "batch", "--downsample", "2", "8", "8", "--batch_size", "2",
        "--num_workers", "0", "--gpus", "0", "--max_steps", "1", "--progress_bar_refresh_rate", "0",
        "--perceptual_weight", "0", "--limit_val_batches", "1", "--num_sanity_val_steps", "0",
        "--default_root_dir", str(tmp_path / "vq")])
    assert trainer.global_step >= 1 and module.vqgan.config.image_channels == 19


def test_mugen_recipe_fits_the_release_text_length(tmp_path):
    from tats.train.flags import parse_args_with_config
    from tats.train.guards import check_transformer_budget
    from tats.train.transformer import apply_release_text_defaults

    (tmp_path / "coinrun").mkdir()
    args = parse_args_with_config(train_transformer.build_parser(), [
        "--config", str(ROOT / "configs" / "mugen.yaml"), "--data_path", str(tmp_path / "coinrun")],
        section="transformer")
    apply_release_text_defaults(args, "text")
    assert args.text_seq_len == 256 and args.block_size == 1280
    check_transformer_budget(args, "text", (4, 16, 16))  # 256 + 1024 - 1 = 1279 inputs
    args.block_size = 1024
    with pytest.raises(SystemExit, match=r"--block_size 1024 is too small.*>= 1279"):
        check_transformer_budget(args, "text", (4, 16, 16))
    torch.manual_seed(0)
