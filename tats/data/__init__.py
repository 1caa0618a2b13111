"""Video data: datasets (video files, frame folders, HDF5, the release's formats), preprocessing, demo data,
datamodule.

Imports are lazy so that e.g. ``tats.data.demo`` does not pull in Lightning::

    from tats.data import VideoDataModule, add_data_args, make_demo_data
"""

from __future__ import annotations

from tats.lazy import lazy_getattr

_LAZY = {
    "VideoDataModule": "tats.data.datamodule",
    "add_data_args": "tats.data.datamodule",
    "make_demo_data": "tats.data.demo",
    "VideoFolderDataset": "tats.data.video_folder",
    "FrameFolderDataset": "tats.data.frame_folder",
    "HDF5VideoDataset": "tats.data.hdf5",
    "HDF5VideoWriter": "tats.data.hdf5",
    "preprocess_clip": "tats.data.transforms",
    "CoinRunDataset": "tats.data.coinrun.dataset",
    "TextHDF5Dataset": "tats.data.release_hdf5",
    "SmapHDF5Dataset": "tats.data.release_hdf5",
    "TokenHDF5Dataset": "tats.data.release_hdf5",
    "StftPickleDataset": "tats.data.stft_pickles",
}

__getattr__ = lazy_getattr(__name__, _LAZY)


__all__ = list(_LAZY)
