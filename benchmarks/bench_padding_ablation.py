"""The TATS paper's padding ablation, runnable: a time-agnostic VQGAN (replicate padding, the release's
default) against a zero-padded one (``--padding_type constant``), each with its own GPT trained on the
moving digits with the same budget, and the quality over time of their long videos in one plot.

    python benchmarks/bench_padding_ablation.py --minutes 60 --out runs/padding_ablation   # 2 CPU cores
    python benchmarks/bench_padding_ablation.py --minutes 240 --eval_videos 128 --out runs/ablation_gpu

docs/long_videos.md has the paper's argument, what each arm runs and the figures.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARMS = ("replicate", "constant")


def load_demo():
    spec = importlib.util.spec_from_file_location("demo_for_ablation", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="time budget of both arms together")
    p.add_argument("--out", type=Path, default=Path("runs/padding_ablation"))
    p.add_argument("--vqgan_args", default="", help="extra train_vqgan.py flags for both arms")
    args, demo_args = p.parse_known_args(argv)  # the rest goes to scripts/demo.py (e.g. --long_frames 512)
    if args.minutes <= 0:
        p.error(f"--minutes must be positive, got {args.minutes}")
    return args, demo_args


def main(argv: list[str] | None = None) -> dict:
    from tats.metrics.plots import plot_quality_over_time

    args, demo_args = parse_args(argv)
    demo = load_demo()
    runs, figures = [], {}
    for arm in ARMS:
        # replicate is train_vqgan.py's default: that arm is exactly the default demo with --minutes / 2
        vq = f"{'' if arm == 'replicate' else '--padding_type ' + arm} {args.vqgan_args}".strip()
        summary = demo.main(["--out", str(args.out / arm), "--minutes", str(args.minutes / len(ARMS)),
                             "--vqgan_args", vq, *demo_args])
        ev = summary["models"]["autoregressive"]["evals"][0]
        runs.append({**ev, "name": f"{arm} padding"})
        vq = summary["vqgan"]
        figures[arm] = dict(vqgan=dict(steps=vq["steps"], test_psnr_db=vq["test_psnr_db"],
                                       codes_used=vq["codes_used"]),
                            transformer=dict(steps=summary["transformer"]["steps"],
                                             val_loss=summary["transformer"]["val_loss"]),
                            headline=summary["eval"], over_time=summary["over_time"])
    plot = plot_quality_over_time(runs, args.out / "padding_ablation.png",
                                  title="replicate (time-agnostic) vs constant (zero) padding")
    result = dict(minutes=args.minutes, demo_args=shlex.join(demo_args), arms=figures, plot=str(plot))
    (args.out / "padding_ablation.json").write_text(json.dumps(result, indent=2))
    print(f"\n== padding ablation ({args.minutes:g} min) ==")
    for arm, f in figures.items():
        h = f["headline"]
        fvd = f", FVD {h['fvd']['first']:.1f} -> {h['fvd']['last']:.1f}" if "fvd" in h else ""
        print(f"{arm:>9}: VQGAN {f['vqgan']['steps']} steps ({f['vqgan']['test_psnr_db']} dB), GPT "
              f"{f['transformer']['steps']} steps; digits {h['digits']['first']:.1%} -> "
              f"{h['digits']['last']:.1%}"
              f"{fvd}")
    print(f"plot: {plot}")
    return result


if __name__ == "__main__":
    main()
