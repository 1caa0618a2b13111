"""``--seed`` makes CPU training (VQGAN and GPT) and sampling bit-identical across two runs."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tats.data.demo import make_demo_data
from tats.io.checkpoint import load_checkpoint
from tests.tiny_models import save_transformer, save_vqgan

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import train_transformer  # noqa: E402
import train_vqgan  # noqa: E402

COMMON = ["--gpus", "0", "--num_workers", "0", "--batch_size", "2", "--max_steps", "2",
          "--limit_val_batches", "1", "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0",
          "--no_resume", "--seed", "7"]


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("repro")
    return dict(dir=d, vqgan=save_vqgan(d / "vqgan.ckpt"), gpt=save_transformer(d / "gpt.ckpt", "none"),
                demo=make_demo_data(d / "demo.h5", n_train=8, n_test=2, sequence_length=8, resolution=16,
                                    progress=False))


def _assert_identical(a: Path, b: Path) -> None:
    ca, cb = load_checkpoint(a), load_checkpoint(b)
    assert ca["global_step"] == cb["global_step"] == 2
    assert ca["state_dict"].keys() == cb["state_dict"].keys()
    for key, value in ca["state_dict"].items():
        assert torch.equal(value, cb["state_dict"][key]), key
    for oa, ob in zip(ca["optimizer_states"], cb["optimizer_states"], strict=True):
        for i, state in oa["state"].items():
            for name, value in state.items():
                assert torch.equal(torch.as_tensor(value), torch.as_tensor(ob["state"][i][name])), (i, name)


def test_vqgan_training_is_bit_identical(assets):
    argv = [*COMMON, "--embedding_dim", "8", "--n_codes", "32", "--n_hiddens", "8", "--norm_type", "batch",
            "--downsample", "2", "4", "4", "--resolution", "16", "--sequence_length", "4",
            "--discriminator_iter_start", "1", "--disc_channels", "8", "--disc_layers", "2",
            "--perceptual_weight", "0", "--log_videos_every_n_steps", "0", "--data_path", str(assets["demo"])]
    roots = [assets["dir"] / f"vq{i}" for i in range(2)]
    for root in roots:
        train_vqgan.main([*argv, "--default_root_dir", str(root)])
    _assert_identical(*(r / "checkpoints" / "last.ckpt" for r in roots))
    trained = load_checkpoint(roots[0] / "checkpoints" / "last.ckpt")
    assert bool(trained["state_dict"]["vqgan.codebook.initialized"])  # the data-dependent init ran


def test_transformer_training_is_bit_identical(assets):
    argv = [*COMMON, "--vqvae", str(assets["vqgan"]), "--data_path", str(assets["demo"]),
            "--sequence_length", "8", "--resolution", "16", "--n_layer", "1", "--n_head", "2",
            "--n_embd", "16", "--block_size", "16", "--base_lr", "1e-3"]
    roots = [assets["dir"] / f"gpt{i}" for i in range(2)]
    for root in roots:
        train_transformer.main([*argv, "--default_root_dir", str(root)])
    _assert_identical(*(r / "checkpoints" / "last.ckpt" for r in roots))


def test_sampling_is_bit_identical(assets):
    from tats.cli.sample import main

    def sample(name: str, seed: str) -> np.ndarray:
        main(["--gpt_ckpt", str(assets["gpt"]), "--save", str(assets["dir"]), "--save_name", name,
              "--n_sample", "3", "--batch_size", "2", "--device", "cpu", "--no_progress", "--top_k", "8",
              "--seed", seed])
        return np.load(assets["dir"] / name / "samples.npy")

    a, b, c = sample("s1", "3"), sample("s2", "3"), sample("s3", "4")
    assert a.shape == (3, 8, 16, 16, 3) and a.dtype == np.uint8
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)  # the seed matters: sampling is not degenerate
