"""Plots of evaluation results (matplotlib, no display needed).

:func:`plot_quality_over_time` draws :func:`tats.metrics.long_video.measure_over_time` results: FVD,
KVD and (when measured) digit accuracy against the window's first frame, one curve per run, with each
run's real-vs-real FVD / KVD as a band (mean +- standard deviation over the draws, at least a line).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


def _band(ax, lo: float, hi: float, colour, label: str) -> None:
    if hi - lo < 1e-9 * max(abs(hi), 1.0):
        ax.axhline(lo, color=colour, linestyle="--", linewidth=1, label=label)
    else:
        ax.axhspan(lo, hi, color=colour, alpha=0.15, label=label)


def plot_quality_over_time(runs: Sequence[dict], path: str | Path, title: str | None = None) -> Path:
    """One PNG with a panel per figure (FVD, KVD, digit accuracy if any run has it); x = window start."""
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    keys = ["fvd", "kvd"] + (["digits"] if any("digits" in r["rows"][0] for r in runs) else [])
    names = {"fvd": "FVD", "kvd": "KVD", "digits": "digit accuracy (frames)"}
    fig, axes = plt.subplots(1, len(keys), figsize=(5.2 * len(keys), 4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    drawn: set[tuple] = set()  # reference lines already drawn (runs against the same real set share one)
    for i, run in enumerate(runs):
        colour = colours[i % len(colours)]
        label = f"{run.get('name', f'run {i}')} (N={run.get('n_videos', '?')}, {run.get('draws', 1)} draw(s))"
        for ax, key in zip(axes[0], keys):
            rows = [row for row in run["rows"] if key in row]  # FVD may be at fewer positions
            if not rows:
                continue
            x = [row["position"] for row in rows]
            mean = [row[key]["mean"] for row in rows]
            std = [row[key]["std"] for row in rows]
            ax.errorbar(x, mean, yerr=std if any(std) else None, marker="o", color=colour, capsize=3,
                        label=label)
            if key in run.get("real_vs_real", {}) and (key, run["real_vs_real"][key]["mean"]) not in drawn:
                ref = run["real_vs_real"][key]
                drawn.add((key, ref["mean"]))
                _band(ax, ref["mean"] - ref["std"], ref["mean"] + ref["std"], colour,
                      f"real vs real, N={run.get('n_videos', '?')}")
            if key == "digits" and "digits_real" in run and (key, run["digits_real"]) not in drawn:
                drawn.add((key, run["digits_real"]))
                ax.axhline(run["digits_real"], color=colour, linestyle=":", linewidth=1, label="real clips")
    for ax, key in zip(axes[0], keys):
        ax.set_xlabel("first frame of the window")
        ax.set_ylabel(names[key])
        ax.grid(alpha=0.3)
        if key == "digits":
            ax.set_ylim(0, 1)
    axes[0][0].legend(fontsize=7)
    if len(keys) > 2:
        axes[0][2].legend(fontsize=7)
    window = runs[0].get("window", 16)
    fig.suptitle(title or f"quality over time: {window}-frame windows vs real clips")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
