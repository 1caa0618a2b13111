"""Input/reconstruction clips in TensorBoard during training: :class:`VideoLoggerCallback`."""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger

from tats.io.video import float_to_uint8


def video_grid(video: torch.Tensor) -> torch.Tensor:
    """``(B, C, T, H, W)`` float in [-0.5, 0.5] -> one uint8 image ``(B*H, T*W, C)``: a clip per row."""
    frames = float_to_uint8(video.detach()).cpu()  # (B, C, T, H, W), rounded
    return rearrange(frames, "b c t h w -> (b h) (t w) c")


class VideoLoggerCallback(Callback):
    """Every ``every_n_steps`` optimizer steps, write ``pl_module.log_videos(batch)`` to TensorBoard.

    ``log_videos(batch, max_videos)`` returns ``{name: (B, C, T, H, W) in [-0.5, 0.5]}``. TensorBoard's
    ``add_video`` needs moviepy; without it each entry is written as an image with one clip per row
    (:func:`video_grid`). Rank 0 only; ``every_n_steps <= 0`` disables it.
    """

    def __init__(self, every_n_steps: int, max_videos: int = 4, fps: int = 4) -> None:
        super().__init__()
        self.every_n_steps, self.max_videos, self.fps = every_n_steps, max_videos, fps
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (self.every_n_steps <= 0 or not trainer.is_global_zero or step == self._last_step
                or step % self.every_n_steps != 0 or not hasattr(pl_module, "log_videos")):
            return
        self._last_step = step
        videos = pl_module.log_videos(batch, max_videos=self.max_videos)
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                for name, video in videos.items():
                    self._write(logger.experiment, f"train/{name}", video, step)

    def _write(self, writer: Any, tag: str, video: torch.Tensor, step: int) -> None:
        if _has_moviepy():
            clip = (video.detach().float().clamp(-0.5, 0.5) + 0.5).cpu()  # (B, C, T, H, W) in [0, 1]
            writer.add_video(tag, clip.permute(0, 2, 1, 3, 4), step, fps=self.fps)  # wants (B, T, C, H, W)
        else:
            writer.add_image(tag, video_grid(video), step, dataformats="HWC")


def _has_moviepy() -> bool:
    try:
        import moviepy  # noqa: F401
    except ImportError:
        return False
    return True
