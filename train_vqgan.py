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
from collections.abc import Sequence

from tats.train import vqgan  # the work: flags, checks and fit_vqgan


def build_parser() -> argparse.ArgumentParser:
    """The flags (``--help`` shows this file's docstring)."""
    return vqgan.build_parser(description=__doc__)


def main(argv: Sequence[str] | None = None):
    """Parse ``argv`` (default ``sys.argv[1:]``), train; returns ``(trainer, module)``."""
    return vqgan.fit_vqgan(vqgan.parse_args(build_parser(), argv))


if __name__ == "__main__":
    main()
