"""scripts/gpu_check.sh: the CPU smoke run (each check's CPU path at tiny sizes; the GPU-only checks parse
their command lines, then skip) and how results are reported."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("_gpu_check", ROOT / "scripts" / "gpu_check.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # (its dataclasses look their module up)
    spec.loader.exec_module(module)
    return module


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
        "fvd-gpu-vs-cpu": "PASS", "ddp-nccl-vqgan": "SKIP",
    }
    assert "0 skipped" in next(line for line in summary if "vqgan-bf16-mixed" in line)
    work = tmp_path / "work"
    for name in ("codes.h5", "gpt/checkpoints/last.ckpt", "predict/metrics.json"):
        assert (work / name).is_file(), name


def test_a_failing_check_is_reported_and_the_next_one_runs(tmp_path, monkeypatch, capsys):
    gpu_check = _load()

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


def test_without_a_gpu_only_the_smoke_run_starts(capsys):
    gpu_check = _load()
    if gpu_check.torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(SystemExit):
        gpu_check.main([])
    assert "no CUDA GPU found: use --cpu-smoke" in capsys.readouterr().err
