"""tats.train: release flag mapping, YAML recipes, atomic checkpoint I/O, automatic resume."""

from __future__ import annotations

import argparse
import os
import shutil
import warnings

import pytest
import torch

from tats.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tats.train.flags import add_trainer_args, parse_args_with_config, trainer_kwargs
from tats.train.lr import scale_transformer_lr, scale_vqgan_lr
from tats.train.resume import find_resume_checkpoint, resolve_resume
from tats.train.trainer import (
    AtomicCheckpointIO,
    StepCheckpoint,
    build_trainer,
    devices_per_node,
    progress_bar_kwargs,
)
from tats.train.video_log import video_grid


def _args(*argv: str) -> argparse.Namespace:
    return parse_args_with_config(add_trainer_args(argparse.ArgumentParser()), list(argv))


@pytest.mark.parametrize(
    "argv, find_unused, expected",
    [
        ([], False, dict(accelerator="auto", devices=1, strategy="auto", precision="32-true")),
        (["--gpus", "0"], False, dict(accelerator="cpu", devices=1, strategy="auto")),
        (["--gpus", "1"], False, dict(accelerator="gpu", devices=1, strategy="auto")),
        (["--gpus", "8"], False, dict(accelerator="gpu", devices=8, strategy="ddp", num_nodes=1)),
        (["--gpus", "8"], True, dict(strategy="ddp_find_unused_parameters_true")),
        (["--gpus", "0,1"], False, dict(accelerator="gpu", devices=[0, 1], strategy="ddp")),
        (["--gpus", "-1"], False, dict(accelerator="gpu", devices=-1, strategy="ddp")),
        (["--gpus", "4", "--num_nodes", "2"], False, dict(devices=4, num_nodes=2, strategy="ddp")),
        (["--gpus", "1", "--num_nodes", "2"], False, dict(strategy="ddp")),
        (["--gpus", "8", "--sync_batchnorm"], False, dict(sync_batchnorm=True)),
        (["--gpus", "1", "--precision", "16"], False, dict(precision="16-mixed")),
        (["--precision", "bf16"], False, dict(precision="bf16-mixed")),
        (["--precision", "bf16-mixed", "--gpus", "0"], False,
         dict(precision="bf16-mixed", accelerator="cpu")),
        (["--precision", "32"], False, dict(precision="32-true")),
        (["--gpus", "8", "--strategy", "deepspeed_stage_2"], True, dict(strategy="deepspeed_stage_2")),
        (["--gpus", "8", "--strategy", "fsdp"], False, dict(strategy="fsdp")),
        (["--accelerator", "cpu", "--devices", "2"], False,
         dict(accelerator="cpu", devices=2, strategy="ddp")),
    ],
)
def test_release_flags_map_to_lightning2(argv, find_unused, expected):
    kw = trainer_kwargs(_args(*argv), find_unused_parameters=find_unused)
    for key, value in expected.items():
        assert kw[key] == value, (argv, key, kw)


@pytest.mark.parametrize("argv", [["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp",
                                   "--sync_batchnorm"], ["--gpus", "0", "--sync_batchnorm"]])
def test_sync_batchnorm_on_cpu_warns_and_keeps_batchnorm(argv):
    """PyTorch's SyncBatchNorm raises on CPU modules: the release's flag becomes a warning there."""
    with pytest.warns(UserWarning, match="--sync_batchnorm ignored on CPU"):
        kw = trainer_kwargs(_args(*argv))
    assert kw["sync_batchnorm"] is False and kw["accelerator"] == "cpu"


@pytest.mark.parametrize("argv", [["--gpus", "0", "--precision", "16"], ["--gpus", "2", "--devices", "2"],
                                  ["--precision", "8"], ["--gpus", "2", "--accelerator", "cpu"]])
def test_bad_flag_combinations_fail_with_a_message(argv):
    with pytest.raises(SystemExit, match="--"):
        trainer_kwargs(_args(*argv))


@pytest.mark.parametrize("argv, cuda, expected", [
    (["--devices", "auto"], 4, "ddp_find_unused_parameters_true"),  # Lightning would pick DDP over 4 GPUs
    (["--devices", "auto"], 1, "auto"),
    (["--devices", "auto", "--accelerator", "cpu"], 4, "auto"),
    (["--gpus", "-1"], 2, "ddp_find_unused_parameters_true"),
    (["--gpus", "2", "--strategy", "ddp_spawn"], 2, "ddp_spawn_find_unused_parameters_true"),
    (["--gpus", "2", "--strategy", "ddp_fork"], 2, "ddp_fork_find_unused_parameters_true"),
    (["--gpus", "2", "--strategy", "ddp_find_unused_parameters_true"], 2, "ddp_find_unused_parameters_true"),
])
def test_unused_parameters_are_tolerated_by_every_ddp_flavour(argv, cuda, expected, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: cuda)
    assert trainer_kwargs(_args(*argv), find_unused_parameters=True)["strategy"] == expected


def test_terminate_on_nan_means_stop_at_the_first_nonfinite_loss():
    from tats.faults import DEFAULT_MAX_NONFINITE_STEPS
    from tats.train.flags import add_fault_args

    def parse(*argv):
        return parse_args_with_config(add_fault_args(add_trainer_args(argparse.ArgumentParser())), list(argv))

    assert parse().max_nonfinite_steps == DEFAULT_MAX_NONFINITE_STEPS
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # mapped, so not in the "ignored flags" warning
        assert parse("--terminate_on_nan").max_nonfinite_steps == 0
        assert parse("--terminate_on_nan", "true").max_nonfinite_steps == 0
        assert parse("--terminate_on_nan", "false").max_nonfinite_steps == DEFAULT_MAX_NONFINITE_STEPS


def test_lr_uses_devices_per_node_as_the_release():
    from types import SimpleNamespace

    assert devices_per_node(SimpleNamespace(num_devices=4, num_nodes=2)) == 4  # the release's --gpus 4
    assert devices_per_node(SimpleNamespace(num_devices=1, num_nodes=1)) == 1


def test_progress_bar_and_val_interval_flags():
    assert progress_bar_kwargs(None) == ({}, [])
    assert progress_bar_kwargs(0) == ({"enable_progress_bar": False}, [])
    kw, callbacks = progress_bar_kwargs(500)
    assert kw == {} and callbacks[0].refresh_rate == 500
    assert _args("--val_check_interval", "0.5").val_check_interval == 0.5
    interval = _args("--val_check_interval", "2").val_check_interval
    assert interval == 2 and isinstance(interval, int)
    assert isinstance(_args("--val_check_interval", "1.0").val_check_interval, float)


def test_legacy_lightning15_flags_are_accepted_with_a_warning():
    with pytest.warns(UserWarning, match="weights_summary"):
        args = _args("--weights_summary", "top", "--gpus", "0", "--terminate_on_nan")
    assert trainer_kwargs(args)["accelerator"] == "cpu"


def test_lr_scaling_rules():
    # README UCF-101 VQGAN: 6 * (8/8) * (2/4) * 3e-5
    assert scale_vqgan_lr(3e-5, 6, 8, 2) == pytest.approx(9e-5)
    assert scale_vqgan_lr(3e-5, 1, 0, 4) == pytest.approx(3e-5 / 8)  # CPU counts as one device
    assert scale_transformer_lr(4.5e-6, 1, 8, 3) == pytest.approx(1.08e-4)
    assert scale_transformer_lr(4.5e-6, 2, 0, 3) == pytest.approx(2.7e-5)


def test_build_trainer_cpu(tmp_path):
    args = _args("--gpus", "0", "--default_root_dir", str(tmp_path), "--progress_bar_refresh_rate", "0",
                 "--gradient_clip_val", "1.0", "--accumulate_grad_batches", "3", "--max_steps", "5",
                 "--ckpt_every_n_steps", "7", "--limit_val_batches", "2")
    manual = build_trainer(args, monitor="val/loss", ckpt_every_n_steps=3000, manual_optimization=True)
    assert manual.gradient_clip_val is None and manual.accumulate_grad_batches == 1  # module clips itself
    assert isinstance(manual.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not manual.progress_bar_callback and manual.max_steps == 5 and manual.limit_val_batches == 2
    periodic = [c for c in manual.callbacks if isinstance(c, StepCheckpoint)]
    assert len(periodic) == 1 and periodic[0]._every_n_train_steps == 7 and periodic[0].save_last
    assert any(getattr(c, "monitor", None) == "val/loss" for c in manual.callbacks)
    auto = build_trainer(args, monitor="val/loss", ckpt_every_n_steps=3000)
    assert auto.gradient_clip_val == 1.0 and auto.accumulate_grad_batches == 3
    assert auto.logger.save_dir == str(tmp_path)
    default_every = build_trainer(_args("--gpus", "0", "--default_root_dir", str(tmp_path)), "val/loss", 3000)
    periodic = [c for c in default_every.callbacks if isinstance(c, StepCheckpoint)]
    assert periodic[0]._every_n_train_steps == 3000


@pytest.mark.parametrize("strategy, start, find_unused", [
    ("ddp", "popen", None), ("ddp_spawn", "spawn", None), ("ddp_find_unused_parameters_true", "popen", True)])
def test_ddp_without_buffer_broadcast_keeps_the_strategy_flavour(strategy, start, find_unused, tmp_path):
    """``broadcast_buffers=False`` (the transformer's constant masks and frozen VQGAN) reaches DDP's
    arguments; the start method and unused-parameter handling of the named flavour are kept."""
    from pytorch_lightning.strategies import DDPStrategy

    args = _args("--accelerator", "cpu", "--devices", "2", "--strategy", strategy,
                 "--default_root_dir", str(tmp_path))
    trainer = build_trainer(args, "val/loss", 3000, broadcast_buffers=False)
    assert isinstance(trainer.strategy, DDPStrategy) and trainer.strategy._start_method == start
    expected = {"broadcast_buffers": False, **({"find_unused_parameters": True} if find_unused else {})}
    assert trainer.strategy._ddp_kwargs == expected
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert build_trainer(args, "val/loss", 3000).strategy._ddp_kwargs.get("broadcast_buffers", True)
    single = _args("--accelerator", "cpu", "--default_root_dir", str(tmp_path))
    assert type(build_trainer(single, "val/loss", 3000, broadcast_buffers=False).strategy).__name__ == (
        "SingleDeviceStrategy")


def test_fp16_gets_one_loss_scaler_per_optimizer_when_asked(tmp_path, monkeypatch):
    """The VQGAN asks for two scalers (autoencoder, discriminator); the precision stays 16-mixed.
    (fp16 autocast is a GPU matter: the CUDA device is faked, the scalers then stay disabled.)"""
    from pytorch_lightning.plugins.precision import MixedPrecision

    import tats.train.trainer
    from tats.train.scalers import PerOptimizerGradScaler

    monkeypatch.setattr(tats.train.trainer, "autocast_device", lambda accelerator: "cuda")
    args = _args("--precision", "16", "--default_root_dir", str(tmp_path))
    two = build_trainer(args, "val/loss", 3000, manual_optimization=True, loss_scalers=2)
    plugin = two.precision_plugin
    assert isinstance(plugin, PerOptimizerGradScaler) and two.precision == "16-mixed"
    assert len(plugin.scalers) == 2 and plugin.scalers[0] is not plugin.scalers[1]
    assert plugin.scaler is plugin.scalers[0]
    assert not isinstance(build_trainer(args, "val/loss", 3000).precision_plugin, PerOptimizerGradScaler)
    bf16 = build_trainer(_args("--precision", "bf16", "--default_root_dir", str(tmp_path)), "val/loss", 3000,
                         loss_scalers=2)
    assert type(bf16.precision_plugin) is MixedPrecision and bf16.precision_plugin.scaler is None


def test_yaml_config_sets_defaults_and_command_line_wins(tmp_path):
    cfg = tmp_path / "recipe.yaml"
    cfg.write_text("max_steps: 100\nsync_batchnorm: true\nval_check_interval: 0.5\n"
                   "vqgan:\n  gradient_clip_val: 1.0\n  precision: bf16\n"
                   "transformer:\n  not_a_vqgan_flag: 3\n")
    parser = add_trainer_args(argparse.ArgumentParser())
    args = parse_args_with_config(parser, ["--config", str(cfg), "--max_steps", "7"], section="vqgan")
    assert args.max_steps == 7 and args.sync_batchnorm and args.val_check_interval == 0.5
    assert args.gradient_clip_val == 1.0 and trainer_kwargs(args)["precision"] == "bf16-mixed"
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_step: 100\n")
    with pytest.raises(SystemExit, match=r"bad\.yaml.*max_step"):
        parse_args_with_config(add_trainer_args(argparse.ArgumentParser()), ["--config", str(bad)])
    with pytest.raises(SystemExit, match="not_a_vqgan_flag"):
        parse_args_with_config(add_trainer_args(argparse.ArgumentParser()), ["--config", str(cfg)],
                               section="transformer")


def _fake_ckpt(path, step):
    save_checkpoint({"global_step": step, "state_dict": {"w": torch.full((2,), float(step))}}, path)


def test_find_resume_checkpoint_picks_the_newest(tmp_path):
    assert find_resume_checkpoint(tmp_path) is None
    d = tmp_path / "checkpoints"
    d.mkdir()
    _fake_ckpt(d / "step00000002.ckpt", 2)
    _fake_ckpt(d / "best-step00000003.ckpt", 3)
    _fake_ckpt(d / "step00000004.ckpt", 4)
    (d / "broken.ckpt").write_bytes(b"PK\x03\x04 truncated")  # a half-written file from another writer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert find_resume_checkpoint(tmp_path).name == "step00000004.ckpt"
        _fake_ckpt(d / "last.ckpt", 4)  # same step: last.ckpt preferred
        os.utime(d / "last.ckpt", (1, 1))  # even when older on disk
        assert find_resume_checkpoint(tmp_path).name == "last.ckpt"
        _fake_ckpt(d / "step00000006.ckpt", 6)  # a higher step beats last.ckpt
        assert find_resume_checkpoint(tmp_path).name == "step00000006.ckpt"
        args = _args("--default_root_dir", str(tmp_path))
        assert resolve_resume(args, log=lambda *a: None).endswith("step00000006.ckpt")
        assert resolve_resume(_args("--default_root_dir", str(tmp_path), "--no_resume")) is None
        explicit = _args("--default_root_dir", str(tmp_path),
                         "--resume_from_checkpoint", str(d / "step00000002.ckpt"))
        assert resolve_resume(explicit, log=lambda *a: None).endswith("step00000002.ckpt")
    with pytest.raises(CheckpointError, match="--resume_from_checkpoint"):
        resolve_resume(_args("--resume_from_checkpoint", str(tmp_path / "missing.ckpt")))


def test_torn_temp_files_of_a_killed_save_are_removed_at_start(tmp_path):
    ckpt_dir = tmp_path / "checkpoints"
    ckpt_dir.mkdir()
    _fake_ckpt(ckpt_dir / "last.ckpt", 5)
    torn = [ckpt_dir / ".last.ckpt.k2j3h4.tmp", ckpt_dir / ".step00000006.ckpt.abc.tmp"]
    for path in torn:
        path.write_bytes(b"PK\x03\x04 half a zip")
    other = ckpt_dir / "notes.tmp"
    other.write_text("not ours")
    logs = []
    args = argparse.Namespace(default_root_dir=str(tmp_path), resume_from_checkpoint=None, no_resume=True)
    assert resolve_resume(args, log=logs.append) is None  # --no_resume cleans up too
    assert not any(p.exists() for p in torn) and other.exists() and (ckpt_dir / "last.ckpt").exists()
    assert "removed 2 partial checkpoint" in logs[0]


def test_atomic_save_keeps_the_old_file_when_interrupted(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "ckpts" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(3)}, path)

    def crashing_save(obj, f, *a, **k):
        f.write(b"PK\x03\x04 partial bytes")  # part of a file, then the "crash"
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    old = io.load_checkpoint(path)
    assert old["global_step"] == 1 and torch.equal(old["w"], torch.ones(3))
    assert sorted(p.name for p in path.parent.iterdir()) == ["last.ckpt"]  # no temp file left behind


def test_checkpoint_io_round_trip_and_refusal(tmp_path):
    io = AtomicCheckpointIO()
    obj = {"global_step": 5, "state_dict": {"a": torch.arange(4.0)}, "hyper_parameters": {"config": {"n": 1}},
           "args": argparse.Namespace(gpus=8, lr=3e-5)}
    io.save_checkpoint(obj, tmp_path / "x.ckpt")
    back = io.load_checkpoint(tmp_path / "x.ckpt", map_location=lambda storage, loc: storage)
    assert torch.equal(back["state_dict"]["a"], obj["state_dict"]["a"]) and back["args"].gpus == 8
    torch.save({"payload": argparse.ArgumentParser}, tmp_path / "evil.ckpt")  # global not allow-listed
    with pytest.raises(CheckpointError, match="evil.ckpt"):
        io.load_checkpoint(tmp_path / "evil.ckpt")


def test_lightning2_checkpoints_load_under_the_allow_list_and_resume(tmp_path):
    """A real Lightning 2 fit writes checkpoints whose every object the weights-only loader accepts, and
    rerunning with the same flags resumes at the stored global step."""
    import pytorch_lightning as pl
    from torch.utils.data import DataLoader, TensorDataset

    class Regressor(pl.LightningModule):
        def __init__(self, width: int = 3, lr: float = 0.1):
            super().__init__()
            self.save_hyperparameters()
            self.net = torch.nn.Linear(width, 1)

        def training_step(self, batch, batch_idx):
            x, y = batch
            return torch.nn.functional.mse_loss(self.net(x), y)

        def validation_step(self, batch, batch_idx):
            x, y = batch
            self.log("val/loss", torch.nn.functional.mse_loss(self.net(x), y))

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=self.hparams.lr)

    data = TensorDataset(torch.randn(16, 3), torch.randn(16, 1))
    argv = ["--gpus", "0", "--default_root_dir", str(tmp_path), "--max_steps", "3",
            "--ckpt_every_n_steps", "2", "--progress_bar_refresh_rate", "0", "--val_check_interval", "2",
            "--log_every_n_steps", "1"]

    def fit(args):
        trainer = build_trainer(args, monitor="val/loss", ckpt_every_n_steps=1000, enable_model_summary=False)
        trainer.fit(Regressor(), DataLoader(data, batch_size=4), DataLoader(data, batch_size=8),
                    ckpt_path=resolve_resume(args, log=lambda *a: None))
        return trainer

    assert fit(_args(*argv)).global_step == 3
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert "last.ckpt" in names and "step00000002.ckpt" in names and any(n.startswith("best-") for n in names)
    for name in names:
        ckpt = load_checkpoint(tmp_path / "checkpoints" / name)  # raises if anything needs more globals
        assert {"state_dict", "loops", "callbacks", "optimizer_states", "hyper_parameters"} <= set(ckpt)
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 3  # saved at max_steps
    argv[argv.index("--max_steps") + 1] = "5"
    assert fit(_args(*argv)).global_step == 5  # resumed at 3, two more steps
    assert load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 5

    # A run folder copied elsewhere resumes there and keeps last.ckpt current (no last-v1.ckpt).
    moved = tmp_path.parent / (tmp_path.name + "_moved")
    shutil.copytree(tmp_path, moved)
    argv[argv.index("--default_root_dir") + 1] = str(moved)
    argv[argv.index("--max_steps") + 1] = "7"
    assert fit(_args(*argv)).global_step == 7
    assert load_checkpoint(moved / "checkpoints" / "last.ckpt")["global_step"] == 7
    assert not list((moved / "checkpoints").glob("*-v1.ckpt"))


def test_video_grid_layout():
    video = torch.zeros(2, 3, 4, 5, 6) - 0.5  # (B, C, T, H, W)
    video[1, :, 2] = 0.5  # clip 1, frame 2 white
    grid = video_grid(video)
    assert grid.shape == (2 * 5, 4 * 6, 3) and grid.dtype == torch.uint8
    assert grid[5:, 12:18].min() == 255 and grid[:5].max() == 0 and grid[5:, :12].max() == 0


@pytest.mark.parametrize("value,seconds",
                         [("90", 90), ("00:00:15:00", 900), ("1:30", 90), ("01:00:00:01", 86401)])
def test_max_time_bounds_training(tmp_path, value, seconds):
    from pytorch_lightning.callbacks import Timer

    trainer = build_trainer(_args("--gpus", "0", "--default_root_dir", str(tmp_path), "--max_time", value),
                            "val/loss", 3000)
    timers = [c for c in trainer.callbacks if isinstance(c, Timer)]
    assert len(timers) == 1 and timers[0]._duration == seconds


@pytest.mark.parametrize("value", ["soon", "0", "-5", "1:2:3:4:5"])
def test_max_time_rejects_bad_values(value, capsys):
    with pytest.raises(SystemExit):
        _args("--max_time", value)
    assert "--max_time" in capsys.readouterr().err
