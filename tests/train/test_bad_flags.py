"""Bad flags and hostile files fail fast with a message naming the flag (or saying which file is which),
before any work: no demo data generated (``$TATS_CACHE`` stays empty), no checkpoint folder, no model
trained, no results folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tats.data.demo import make_demo_data
from tats.gpt.load import load_transformer
from tats.io.checkpoint import CheckpointError
from tats.train.guards import check_data_flags, check_transformer_budget
from tats.vqgan.load import load_vqgan
from tests.tiny_models import save_transformer, save_vqgan

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import train_transformer  # noqa: E402
import train_vqgan  # noqa: E402


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """An empty ``$TATS_CACHE``: the demo data would be generated under it."""
    path = tmp_path / "cache"
    monkeypatch.setenv("TATS_CACHE", str(path))
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    return dict(
        vqgan=save_vqgan(d / "vqgan.ckpt"),  # clips of 8 frames x 16^2 -> codes (4, 2, 2)
        gpt=save_transformer(d / "gpt.ckpt", "label"),
        demo=make_demo_data(d / "demo.h5", n_train=2, n_test=1, sequence_length=8, resolution=16,
                            progress=False),
    )


def _nothing_done(root: Path, cache: Path) -> None:
    assert not (root / "checkpoints").exists() and not (root / "lightning_logs").exists()
    assert not (cache / "demo").exists()  # no demo data generated


def _fails(fn, argv: list[str], capsys) -> str:
    """Run ``fn(argv)``; it must exit. Returns the message (SystemExit text or argparse's stderr)."""
    with pytest.raises((SystemExit, ValueError, CheckpointError)) as info:
        fn(argv)
    return f"{info.value} {capsys.readouterr().err}"


# ---------------------------------------------------------------------------------- train_vqgan.py
VQ = ["--gpus", "0", "--embedding_dim", "8", "--n_codes", "16", "--n_hiddens", "16", "--num_workers", "0"]


@pytest.mark.parametrize("extra, flag", [
    (["--resolution", "20", "--downsample", "4", "8", "8"], "--resolution 20"),
    (["--sequence_length", "6", "--downsample", "4", "4", "4"], "--sequence_length"),
    (["--downsample", "3", "4", "4", "--sequence_length", "6"], "--downsample"),
])
def test_vqgan_model_flags(extra, flag, tmp_path, cache, capsys):
    msg = _fails(train_vqgan.main, [*VQ, *extra, "--default_root_dir", str(tmp_path)], capsys)
    assert flag in msg
    _nothing_done(tmp_path, cache)



@pytest.mark.parametrize("extra, flag", [
    (["--data_path", "/no/such/clips.h5"], "--data_path /no/such/clips.h5: no such file"),
    (["--data_path", "DEMO", "--sequence_length", "12"], "--sequence_length 12 needs windows of 12 frames"),
    (["--sample_every_n_frames", "4"], "--sample_every_n_frames 4 gives clips of 1 frames"),  # 4 / 4
    (["--sample_every_n_frames", "0"], "--sample_every_n_frames must be >= 1"),
])
def test_vqgan_data_flags(extra, flag, files, tmp_path, cache, capsys):
    extra = [str(files["demo"]) if a == "DEMO" else a for a in extra]
    argv = [*VQ, "--resolution", "16", "--sequence_length", "4", "--downsample", "2", "4", "4", *extra,
            "--default_root_dir", str(tmp_path)]
    assert flag in _fails(train_vqgan.main, argv, capsys)
    _nothing_done(tmp_path, cache)


def test_data_flag_checks_directly(files):
    import argparse

    ok = argparse.Namespace(data_path=str(files["demo"]), sequence_length=8, sample_every_n_frames=1,
                            batch_size=2)
    check_data_flags(ok)  # 8 frames fit the 8-frame videos
    check_data_flags(argparse.Namespace(**{**vars(ok), "sample_every_n_frames": 2}))  # a window of 8, T = 4
    with pytest.raises(SystemExit, match="needs windows of 10 frames.*longest training video .* has 8"):
        check_data_flags(argparse.Namespace(**{**vars(ok), "sequence_length": 10}))
    with pytest.raises(SystemExit, match="--batch_size must be >= 1"):
        check_data_flags(argparse.Namespace(**{**vars(ok), "batch_size": 0}))
    budget = argparse.Namespace(block_size=16, n_unmasked=0, text_seq_len=6, sample_every_n_latent_frames=0)
    check_transformer_budget(budget, "label", (4, 2, 2))  # 1 + 16 - 1 = 16
    with pytest.raises(SystemExit, match="--block_size 16 is too small: 6 condition"):
        check_transformer_budget(budget, "text", (4, 2, 2))
    check_transformer_budget(argparse.Namespace(**{**vars(budget), "sample_every_n_latent_frames": 2}),
                             "text", (4, 2, 2))  # 6 + 8 - 1 = 13
    with pytest.raises(SystemExit, match="--n_unmasked 5 must lie in"):
        check_transformer_budget(argparse.Namespace(**{**vars(budget), "n_unmasked": 5}), "label", (4, 2, 2))


# ---------------------------------------------------------------------------- train_transformer.py
def _gpt_argv(files, root: Path, *extra: str) -> list[str]:
    return ["--gpus", "0", "--vqvae", str(files["vqgan"]), "--sequence_length", "8", "--resolution", "16",
            "--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--num_workers", "0",
            "--default_root_dir", str(root), *extra]



@pytest.mark.parametrize("extra, flag", [
    (["--block_size", "15"], "--block_size 15 is too small"),
    (["--block_size", "16", "--n_unmasked", "5"], "--n_unmasked 5 must lie in [0, 4]"),
    (["--block_size", "16", "--text_cond"], "--block_size 16 is too small: 77 condition"),
])
def test_transformer_token_budget_before_demo_data(extra, flag, files, tmp_path, cache, capsys):
    assert flag in _fails(train_transformer.main, _gpt_argv(files, tmp_path, *extra), capsys)
    _nothing_done(tmp_path, cache)


def test_transformer_missing_data_path(files, tmp_path, cache, capsys):
    msg = _fails(train_transformer.main, _gpt_argv(files, tmp_path, "--data_path", "/no/such/data"), capsys)
    assert "--data_path /no/such/data" in msg
    _nothing_done(tmp_path, cache)


def test_transformer_missing_vqvae_names_the_flag(files, tmp_path, cache, capsys):
    argv = _gpt_argv(files, tmp_path, "--data_path", str(files["demo"]))
    argv[argv.index("--vqvae") + 1] = "/no/such/vqgan.ckpt"
    assert "--vqvae /no/such/vqgan.ckpt: file not found" in _fails(train_transformer.main, argv, capsys)
    _nothing_done(tmp_path, cache)


# ----------------------------------------------------------------------------------- hostile files
def test_loaders_say_which_checkpoint_is_which(files):
    with pytest.raises(CheckpointError, match="is not a vqgan checkpoint: it is a transformer checkpoint"):
        load_vqgan(files["gpt"])
    with pytest.raises(CheckpointError, match="is not a transformer checkpoint: it is a VQGAN checkpoint"):
        load_transformer(files["vqgan"])


def test_train_transformer_refuses_a_transformer_as_vqvae(files, tmp_path, cache, capsys):
    argv = _gpt_argv(files, tmp_path, "--data_path", str(files["demo"]), "--block_size", "16")
    argv[argv.index("--vqvae") + 1] = str(files["gpt"])
    msg = _fails(train_transformer.main, argv, capsys)
    assert f"{files['gpt']} is not a vqgan checkpoint: it is a transformer checkpoint" in msg
    _nothing_done(tmp_path, cache)


# ----------------------------------------------------------------------------- tats.cli.sample
def _sample(files, out: Path, *extra: str, long: bool = False):
    from tats.cli.sample import main

    return main(["--gpt_ckpt", str(files["gpt"]), "--save", str(out), "--save_name", "run", "--n_sample", "1",
                 "--batch_size", "1", "--device", "cpu", "--no_progress", *extra], long=long)


@pytest.mark.parametrize("extra, flag", [
    (["--temporal_sample_pos", "4"], "--temporal_sample_pos must lie in [1, 3]"),
    (["--temporal_sample_pos", "0"], "--temporal_sample_pos must lie in [1, 3]"),
    (["--top_p", "1.5"], "--top_p must lie in (0, 1]"),
    (["--label", "20"], "--label must lie in [0, 19]"),
])
def test_sampling_flags_fail_before_sampling(extra, flag, files, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        _sample(files, tmp_path, *extra, long=True)
    assert flag in str(info.value)
    assert not (tmp_path / "run").exists()  # nothing sampled, no results folder


def test_sampling_missing_and_swapped_checkpoints(files, tmp_path):
    from tats.cli.sample import main

    with pytest.raises(SystemExit, match="--gpt_ckpt /no/such.ckpt: file not found"):
        main(["--gpt_ckpt", "/no/such.ckpt", "--save", str(tmp_path)])
    with pytest.raises(CheckpointError, match="is not a transformer checkpoint: it is a VQGAN"):
        main(["--gpt_ckpt", str(files["vqgan"]), "--save", str(tmp_path), "--device", "cpu"])
    with pytest.raises(CheckpointError, match="is not a vqgan checkpoint: it is a transformer"):
        main(["--gpt_ckpt", str(files["gpt"]), "--vqgan_ckpt", str(files["gpt"]), "--save", str(tmp_path),
              "--device", "cpu"])


def test_top_k_beyond_the_vocabulary_fails_by_name(files, tmp_path):
    with pytest.raises(SystemExit, match="--top_k 5000 exceeds the vocabulary size 36"):
        _sample(files, tmp_path, "--top_k", "5000")
    assert not (tmp_path / "run").exists()  # nothing sampled or written
    assert _sample(files, tmp_path, "--top_k", "36")["n_sample"] == 1  # the whole vocabulary is fine
