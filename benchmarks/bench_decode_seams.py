"""Do overlapping decodes of one long code sequence agree? (TATS issue 31: decoding latent frames 1-4
together and 2-5 together gives different frames for 2-4.) Windows and chunks decoded alone, with
context and cross-faded, against one whole decode, in uint8 levels (docs/long_videos.md).

    python benchmarks/bench_decode_seams.py --gpt_ckpt demo_output/transformer/checkpoints/last.ckpt
"""

from __future__ import annotations

import argparse
import json

import torch

from tats.vqgan.decode import decode_codes, overlapping_window_difference, temporal_radius


def levels(video: torch.Tensor) -> torch.Tensor:
    return (video.clamp(-0.5, 0.5) + 0.5) * 255


def border_ratio(video: torch.Tensor, chunk_frames: int) -> float:
    """Mean |frame f - frame f-1| at chunk borders (f a multiple of ``chunk_frames``) over elsewhere."""
    step = (levels(video)[:, :, 1:] - levels(video)[:, :, :-1]).abs().mean(dim=(0, 1, 3, 4))  # (T-1,)
    at = torch.zeros_like(step, dtype=torch.bool)
    at[chunk_frames - 1 :: chunk_frames] = True  # step f-1 -> f with f = k * chunk_frames
    return float(step[at].mean() / step[~at].mean())


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpt_ckpt", default=None,
                   help="sample the codes with this transformer (its VQGAN decodes)")
    p.add_argument("--vqgan_ckpt", default=None, help="the VQGAN (default: the one inside --gpt_ckpt)")
    p.add_argument("--latent_frames", type=int, default=32)
    p.add_argument("--videos", type=int, default=4)
    p.add_argument("--chunk", type=int, default=4, help="latent frames per chunk of the chunked decodes")
    p.add_argument("--top_p", type=float, default=0.9)
    p.add_argument("--cfg_scale", type=float, default=1.0, help="guidance (a model trained with --cond_drop)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the figures as JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    if args.gpt_ckpt:
        from tats.gpt.load import load_transformer
        from tats.sampling import SamplingOptions, sample_long

        model = load_transformer(args.gpt_ckpt, vqgan_ckpt=args.vqgan_ckpt)
        vqgan, t_train = model.vqgan, model.config.latent_shape[0]
        cond = torch.arange(args.videos) % max(model.config.n_cond_vocab, 1)
        options = SamplingOptions(top_p=args.top_p, cfg_scale=args.cfg_scale,
                                  generator=torch.Generator().manual_seed(args.seed))
        codes = sample_long(model, args.latent_frames, args.videos, cond if model.config.cond_type == "label"
                            else None, t_train - 1, options, progress=True)
    else:
        from tats.vqgan.load import load_vqgan

        if not args.vqgan_ckpt:
            p.error("give --gpt_ckpt (sampled codes) or --vqgan_ckpt (random codes)")
        vqgan = load_vqgan(args.vqgan_ckpt)
        t_train = vqgan.config.latent_shape[0]
        codes = torch.randint(0, vqgan.config.n_codes, (args.videos, args.latent_frames,
                                                        *vqgan.config.latent_shape[1:]))
    reach = temporal_radius(vqgan)
    dt = vqgan.config.downsample[0]
    out: dict = dict(norm_type=vqgan.config.norm_type, decoder_reach=reach, training_latent_frames=t_train,
                     latent_frames=args.latent_frames, videos=args.videos, chunk=args.chunk,
                     codes="sampled" if args.gpt_ckpt else "uniform random")
    out["windows_alone"] = overlapping_window_difference(vqgan, codes, t_train)
    out["windows_with_context"] = overlapping_window_difference(vqgan, codes, t_train, context=reach)
    with torch.inference_mode():
        whole = vqgan.decode(codes)
        for name, kw in (("chunks_alone", dict(overlap=0)), ("chunks_with_context", {}),
                         ("chunks_blended", dict(blend=True))):
            video = decode_codes(vqgan, codes, args.chunk, **kw)
            diff = (levels(video) - levels(whole)).abs()
            out[name] = dict(max_vs_whole=float(diff.max()), mean_vs_whole=float(diff.mean()),
                             border_step_ratio=border_ratio(video, args.chunk * dt))
        out["whole"] = dict(border_step_ratio=border_ratio(whole, args.chunk * dt))
    print(json.dumps(out, indent=2))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    return out


if __name__ == "__main__":
    main()
