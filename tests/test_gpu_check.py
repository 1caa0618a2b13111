"""scripts/gpu_check.sh: the CPU smoke run (each check's CPU path at tiny sizes; the GPU-only checks parse
their command lines, then skip) and how results are reported."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_cpu_smoke_runs_every_check_that_needs_no_gpu(tmp_path):
    env = {**os.environ, "PY": sys.executable, "TATS_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "--cpu-smoke", "--work",
                           str(tmp_path / "work")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    summary = proc.stdout.split("== gpu_check summary ==")[1].strip().splitlines()
    status = dict(reversed(re.match(r"(PASS|FAIL|SKIP) ([\w-]+)", line).groups()) for line in summary)
    assert status == {
        "cuda-tests": "SKIP", "vqgan-16-mixed": "SKIP", "vqgan-bf16-mixed": "PASS", "extract-codes": "PASS",
        "transformer-compile-bf16": "PASS", "long-sampling": "PASS", "predict-frames-lpips": "PASS",
        "fvd-gpu-vs-cpu": "PASS", "ddp-nccl-vqgan": "SKIP", "host-syncs": "PASS",
        "sampling-sync-free": "SKIP", "speed-sampling": "SKIP", "train-step-ratios": "SKIP",
    }
    assert "0 skipped" in next(line for line in summary if "vqgan-bf16-mixed" in line)
    work = tmp_path / "work"
    for name in ("codes.h5", "gpt/checkpoints/last.ckpt", "predict/metrics.json"):
        assert (work / name).is_file(), name


def test_a_failing_check_is_reported_and_the_next_one_runs(tmp_path, monkeypatch, capsys, load_script):
    gpu_check = load_script("scripts/gpu_check.py")

    def broken(ctx):
        raise RuntimeError("device-side assert")

    monkeypatch.setattr(gpu_check, "prepare", lambda ctx: None)
    monkeypatch.setattr(gpu_check, "CHECKS", [("broken", broken), ("fine", lambda ctx: "ok"),
                                              ("skipped", lambda ctx: ctx.need("gpt_ckpt"))])
    assert gpu_check.main(["--cpu-smoke", "--work", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    lines = out.split("== gpu_check summary ==")[1].strip().splitlines()
    assert lines[0].startswith("FAIL broken (") and "RuntimeError: device-side assert" in lines[0]
    assert lines[1].startswith("PASS fine (") and lines[1].endswith(": ok")
    assert lines[2] == "SKIP skipped: needs the gpt_ckpt of an earlier check, which did not pass"


def test_without_a_gpu_only_the_smoke_run_starts(capsys, load_script):
    gpu_check = load_script("scripts/gpu_check.py")
    if gpu_check.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA GPU found: use --cpu-smoke" in capsys.readouterr().err


@pytest.mark.parametrize("frame", [0, 1, 3, 4])  # inside the first window and past it
def test_near_tie_analysis_rebuilds_the_window_a_token_was_drawn_from(frame, tmp_path, load_script):
    """When GPU greedy ids leave the CPU's, the check measures the CPU logits' gap at the first differing
    token. The window it rebuilds must be the one the token was drawn from: there the CPU's greedy token
    has the largest logit, so its gap to every other token is >= 0 (and 0 to itself)."""
    import torch

    from tats.gpt.load import load_transformer
    from tats.sampling import sample_long
    from tests.tiny_models import save_transformer

    gpu_check = load_script("scripts/gpu_check.py")
    model = load_transformer(save_transformer(tmp_path / "gpt.ckpt", "label"), with_vqgan=False)
    cond, pos = torch.tensor([3, 5]), 2
    ref = sample_long(model, 5, 2, cond=cond, temporal_sample_pos=pos, greedy=True, return_ids=True)
    gaps = []
    for token in range(model.config.vocab_size):
        got = ref.clone()
        got[1, frame, 1, 0] = token  # (B, n, h, w): sample 1, this latent frame, third token
        gaps.append(gpu_check._tie_gap(model, ref, got, cond, pos) if token != ref[1, frame, 1, 0] else 0.0)
    assert min(gaps) == 0.0 and sorted(gaps)[1] > 0
