"""Train the 3D VQGAN (stage 1). Accepts the release README's command unchanged, e.g.::

    python train_vqgan.py --embedding_dim 256 --n_codes 16384 --n_hiddens 32 --downsample 4 8 8 \
        --no_random_restart --gpus 8 --sync_batchnorm --batch_size 2 --num_workers 32 \
        --accumulate_grad_batches 6 --progress_bar_refresh_rate 500 --max_steps 2000000 \
        --gradient_clip_val 1.0 --lr 3e-5 --data_path DATA --default_root_dir RUN \
        --resolution 128 --sequence_length 16 --discriminator_iter_start 10000 --norm_type batch \
        --perceptual_weight 4 --image_gan_weight 1 --video_gan_weight 1 --gan_feat_weight 4

or a recipe: ``python train_vqgan.py --config configs/ucf101.yaml --data_path DATA --default_root_dir RUN``.
Rerunning the same command resumes from the newest checkpoint in ``--default_root_dir``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    from tats.data import add_data_args
    from tats.faults import add_fault_args
    from tats.trainer import add_trainer_args
    from tats.vqgan.lightning import add_vqgan_args

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_vqgan_args(parser)
    add_data_args(parser)
    add_trainer_args(parser)
    add_fault_args(parser)
    if not any(a.dest == "frame_rate" for a in parser._actions):
        # The fork's README (seeds/002) passes --frame_rate 16: there it resamples decoded videos to that
        # many frames per second. Here clips are taken in the file's own frame rate and thinned with
        # --sample_every_n_frames; the flag is accepted so that command runs, and otherwise ignored.
        parser.add_argument("--frame_rate", type=float, default=None,
                            help="accepted for the fork's commands; ignored (use --sample_every_n_frames)")
        parser.set_defaults(frame_rate_ignored=True)
    return parser


def main(argv: Sequence[str] | None = None):
    """Parse ``argv`` (default ``sys.argv[1:]``), train; returns ``(trainer, module)``."""
    from tats.faults import check_data_flags
    from tats.trainer import parse_args_with_config
    from tats.vqgan.lightning import fit_vqgan, vqgan_config_from_args

    parser = build_parser()
    args = parse_args_with_config(parser, argv, section="vqgan")
    try:  # validate every model flag before any data or model is built
        vqgan_config_from_args(args)
    except ValueError as err:
        parser.error(str(err))
    check_data_flags(args)  # before any demo data is generated or the model built
    if getattr(args, "frame_rate_ignored", False) and args.frame_rate is not None:
        print("note: --frame_rate is accepted for compatibility and ignored; clips keep the files' own "
              "frame rate (thin them with --sample_every_n_frames)", file=sys.stderr)
    return fit_vqgan(args)


if __name__ == "__main__":
    main()
