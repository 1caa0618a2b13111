"""Video data: datasets (video files, frame folders, HDF5), preprocessing, demo data, datamodule.

Imports are lazy so that e.g. ``tats.data.demo`` does not pull in Lightning::

    from tats.data import VideoDataModule, add_data_args, make_demo_data
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "VideoDataModule": "tats.data.datamodule",
    "add_data_args": "tats.data.datamodule",
    "make_demo_data": "tats.data.demo",
    "VideoFolderDataset": "tats.data.video_folder",
    "FrameFolderDataset": "tats.data.frame_folder",
    "HDF5VideoDataset": "tats.data.hdf5",
    "HDF5VideoWriter": "tats.data.hdf5",
    "preprocess_clip": "tats.data.transforms",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tats.data' has no attribute {name!r}")


__all__ = list(_LAZY)
