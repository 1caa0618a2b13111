"""Does the demo VQGAN learn? Train it exactly as ``scripts/demo.py`` does, then measure it on the demo
TEST clips (eval mode: no codebook update, BatchNorm running statistics).

    OMP_NUM_THREADS=1 python scripts/vqgan_demo_quality.py --out runs/vq_quality --minutes 4
    OMP_NUM_THREADS=1 python scripts/vqgan_demo_quality.py --out runs/vq_s1 --max_steps 300 --seed 1

Passes (exit 0) when the test L1 at least halves from that of an untrained model built with the same seed,
and the perplexity of the code histogram over ALL test positions is above ``n_codes / 4``; otherwise it
exits 1 naming what failed. Writes ``quality.json`` and ``reconstructions.png`` (each test clip above its
reconstruction) under ``--out``; the run itself is in ``--out/vqgan`` (a rerun resumes it).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from einops import rearrange

ROOT = Path(__file__).resolve().parents[1]


def _load_module(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


demo = _load_module(ROOT / "scripts" / "demo.py", "demo_script")


@torch.no_grad()
def evaluate(vqgan, video: torch.Tensor, batch_size: int = 8) -> dict:
    """L1 (in [-0.5, 0.5] units), whole-set code perplexity, mean per-batch perplexity and codes used of
    ``vqgan`` (put in eval mode) on ``video (N, C, T, H, W)``; also returns ``recon`` for the first batch."""
    from tats.metrics.codebook import code_perplexity

    vqgan.eval()
    l1, codes, batch_ppl = [], [], []
    for chunk in video.split(batch_size):
        out = vqgan(chunk)
        l1.append((out["recon"].clamp(-0.5, 0.5) - chunk).abs().mean() * len(chunk))
        codes.append(out["codes"])  # (b, t, h, w)
        batch_ppl.append(float(out["perplexity"]))
        if len(codes) == 1:
            first = out["recon"].clamp(-0.5, 0.5)
    codes = torch.cat(codes)
    n_codes = vqgan.config.n_codes
    return dict(l1=round(float(sum(l1)) / len(video), 4),
                perplexity=round(code_perplexity(codes, n_codes), 2),
                perplexity_batch_mean=round(sum(batch_ppl) / len(batch_ppl), 2),
                codes_used=int(codes.unique().numel()), n_codes=n_codes, positions=codes.numel(), recon=first)


def failures(l1_start: float, l1_end: float, perplexity: float, n_codes: int) -> list[str]:
    """What the run misses of the goal (empty: it passes): L1 at least halved, perplexity > n_codes / 4."""
    bad = []
    if not l1_end <= l1_start / 2:
        bad.append(f"test L1 did not halve: {l1_start:.4f} -> {l1_end:.4f} (needs <= {l1_start / 2:.4f})")
    if not perplexity > n_codes / 4:
        bad.append(f"test code perplexity {perplexity:.2f} <= n_codes / 4 = {n_codes / 4:g}")
    return bad


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True, help="output folder (the run goes to OUT/vqgan)")
    p.add_argument("--minutes", type=float, default=4.0, help="training time (ignored with --max_steps)")
    p.add_argument("--max_steps", type=int, default=0, help="train this many steps instead of by time")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--vqgan_args", default="", help="extra train_vqgan.py flags on top of the demo recipe")
    p.add_argument("--demo_args", default="", help="extra scripts/demo.py flags (data size, resolution)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict:
    import pytorch_lightning as pl

    from tats.io.video import save_contact_sheet
    from tats.train.flags import parse_args_with_config
    from tats.train.vqgan import vqgan_config_from_args
    from tats.vqgan.load import load_vqgan
    from tats.vqgan.model import VQGAN

    args = parse_args(argv)
    dargs = demo.parse_args(["--out", str(args.out), "--seed", str(args.seed),
                             "--vqgan_args", args.vqgan_args, *args.demo_args.split()])
    argv_vq = demo.vqgan_argv(dargs)  # the demo's recipe: configs/demo.yaml + VQGAN_RECIPE + --vqgan_args
    train_vqgan = demo._load_module(ROOT / "train_vqgan.py", "train_vqgan")
    vq_args = parse_args_with_config(train_vqgan.build_parser(), argv_vq, section="vqgan")
    config = vqgan_config_from_args(vq_args)
    test = demo.real_clips(dargs, dargs.demo_test_clips, dargs.sequence_length)["video"]  # (N, C, T, R, R)

    pl.seed_everything(args.seed)
    start = evaluate(VQGAN(config), test)  # untrained, same seed: the codebook is its random init

    root = args.out / "vqgan"
    dargs.max_steps = args.max_steps
    train_vqgan.main([*argv_vq, "--default_root_dir", str(root), *demo.stage_limit(dargs, args.minutes * 60)])
    ckpt = root / "checkpoints" / "last.ckpt"
    end = evaluate(load_vqgan(ckpt), test)

    # rows: input, its reconstruction, next input, ... for 8 test clips, frames enlarged 3x
    pairs = rearrange(torch.stack([test[:8], end.pop("recon")[:8]], dim=1),
                      "b two c t h w -> (b two) c t h w")
    png = save_contact_sheet(F.interpolate(pairs, scale_factor=(1, 3, 3), mode="nearest"),
                             args.out / "reconstructions.png", max_videos=16)
    start.pop("recon")
    result = dict(argv=argv_vq, seed=args.seed, steps=demo.checkpoint_step(ckpt),
                  train_l1_logged=demo.start_end(root, "train/l1"), test_start=start, test_end=end,
                  reconstructions=str(png))
    result["failures"] = failures(start["l1"], end["l1"], end["perplexity"], end["n_codes"])
    (args.out / "quality.json").write_text(json.dumps(result, indent=2))
    print(f"\n{result['steps']} steps; test L1 {start['l1']} -> {end['l1']}; test code perplexity "
          f"{end['perplexity']} of {end['n_codes']} over {end['positions']} positions (per-batch mean "
          f"{end['perplexity_batch_mean']}), {end['codes_used']} codes used\n"
          f"reconstructions: {png}\nresult: {args.out / 'quality.json'}")
    return result


if __name__ == "__main__":
    res = main()
    if res["failures"]:
        sys.exit("FAIL: " + "; ".join(res["failures"]))
    print("PASS: L1 halved and perplexity above n_codes / 4")
