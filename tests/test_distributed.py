"""Two-process CPU (gloo) DDP runs of the real training scripts, launched the way users launch them.

``tests/_ddp_driver.py`` calls ``train_vqgan.main`` then ``train_transformer.main`` with
``--accelerator cpu --devices 2 --strategy ddp``; Lightning's subprocess launcher re-runs that script
for rank 1. Each rank dumps its module state at the end of training and the test compares the ranks:
parameters and the whole codebook (embeddings, N, z_avg, initialized) must be bit-identical. The ranks
see different clips (DistributedSampler), so a codebook whose EMA statistics were not all-reduced, or
whose init/restart vectors were not broadcast, would differ after the last step (DDP only broadcasts
buffers at the start of each forward).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tats.data.demo import make_demo_data
from tests.tiny_models import save_vqgan

ROOT = Path(__file__).resolve().parents[1]

DDP = ["--accelerator", "cpu", "--devices", "2", "--strategy", "ddp", "--num_workers", "0",
       "--batch_size", "2", "--max_steps", "3", "--limit_train_batches", "2", "--limit_val_batches", "1",
       "--num_sanity_val_steps", "0", "--progress_bar_refresh_rate", "0"]
VQGAN = ["--embedding_dim", "8", "--n_codes", "32", "--n_hiddens", "16", "--downsample", "2", "4", "4",
         "--resolution", "16", "--sequence_length", "4", "--discriminator_iter_start", "1", "--disc_channels",
         "8", "--disc_layers", "2", "--log_videos_every_n_steps", "0", "--perceptual_weight", "0",
         "--norm_type", "batch", "--sync_batchnorm"]  # the release's flag: a warning on CPU, plain BatchNorm
GPT = ["--n_layer", "1", "--n_head", "2", "--n_embd", "16", "--sequence_length", "8", "--resolution", "16",
       "--block_size", "16", "--base_lr", "1e-3"]


@pytest.fixture(scope="module")
def ddp_dumps(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("ddp")
    demo = make_demo_data(d / "demo.h5", n_train=16, n_test=4, sequence_length=8, resolution=16,
                          progress=False)
    vq = save_vqgan(d / "tiny_vqgan.ckpt")  # (2, 8, 8) downsampling: 8 x 16^2 clips -> 16 codes
    cmd = [sys.executable, str(ROOT / "tests" / "_ddp_driver.py"),
           "vqgan", *DDP, *VQGAN, "--data_path", str(demo), "--default_root_dir", str(d / "vqgan"), ":::",
           "transformer", *DDP, *GPT, "--vqvae", str(vq), "--data_path", str(demo),
           "--default_root_dir", str(d / "gpt"), ":::",
           # two micro-batches per step, the second one NaN on rank 0 only (tests/_ddp_driver.py)
           "transformer_nan", *DDP, *GPT, "--vqvae", str(vq), "--data_path", str(demo),
           "--accumulate_grad_batches", "2", "--max_steps", "2", "--default_root_dir", str(d / "gpt_nan")]
    env = {**os.environ, "TATS_TEST_DUMP": str(d / "dump"), "OMP_NUM_THREADS": "1",
           "TATS_CACHE": str(d / "cache"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for var in ("LOCAL_RANK", "RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "SLURM_NTASKS",
                "SLURM_JOB_ID"):
        env.pop(var, None)  # a test runner inside SLURM/torchrun must not make Lightning skip the launch
    proc = subprocess.run(cmd, env=env, cwd=d, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "--sync_batchnorm ignored on CPU devices" in proc.stderr
    return d / "dump"


def _ranks(dump: Path, name: str, steps: int = 3) -> tuple[dict, dict]:
    a, b = (torch.load(dump / f"{name}_rank{r}.pt", weights_only=True) for r in (0, 1))
    assert (a["rank"], b["rank"], a["world"], b["world"]) == (0, 1, 2, 2)
    assert a["global_step"] == b["global_step"] == steps
    return a, b


def test_vqgan_ddp_ranks_hold_identical_codebooks_and_parameters(ddp_dumps):
    a, b = _ranks(ddp_dumps, "vqgan")
    codebook = [k for k in a["state"] if k.startswith("vqgan.codebook.")]
    names = ("embeddings", "N", "z_avg", "initialized")
    assert sorted(codebook) == sorted(f"vqgan.codebook.{n}" for n in names)
    for key in codebook:
        assert torch.equal(a["state"][key], b["state"][key]), key
    assert bool(a["state"]["vqgan.codebook.initialized"])
    # trained: the EMA moved the counts away from the initial 1.0
    assert not torch.allclose(a["state"]["vqgan.codebook.N"], torch.ones(32))
    params = [k for k in a["state"] if not k.startswith("vqgan.codebook.")]
    assert len(params) > 50 and any(k.endswith("running_var") for k in params)
    # weights, and the per-process BatchNorm statistics: each step starts from rank 0's (the dump shares
    # them once more after the last step, whose own batch moved each rank's)
    for key in params:
        assert torch.equal(a["state"][key], b["state"][key]), key
    # per-epoch sampler seeding: our DistributedSampler got set_epoch(0) and set_epoch(1)
    assert a["sampler"] == "DistributedSampler" and a["sampler_epochs"] == b["sampler_epochs"] == [0, 1]
    # no DDP copy of every buffer each step: the codebook all-reduces its own, and only the statistics
    # of BatchNorm layers that are not synchronised (CPU processes) are copied from rank 0
    assert a["broadcast_buffers"] is b["broadcast_buffers"] is False


def test_transformer_ddp_ranks_hold_identical_parameters(ddp_dumps):
    a, b = _ranks(ddp_dumps, "transformer")
    keys = [k for k in a["state"] if k.startswith("transformer.")]
    assert keys
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    # the frozen VQGAN stayed frozen on both ranks (eval mode: no codebook EMA step)
    assert torch.equal(a["state"]["vqgan.codebook.N"], torch.ones(16))
    # its buffers (masks, frozen VQGAN) never change: no per-step broadcast, yet equal on both ranks
    assert a["broadcast_buffers"] is b["broadcast_buffers"] is False
    assert any(k.endswith("attn.mask") for k in a["state"])  # still in the checkpoint layout


def test_a_nan_micro_batch_drops_its_window_on_every_rank(ddp_dumps):
    """Rank 0's loss is NaN at the second micro-batch of the first window. Both ranks must drop that
    window: stepping on the first micro-batch's gradients (computed under no_sync, never all-reduced)
    would update each replica with its own gradients and the ranks would differ from then on."""
    a, b = _ranks(ddp_dumps, "transformer_nan", steps=2)
    for key in a["state"]:
        assert torch.equal(a["state"][key], b["state"][key]), key
    start = torch.load(ddp_dumps / "transformer_nan_start.pt", weights_only=True)
    changed = [k for k in start if not torch.equal(start[k], a["state"][k])]
    assert any(k.startswith("transformer.") for k in changed)  # the second window did train


def test_codebook_resolves_the_process_group_at_call_time(tmp_path, monkeypatch):
    """Built before the process group exists (as in a Lightning run), the codebook still uses it."""
    import torch.distributed as dist

    from tats.vqgan.codebook import Codebook

    cb = Codebook(8, 4).train()  # constructed first: no process group yet
    calls = []

    def counted(name: str, real):
        def wrapper(tensor, *args, **kwargs):
            calls.append(name)
            return real(tensor, *args, **kwargs)

        return wrapper

    monkeypatch.setattr(dist, "all_reduce", counted("reduce", dist.all_reduce))
    monkeypatch.setattr(dist, "broadcast", counted("bcast", dist.broadcast))
    cb(torch.randn(1, 4, 1, 2, 2))
    assert calls == []  # not distributed: no collectives
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        cb.initialized.fill_(False)
        cb(torch.randn(1, 4, 1, 2, 2))
    finally:
        dist.destroy_process_group()
    # init: non-finite flag all-reduced, vectors broadcast; update: non-finite flag, counts and sums
    # all-reduced; restart broadcast (4 vectors < 8 codes)
    assert calls.count("bcast") == 2 and calls.count("reduce") == 4
