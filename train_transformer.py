"""Train the time-sensitive transformer (stage 2) over a frozen VQGAN's codes.

Accepts the release README's commands unchanged, e.g.::

    python train_transformer.py --num_workers 32 --val_check_interval 0.5 --progress_bar_refresh_rate 500 \
        --gpus 8 --sync_batchnorm --batch_size 3 --unconditional --vqvae VQGAN.ckpt --data_path DATA \
        --default_root_dir OUT --vocab_size 16384 --block_size 1024 --n_layer 24 --n_head 16 --n_embd 1024 \
        --resolution 128 --sequence_length 16 --max_steps 2000000

Conditioning: ``--unconditional``, class labels (default, ``--cond_stage_key label``), captions
(``--cond_stage_key text`` or ``--text_cond``: MUGEN/CoinRun episodes, the release's text HDF5 or our
captions) or audio (``--cond_stage_key stft --stft_vqvae STFT_VQGAN.ckpt``: the release's STFT pickles,
or STFT computed from the videos' own audio). ``--vtokens`` trains from precomputed codes (a file of
``scripts/extract_codes.py``, or the release's token file with ``--spatial_length`` crops and
``--vtokens_pos``), skipping the VQGAN.
Rerunning a command resumes from the newest checkpoint in ``--default_root_dir``.
The work is done by :mod:`tats.train.transformer`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import pytorch_lightning as pl

from tats.train import transformer
from tats.train.flags import parse_args_with_config


def build_parser() -> argparse.ArgumentParser:
    """The flags (``--help`` shows the first paragraph of this file's docstring)."""
    return transformer.build_parser(description=__doc__.split("\n\n")[0])


def main(argv: Sequence[str] | None = None) -> pl.Trainer:
    """Parse ``argv`` (default ``sys.argv[1:]``) and train; returns the trainer."""
    return transformer.fit_transformer(parse_args_with_config(build_parser(), argv, section="transformer"))


if __name__ == "__main__":
    main(sys.argv[1:])
