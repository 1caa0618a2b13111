"""What every sampling command line shares: the sampling flags, their checks, the device and seed,
and the run's output folder and recorded settings.

Used by :mod:`tats.cli.sample` (the short and long samplers behind the root scripts) and the other
samplers under ``scripts/`` (hierarchical, text, audio, frame prediction).
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tats.sampling import SamplingOptions

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
#: The release's defaults of its short, long and audio samplers (the release, "Data and evaluation
#: protocol"): 2048 samples, top-k 2048, top-p 0.92.
RELEASE_N_SAMPLE, RELEASE_TOP_K, RELEASE_TOP_P = 2048, 2048, 0.92


def add_sampling_flags(p: argparse.ArgumentParser, n_sample: int = 64, batch_size: int = 16,
                       release_filter: bool = False, decoding: bool = True) -> None:
    """Flags every sampling script shares: output folder, token filtering, batch, seed, device (``p``: a
    parser or one of its argument groups).

    ``release_filter``: ``--top_k`` / ``--top_p`` default to the release's 2048 / 0.92 (resolved by
    :func:`resolve_filter_defaults` after parsing); otherwise no filtering unless given.
    ``decoding``: also the masked-decoding and guidance flags (:func:`add_decoding_flags`).
    """
    p.add_argument("--save", default="results", help="folder for the results")
    p.add_argument("--save_name", default=None, help="sub-folder name; default encodes every setting")
    p.add_argument("--save_videos", action="store_true", help="also write every sample as its own mp4")
    if release_filter:
        p.add_argument("--top_k", type=int, default=None,
                       help=f"keep the k most likely tokens (default {RELEASE_TOP_K}, the release's; 0: all)")
        p.add_argument("--top_p", type=float, default=None,
                       help=f"nucleus sampling threshold (default {RELEASE_TOP_P}, the release's; 1: off)")
        p.set_defaults(release_filter_defaults=True)
    else:
        p.add_argument("--top_k", type=int, default=None, help="keep the k most likely tokens (0/None: all)")
        p.add_argument("--top_p", type=float, default=None, help="nucleus sampling threshold")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="argmax decoding (deterministic)")
    p.add_argument("--release_filtering", action="store_true",
                   help="the release's rule: top_p is ignored unless top_k is given")
    p.add_argument("--n_sample", type=int, default=n_sample, help="number of videos")
    p.add_argument("--batch_size", type=int, default=batch_size)
    p.add_argument("--run", type=int, default=0, help="run index (part of the folder name and seed)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="fp32",
                   help="sampling precision: bf16 autocast with a bf16 KV cache (CPU and GPU)")
    p.add_argument("--compile", action="store_true",
                   help="decode with torch.compile'd prefill and token steps (tats.sampling.compiled): "
                        "compiles once per batch size (tens of seconds), then several times faster")
    p.add_argument("--fps", type=float, default=8)
    p.add_argument("--no_progress", action="store_true")
    p.add_argument("--dataset", default=None, help="dataset name, recorded in the results (ucf101, sky, ...)")
    if decoding:
        add_decoding_flags(p)


def add_decoding_flags(p: argparse.ArgumentParser) -> None:
    """Parallel (masked) decoding and classifier-free guidance (:mod:`tats.sampling.masked`,
    :mod:`tats.sampling.guidance`)."""
    p.add_argument("--decode", choices=("auto", "autoregressive", "masked"), default="auto",
                   help="autoregressive: the GPT, one token per step; masked: parallel decoding of a model "
                        "trained with --objective masked; auto: the checkpoint's (the two are checked)")
    p.add_argument("--steps", type=int, default=12, help="masked decoding: parallel steps per window")
    p.add_argument("--mask_temperature", type=float, default=4.5,
                   help="masked decoding: temperature of the confidence noise at the first step, annealed "
                        "linearly to 0 (MaskGIT's choice temperature)")
    p.add_argument("--cfg_scale", type=float, default=1.0,
                   help="classifier-free guidance scale (a model trained with --cond_drop): 1 = none, "
                        "> 1 follows the condition more closely, at the cost of diversity")


def resolve_filter_defaults(args: argparse.Namespace) -> None:
    """Fill ``--top_k`` / ``--top_p`` with the release's defaults where the script has them and the
    command line gave none; ``args.top_k_default`` records whether top-k came from the default."""
    args.top_k_default = False
    if getattr(args, "release_filter_defaults", False):
        if args.top_k is None:
            args.top_k, args.top_k_default = RELEASE_TOP_K, True
        if args.top_p is None:
            args.top_p = RELEASE_TOP_P


def sampling_options(args: argparse.Namespace, device: torch.device) -> SamplingOptions:
    """The :class:`~tats.sampling.SamplingOptions` of :func:`add_sampling_flags`' flags, with a
    generator seeded by ``--seed + --run`` on ``device``."""
    generator = torch.Generator(device=device).manual_seed(args.seed + args.run)
    return SamplingOptions(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                           greedy=args.greedy, generator=generator, release_compat=args.release_filtering,
                           dtype=DTYPES[args.dtype], compile=args.compile,
                           cfg_scale=getattr(args, "cfg_scale", 1.0), steps=getattr(args, "steps", 12),
                           mask_temperature=getattr(args, "mask_temperature", 4.5))


def check_decoding_flags(args: argparse.Namespace, model: Any, what: str) -> None:
    """Fail fast on :func:`add_decoding_flags` that do not fit ``model`` (``what`` names it); ``--decode
    auto`` becomes the model's decoder (run folders name it)."""
    objective = getattr(model, "objective", "autoregressive")
    decode = getattr(args, "decode", "auto")
    if decode == "auto" and hasattr(args, "decode"):
        args.decode = objective
    elif decode != "auto" and decode != objective:
        hint = ("train one with train_transformer.py --objective masked" if decode == "masked"
                else "a masked model decodes in parallel only (--decode masked or auto)")
        raise SystemExit(f"--decode {decode}: {what} is a{'' if objective == 'masked' else 'n'} {objective} "
                         f"model ({hint})")
    if getattr(args, "steps", 12) < 1:
        raise SystemExit(f"--steps must be >= 1, got {args.steps}")
    if getattr(args, "mask_temperature", 0.0) < 0:
        raise SystemExit(f"--mask_temperature must be >= 0, got {args.mask_temperature}")
    scale = getattr(args, "cfg_scale", 1.0)
    if scale != 1.0 and not model.config.null_cond:
        raise SystemExit(f"--cfg_scale {scale:g}: {what} was trained without condition dropout (no null "
                         "condition); train with train_transformer.py --cond_drop 0.1, or use --cfg_scale 1")
    if scale != 1.0 and args.compile:
        raise SystemExit("--cfg_scale runs in the eager token loop: drop --compile (or use --cfg_scale 1)")
    if objective == "masked" and args.compile:
        raise SystemExit("--compile is the GPT's compiled token loop; masked decoding runs eagerly")


def check_sampling_flags(args: argparse.Namespace, vocab_size: int, what: str) -> None:
    """Fail fast on filtering flags that cannot work (``what`` names the model in messages)."""
    if args.n_sample < 1 or args.batch_size < 1:
        raise SystemExit("--n_sample and --batch_size must be >= 1")
    for flag in ("top_k", "top_k_init"):
        k = getattr(args, flag, None)
        if k is not None and k < 0:
            raise SystemExit(f"--{flag} must be >= 0 (0 disables top-k), got {k}")
        if k is not None and k > vocab_size:
            if flag == "top_k" and getattr(args, "top_k_default", False):
                # The release's default on a small vocabulary: its sampler clamped k, keeping every token.
                print(f"note: top-k {k} (the release's default) exceeds the vocabulary size {vocab_size} of "
                      f"{what}: top-k keeps every token, top-p {args.top_p} still applies")
                continue
            # The release silently clamped k; a k beyond the vocabulary given on the command line is
            # almost always a flag meant for another model, so say so before any work.
            raise SystemExit(f"--{flag} {k} exceeds the vocabulary size {vocab_size} of {what}: "
                             f"use a value <= {vocab_size} (0 disables top-k)")
    for flag in ("top_p", "top_p_init"):
        p = getattr(args, flag, None)
        if p is not None and not 0 < p <= 1:
            raise SystemExit(f"--{flag} must lie in (0, 1], got {p}")
    if args.temperature <= 0 and not args.greedy:
        raise SystemExit(f"--temperature must be > 0 (use --greedy for argmax), got {args.temperature}")


def pick_device(name: str = "auto") -> torch.device:
    """``"auto"`` -> CUDA if available, else Apple MPS, else CPU; any other name is used as given."""
    if name != "auto":
        device = torch.device(name)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise SystemExit(f"--device {name}: CUDA is not available on this machine")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise SystemExit(f"--device {name}: MPS is not available on this machine")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) for reproducible runs."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def sampling_tag(args: argparse.Namespace) -> str:
    """``greedy`` or ``topk{k}_topp{p}_temp{t}`` (plus ``_cfg{s}`` when guided, ``_masked{steps}`` for
    ``--decode masked``): the sampling settings in a run folder's name."""
    tag = "greedy" if args.greedy else f"topk{args.top_k}_topp{args.top_p}_temp{args.temperature}"
    if getattr(args, "cfg_scale", 1.0) != 1.0:
        tag += f"_cfg{args.cfg_scale:g}"
    if getattr(args, "decode", "auto") == "masked":
        tag += f"_masked{args.steps}"
    return tag


def run_dir(args: argparse.Namespace, settings: str) -> Path:
    """``--save/--save_name``, or ``--save/{settings}_n{N}_seed{S}_run{R}``: a folder name that encodes
    every setting of the run (``settings``: the model and sampling settings)."""
    return Path(args.save) / (args.save_name or f"{settings}_n{args.n_sample}_seed{args.seed}_run{args.run}")


def plain_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The flags whose values are None, numbers or strings: the settings a run's summary records."""
    return {k: v for k, v in vars(args).items() if v is None or isinstance(v, (int, float, str))}
