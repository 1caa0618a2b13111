"""Convert BAIR robot pushing (TFRecords) into the release's HDF5 layout.

Input: ``softmotion30_44k/{train,test}/traj_*.tfrecords`` from
http://rail.eecs.berkeley.edu/datasets/bair_robot_pushing_dataset_v0.tar. Output: one ``.h5`` file of
30-frame 64x64 videos (``{train,test}_data``, ``{train,test}_idx``). Reading TFRecords needs TensorFlow
(``pip install tensorflow-cpu``). The layouts: docs/data.md, "Preparing public datasets".

    python datasets/prepare_bair.py --src softmotion30_44k --out data/bair.h5
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

FRAME_SHAPE = (64, 64, 3)
N_FRAMES = 30


def decode_example(features: Mapping[str, bytes], n_frames: int = N_FRAMES, key: str = "image_aux1"):
    """Frames of one record: ``features[f"{i}/{key}/encoded"]`` raw RGB bytes -> uint8 (T, 64, 64, 3)."""
    import numpy as np

    frames = []
    for i in range(n_frames):
        name = f"{i}/{key}/encoded"
        if name not in features:
            break
        frames.append(np.frombuffer(features[name], dtype=np.uint8).reshape(FRAME_SHAPE))
    if not frames:
        raise ValueError(f"record has no '{key}' frames (keys: {sorted(features)[:5]} ...)")
    return np.stack(frames)


def iter_records(files: list[Path]):
    """Yield ``{feature name: bytes}`` per TFRecord example."""
    try:
        import tensorflow as tf
    except ImportError as err:
        raise SystemExit("prepare_bair.py needs TensorFlow to read TFRecords: "
                         "pip install tensorflow-cpu") from err
    for record in tf.data.TFRecordDataset([str(f) for f in files]):
        example = tf.train.Example.FromString(record.numpy())
        yield {k: v.bytes_list.value[0] for k, v in example.features.feature.items() if v.bytes_list.value}


def main(argv: list[str] | None = None) -> None:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--src", type=Path, required=True, help="softmotion30_44k/ with train/ and test/")
    parser.add_argument("--out", type=Path, required=True, help="output .h5 file")
    args = parser.parse_args(argv)
    from tats.data.hdf5 import HDF5VideoWriter

    args.out.parent.mkdir(parents=True, exist_ok=True)
    with HDF5VideoWriter(args.out, FRAME_SHAPE, chunk_frames=N_FRAMES) as writer:
        for split in ("train", "test"):
            files = sorted((args.src / split).glob("*.tfrecords"))
            if not files:
                raise SystemExit(f"no .tfrecords under {args.src / split}")
            n = 0
            for features in iter_records(files):
                writer.add(split, decode_example(features))
                n += 1
            print(f"{split}: {n} videos from {len(files)} files")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
