"""Tokenizers side by side on the demo digits: the release's EMA codebook (VQ), FSQ and LFQ.

Every arm is ``scripts/demo.py``'s recipe with the same budget and the same vocabulary, 64 codes (6 bits
per latent position): VQ 64 codes of 32 channels, FSQ levels 4 4 4, LFQ 6 bits. The GAN losses start
inside the budget (``--disc_start``) so the runs show how each quantizer takes their onset. Seed 0 of
each arm runs the whole demo (VQGAN, GPT on its codes, long samples, digit accuracy and FVD per window);
the other seeds train the VQGAN only, for the spread of the reconstruction figures. Reported per run:
test PSNR / SSIM (and LPIPS when its weights are fetched), codes used, perplexity, the share of codes an
encode -> decode -> encode round trip keeps, whether a loss went non-finite, and the jump of the
reconstruction loss when the discriminators start and where it ends.

    python benchmarks/bench_quantizers.py --minutes 15                      # by time, ~50 min in all
    python benchmarks/bench_quantizers.py --vqgan_steps 1200 --transformer_steps 2200   # by steps

Writes ``--out``/summary.json, a table (table.md), the reconstructions of every arm in one figure
(reconstructions.png) and the quality-over-time curves of the three GPTs (quality_over_time.png).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
ARMS = {"vq": [], "fsq": ["--quantizer", "fsq", "--fsq_levels", "4", "4", "4"],
        "lfq": ["--quantizer", "lfq", "--lfq_bits", "6"]}
JUMP_WINDOW = 50  # steps on each side of the discriminators' start
DISC_START = 600


def _demo():
    spec = importlib.util.spec_from_file_location("demo", ROOT / "scripts" / "demo.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def loss_stability(demo, root: Path, disc_start: int) -> dict[str, Any]:
    """Non-finite logged losses; the reconstruction loss's jump when the discriminators start (mean over
    the 50 steps after / the 50 before) and where it ends (the last 100 steps / the 100 before the start)."""
    hist = demo.scalar_history(root, "train/recon_loss")
    total = demo.scalar_history(root, "train/ae_total")
    nonfinite = sum(not math.isfinite(v) for _, v in hist + total)

    def mean(lo: int, hi: int) -> float | None:
        vals = [v for s, v in hist if lo <= s < hi and math.isfinite(v)]
        return statistics.mean(vals) if vals else None

    before, after = mean(disc_start - JUMP_WINDOW, disc_start), mean(disc_start, disc_start + JUMP_WINDOW)
    before_long = mean(disc_start - 2 * JUMP_WINDOW, disc_start)
    last = hist[-1][0] + 1 if hist else 0
    end = mean(last - 2 * JUMP_WINDOW, last)
    ratio = lambda a, b: None if a is None or not b else round(a / b, 3)  # noqa: E731
    return dict(nonfinite_logged=nonfinite, recon_jump_at_disc_start=ratio(after, before),
                recon_end_vs_disc_start=ratio(end, before_long), logged_steps=len(hist))


@torch.no_grad()
def recode_and_lpips(ckpt: str, clips: torch.Tensor) -> dict[str, Any]:
    """Share of codes that encode -> decode -> encode keeps; LPIPS of the reconstructions if weights
    are fetched (``scripts/fetch_weights.py --lpips``)."""
    from tats.metrics.lpips import LPIPS
    from tats.vqgan.load import load_vqgan

    vqgan = load_vqgan(ckpt)
    codes = vqgan.encode(clips)
    recon = vqgan.decode(codes).clamp(-0.5, 0.5)
    out: dict[str, Any] = dict(recode_kept=round(float((vqgan.encode(recon) == codes).float().mean()), 4))
    try:
        lpips = LPIPS.pretrained().eval()
    except FileNotFoundError:
        out["lpips"] = None
        return out
    def frames(v: torch.Tensor) -> torch.Tensor:  # (B, C, T, H, W) in [-0.5, 0.5] -> (BT, C, H, W) in [-1, 1]
        return v.transpose(1, 2).flatten(0, 1) * 2

    out["lpips"] = round(float(lpips(frames(clips), frames(recon)).mean()), 4)
    return out


def run_arm(demo, args: argparse.Namespace, quantizer: str, seed: int) -> dict[str, Any]:
    out = args.out / f"{quantizer}_seed{seed}"
    vq_flags = [*ARMS[quantizer], "--discriminator_iter_start", str(args.disc_start)]
    argv = ["--out", str(out), "--seed", str(seed), "--minutes", str(args.minutes),
            "--vqgan_args", " ".join(vq_flags), "--eval_videos", str(args.eval_videos),
            "--long_frames", str(args.long_frames)]
    if args.vqgan_steps:
        argv += ["--max_steps", str(args.vqgan_steps), "--transformer_steps", str(args.transformer_steps)]
    t0 = time.perf_counter()
    dargs = demo.parse_args(argv)
    if seed == 0 and not args.vqgan_only:
        summary = demo.main(argv)
        vq = summary["vqgan"]
        row = dict(eval=summary["eval"], over_time=summary["over_time"],
                   gpt_steps=summary["transformer"]["steps"])
    else:
        dargs.out.mkdir(parents=True, exist_ok=True)
        demo.stage_data(dargs)
        vq = demo.stage_vqgan(dargs, demo.BUDGET_SHARES["vqgan"] * args.minutes * 60)
        row = {}
    clips = demo.real_clips(dargs, 32, 8)["video"]
    row.update(quantizer=quantizer, seed=seed, disc_start=args.disc_start, vqgan_steps=vq["steps"],
               psnr_db=vq["test_psnr_db"],
               ssim=vq["test_ssim"], perplexity=vq["test_perplexity"], codes_used=vq["codes_used"],
               recon_png=next(f for f in vq["files"] if f.endswith(".png")),
               **recode_and_lpips(vq["checkpoint"], clips),
               **loss_stability(demo, out / "vqgan", args.disc_start),
               seconds=round(time.perf_counter() - t0))
    return row


def table(rows: list[dict]) -> str:
    """Markdown: per quantizer, mean +- std over seeds of the VQGAN figures, and seed 0's GPT figures."""
    lines = ["| quantizer | PSNR dB | SSIM | LPIPS | codes used (of 64) | round trip kept "
             "| recon loss at GAN start (x) | recon loss at the end (x) | non-finite "
             "| digits first -> last window | FVD first -> last |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]

    def spread(vals: list[float], fmt: str) -> str:
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{format(statistics.mean(vals), fmt)} ± {format(sd, fmt)}"

    for q in dict.fromkeys(r["quantizer"] for r in rows):
        rs = [r for r in rows if r["quantizer"] == q]
        ev = next((r["eval"] for r in rs if "eval" in r), {})
        digits = ev.get("digits", {})
        fvd = ev.get("fvd", {})
        lines.append(
            f"| {q} | {spread([r['psnr_db'] for r in rs], '.2f')} | "
            f"{spread([r['ssim'] for r in rs], '.3f')} | "
            f"{spread([r['lpips'] for r in rs], '.3f')} | "
            f"{', '.join(r['codes_used'].split('/')[0] for r in rs)} | "
            f"{spread([r['recode_kept'] for r in rs], '.3f')} | "
            f"{spread([r['recon_jump_at_disc_start'] for r in rs], '.2f')} | "
            f"{spread([r.get('recon_end_vs_disc_start') for r in rs], '.2f')} | "
            f"{sum(r['nonfinite_logged'] for r in rs)} | "
            + (f"{digits['first']:.1%} -> {digits['last']:.1%} | " if digits else "- | ")
            + (f"{fvd['first']:.0f} -> {fvd['last']:.0f} |" if fvd else "- |"))
    return "\n".join(lines)


def reconstructions_figure(rows: list[dict], path: Path) -> Path:
    """Seed 0's reconstruction sheet of every quantizer, side by side, labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seed0 = [r for r in rows if r["seed"] == 0]
    fig, axes = plt.subplots(1, len(seed0), figsize=(3.2 * len(seed0), 6.4), squeeze=False)
    for ax, r in zip(axes[0], seed0):
        ax.imshow(plt.imread(r["recon_png"]))
        ax.set_title(f"{r['quantizer']}: PSNR {r['psnr_db']:.2f} dB\nSSIM {r['ssim']:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle("test clips (rows: input, reconstruction; 8 frames each)", fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_reports(out: Path, rows: list[dict]) -> str:
    """table.md, reconstructions.png and quality_over_time.png (the GPTs' evaluations from each arm's
    demo summary) in ``out``; returns the table."""
    demo = _demo()
    for r in rows:  # (re)read the loss curves: a report made from an older summary gets every figure
        root = out / f"{r['quantizer']}_seed{r['seed']}" / "vqgan"
        if root.is_dir():
            r.update(loss_stability(demo, root, r.get("disc_start", DISC_START)))
    md = table(rows)
    (out / "table.md").write_text(md + "\n")
    reconstructions_figure(rows, out / "reconstructions.png")
    runs = []
    for r in rows:
        arm = out / f"{r['quantizer']}_seed{r['seed']}" / "summary.json"
        if r["seed"] == 0 and arm.is_file():
            ev = json.loads(arm.read_text())["models"]["autoregressive"]["evals"][0]
            runs.append(dict(ev, name=r["quantizer"]))
    if runs:
        demo.plot_quality_over_time(runs, out / "quality_over_time.png")
    return md


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("runs/bench_quantizers"))
    p.add_argument("--minutes", type=float, default=15.0,
                   help="the demo's time budget for each arm's seed 0 (the other seeds: its VQGAN share)")
    p.add_argument("--vqgan_steps", type=int, default=0,
                   help="train every VQGAN this many steps instead of by time (then --transformer_steps too)")
    p.add_argument("--transformer_steps", type=int, default=0)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--quantizers", nargs="+", choices=sorted(ARMS), default=list(ARMS))
    p.add_argument("--disc_start", type=int, default=DISC_START,
                   help="--discriminator_iter_start of every VQGAN")
    p.add_argument("--eval_videos", type=int, default=32)
    p.add_argument("--vqgan_only", action="store_true", help="train and measure the tokenizers only")
    p.add_argument("--report_only", action="store_true",
                   help="rewrite the table and figures from --out/summary.json without training")
    p.add_argument("--long_frames", type=int, default=256)
    args = p.parse_args(argv)
    if args.vqgan_steps and not args.transformer_steps:
        p.error("--vqgan_steps needs --transformer_steps")
    if args.report_only:
        rows = json.loads((args.out / "summary.json").read_text())
        print(write_reports(args.out, rows))
        return dict(rows=rows)
    demo = _demo()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for seed in range(args.seeds):  # seed 0 of every arm first: the comparison that matters most
        for q in args.quantizers:
            rows.append(run_arm(demo, args, q, seed))
            (args.out / "summary.json").write_text(json.dumps(rows, indent=2, default=float))
    md = write_reports(args.out, rows)
    print(md)
    return dict(rows=rows, table=md)


if __name__ == "__main__":
    main()
