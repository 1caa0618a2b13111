"""A training run killed with SIGKILL resumes, when rerun, from its newest checkpoint with everything
intact (step, weights, optimizer state, lr, codebook and its initialized flag); a kill during a
checkpoint save never leaves a truncated newest checkpoint behind."""

from __future__ import annotations

import copy
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import Callback

import tats.train.trainer
import tats.train.vqgan
from tats.data.demo import make_demo_data
from tats.io.checkpoint import load_checkpoint
from tats.train.resume import find_resume_checkpoint, peek_global_step
from tats.vqgan.codebook import Codebook

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

TINY = ["--gpus", "0", "--num_workers", "0", "--batch_size", "2", "--embedding_dim", "8", "--n_codes", "32",
        "--n_hiddens", "8", "--norm_type", "batch", "--downsample", "2", "4", "4", "--resolution", "16",
        "--sequence_length", "4", "--max_steps", "10000", "--discriminator_iter_start", "2",
        "--disc_channels", "8", "--disc_layers", "2",
        "--limit_val_batches", "1", "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0",
        "--log_videos_every_n_steps", "0", "--perceptual_weight", "0", "--ckpt_every_n_steps", "2"]


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TATS_CACHE": str(tmp_path / "cache"),
            "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _newest_step(ckpt_dir: Path) -> int:
    steps = [peek_global_step(p) for p in ckpt_dir.glob("step*.ckpt")] if ckpt_dir.is_dir() else []
    return max([s for s in steps if s is not None], default=-1)


class Probe(Callback):
    """Records the resumed state at the start of training, then stops after one more step."""

    def __init__(self) -> None:
        self.start: dict = {}
        self.steps_after: list[int] = []

    def on_train_start(self, trainer, pl_module) -> None:
        self.start = dict(
            global_step=trainer.global_step,
            state={k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            optimizers=[copy.deepcopy(o.state_dict()) for o in trainer.optimizers],  # tensors change in place
        )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.steps_after.append(trainer.global_step)
        trainer.should_stop = True


def _assert_same_optimizer_state(live: dict, saved: dict) -> None:
    assert [g["lr"] for g in live["param_groups"]] == [g["lr"] for g in saved["param_groups"]]
    assert live["state"].keys() == saved["state"].keys() and live["state"]
    for i, s in saved["state"].items():
        for name, value in s.items():
            assert torch.equal(torch.as_tensor(live["state"][i][name]), torch.as_tensor(value)), (i, name)


def test_sigkilled_vqgan_run_resumes_intact(tmp_path, monkeypatch):
    demo = make_demo_data(tmp_path / "demo.h5", n_train=8, n_test=2, sequence_length=4, resolution=16,
                          progress=False)
    root = tmp_path / "run"
    argv = [*TINY, "--data_path", str(demo), "--default_root_dir", str(root)]
    proc = subprocess.Popen([sys.executable, str(ROOT / "train_vqgan.py"), *argv], env=_env(tmp_path),
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 240
        while _newest_step(root / "checkpoints") < 4:
            assert proc.poll() is None, f"training ended early: {proc.stderr.read().decode()[-3000:]}"
            assert time.monotonic() < deadline, "no step >= 4 checkpoint within 240 s"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    newest = find_resume_checkpoint(root)
    saved = load_checkpoint(newest)  # loadable: never a truncated file
    assert saved["global_step"] >= 4 and bool(saved["state_dict"]["vqgan.codebook.initialized"])

    # rerun the same command (in-process, with a probe callback)
    probe = Probe()
    build = tats.train.trainer.build_trainer
    monkeypatch.setattr(tats.train.vqgan, "build_trainer",
                        lambda *a, callbacks=(), **kw: build(*a, callbacks=[*callbacks, probe], **kw))
    inits = []
    original = Codebook._init_from
    monkeypatch.setattr(Codebook, "_init_from", lambda self, flat: (inits.append(1), original(self, flat)))
    import train_vqgan

    train_vqgan.main(argv)
    assert probe.start["global_step"] == saved["global_step"]
    for key, value in saved["state_dict"].items():  # weights, codebook buffers and flag exactly as saved
        assert torch.equal(probe.start["state"][key], value), key
    assert len(probe.start["optimizers"]) == len(saved["optimizer_states"]) == 2
    for live, stored in zip(probe.start["optimizers"], saved["optimizer_states"]):
        _assert_same_optimizer_state(live, stored)
    assert saved["lr_schedulers"] == []  # the release's VQGAN has a constant lr: nothing else to restore
    assert inits == []  # the codebook was not re-initialised from the resumed batch
    assert probe.steps_after == [saved["global_step"] + 1]  # training went on from the same step


def test_kill_during_a_checkpoint_save_keeps_the_previous_file(tmp_path, monkeypatch):
    # Lightning's checkpoint I/O here is AtomicCheckpointIO, which writes through save_checkpoint
    written = []
    monkeypatch.setattr(tats.train.trainer, "save_checkpoint", lambda obj, path: written.append(path))
    tats.train.trainer.AtomicCheckpointIO().save_checkpoint({"global_step": 1}, tmp_path / "x.ckpt")
    assert written == [tmp_path / "x.ckpt"]

    ckpt_dir = tmp_path / "checkpoints"
    script = textwrap.dedent(f"""
        import os, signal, torch
        from tats.io.checkpoint import save_checkpoint  # (no Lightning import: a fast subprocess)
        ckpt = lambda step: {{"global_step": step, "state_dict": {{"w": torch.full((64, 64), float(step))}}}}
        save_checkpoint(ckpt(2), {str(ckpt_dir / "last.ckpt")!r})
        real_save = torch.save

        def dying_save(obj, f, *args, **kwargs):  # write half of the real bytes, then die
            import io
            buf = io.BytesIO()
            real_save(obj, buf, *args, **kwargs)
            f.write(buf.getvalue()[: len(buf.getvalue()) // 2])
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)

        torch.save = dying_save
        save_checkpoint(ckpt(4), {str(ckpt_dir / "last.ckpt")!r})
        save_checkpoint(ckpt(4), {str(ckpt_dir / "step00000004.ckpt")!r})
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=_env(tmp_path), capture_output=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert sorted(p.name for p in ckpt_dir.glob("*.ckpt")) == ["last.ckpt"]  # no half-written .ckpt
    assert len(list(ckpt_dir.glob(".last.ckpt.*.tmp"))) == 1  # the torn temporary file, never a candidate
    found = find_resume_checkpoint(tmp_path)
    assert found == ckpt_dir / "last.ckpt"
    ckpt = load_checkpoint(found)
    assert ckpt["global_step"] == 2 and torch.equal(ckpt["state_dict"]["w"], torch.full((64, 64), 2.0))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
