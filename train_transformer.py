"""Train the time-sensitive transformer (stage 2) over a frozen VQGAN's codes.

Accepts the release README's commands unchanged; rerunning a command resumes from the newest checkpoint
in ``--default_root_dir``. Commands and conditioning: docs/training.md. The work is done by
:mod:`tats.train.transformer`.
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
