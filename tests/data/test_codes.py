"""Precomputed VQGAN codes: the HDF5 layout, CodesDataset, and scripts/extract_codes.py."""

from __future__ import annotations

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tats.data.codes import (
    FORMAT,
    CodesDataModule,
    CodesDataset,
    CodesWriter,
    load_codes,
    read_codes_attrs,
    unigram_entropy,
)
from tats.data.demo import make_demo_data
from tats.data.hdf5 import HDF5VideoDataset
from tats.io.checkpoint import save_checkpoint
from tats.io.download import file_digest
from tats.vqgan.config import VQGANConfig
from tats.vqgan.load import load_vqgan
from tats.vqgan.model import VQGAN

ROOT = Path(__file__).resolve().parents[2]


def _write(path: Path, n_codes: int = 64, with_text: bool = True) -> dict:
    data = {s: torch.randint(0, n_codes, (n, 2, 3, 3)) for s, n in (("train", 5), ("test", 3))}
    with h5py.File(path, "w") as f:
        f.attrs.update(format=FORMAT, n_codes=n_codes, latent_shape=[2, 3, 3], n_classes=4,
                       vqgan_config=json.dumps({"n_codes": n_codes}))
        for split, codes in data.items():
            w = CodesWriter(f, split, (2, 3, 3), n_codes, with_text)
            w.append(codes[:2], torch.tensor([1, 2]), ["a cat", "a dog"] if with_text else None)
            w.append(codes[2:], torch.arange(len(codes) - 2), [f"clip {i}" for i in range(len(codes) - 2)])
    return data


def test_round_trip_and_dtypes(tmp_path):
    data = _write(tmp_path / "c.h5")
    attrs = read_codes_attrs(tmp_path / "c.h5")
    assert attrs["latent_shape"] == (2, 3, 3) and attrs["splits"] == {"train": 5, "test": 3}
    assert attrs["vqgan_config"] == {"n_codes": 64} and attrs["has_text"]
    ds = CodesDataset(tmp_path / "c.h5", "train")
    assert len(ds) == 5 and ds.n_classes == 4
    item = ds[1]
    assert item["codes"].dtype == torch.long and torch.equal(item["codes"], data["train"][1])
    assert item["label"] == 2 and item["text"] == "a dog"
    assert ds[4]["text"] == "clip 2" and ds[-1]["label"] == 2
    with h5py.File(tmp_path / "c.h5") as f:
        assert f["train_codes"].dtype == np.int16
    assert torch.equal(torch.from_numpy(load_codes(tmp_path / "c.h5", "test")).long(), data["test"])
    with pytest.raises(IndexError):
        ds[5]

    big = tmp_path / "big.h5"
    with h5py.File(big, "w") as f:
        CodesWriter(f, "train", (1, 1, 1), 40000, False).append(torch.tensor([[[[39999]]]]))
        assert f["train_codes"].dtype == np.int32 and f["train_codes"][0, 0, 0, 0] == 39999


def test_datamodule_batches(tmp_path):
    _write(tmp_path / "c.h5")
    dm = CodesDataModule(tmp_path / "c.h5", batch_size=2)
    dm.setup()
    batch = next(iter(dm.val_dataloader()))
    assert batch["codes"].shape == (2, 2, 3, 3) and batch["label"].dtype == torch.long
    assert batch["text"] == ["a cat", "a dog"]


def test_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5.*extract_codes"):
        CodesDataset(tmp_path / "missing.h5")
    with h5py.File(tmp_path / "other.h5", "w") as f:
        f["train_data"] = np.zeros(3, np.uint8)
    with pytest.raises(ValueError, match="other.h5 is not a codes file"):
        CodesDataset(tmp_path / "other.h5")
    with h5py.File(tmp_path / "new.h5", "w") as f:
        w = CodesWriter(f, "train", (2, 3, 3), 64, False)
        with pytest.raises(ValueError, match=r"codes must lie in \[0, 64\)"):
            w.append(torch.full((1, 2, 3, 3), 64))
        with pytest.raises(ValueError, match="do not match latent_shape"):
            w.append(torch.zeros(1, 2, 3, 4, dtype=torch.long))
        with pytest.raises(ValueError, match="split must be one of"):
            CodesWriter(f, "val", (2, 3, 3), 64, False)


def test_unigram_entropy():
    assert unigram_entropy(np.zeros(10, np.int64), 8) == 0.0
    assert unigram_entropy(np.arange(8).repeat(3), 8) == pytest.approx(math.log(8))
    h = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))
    assert unigram_entropy(np.array([0, 0, 0, 1]), 4) == pytest.approx(h)


def test_extract_codes_script(tmp_path, load_script):
    cfg = VQGANConfig(embedding_dim=8, n_codes=16, n_hiddens=16, downsample=(2, 4, 4), sequence_length=4,
                      resolution=16)
    vqgan_path = tmp_path / "vq.ckpt"
    save_checkpoint({"state_dict": {f"vqgan.{k}": v for k, v in VQGAN(cfg).state_dict().items()},
                     "hyper_parameters": {"config": cfg.to_dict()}}, vqgan_path)
    demo = make_demo_data(tmp_path / "demo.h5", n_train=6, n_test=3, sequence_length=4, resolution=16,
                          progress=False)
    script = load_script("scripts/extract_codes.py")
    out = script.main(["--vqgan_ckpt", str(vqgan_path), "--data_path", str(demo), "--sequence_length", "4",
                       "--resolution", "16", "--output", str(tmp_path / "codes.h5"), "--batch_size", "4",
                       "--clips_per_video", "2"])
    attrs = read_codes_attrs(out)
    assert attrs["splits"] == {"train": 12, "test": 3} and attrs["latent_shape"] == (2, 4, 4)
    assert attrs["vqgan_sha256"] == file_digest(vqgan_path) and attrs["n_classes"] == 20
    assert attrs["vqgan_config"]["downsample"] == [2, 4, 4] and attrs["has_text"]
    assert attrs["encoded_on"] == "cpu"
    # test clips are deterministic: the stored codes are the VQGAN's codes of the dataset's clips
    videos = HDF5VideoDataset(demo, train=False, sequence_length=4, resolution=16)
    expected = load_vqgan(vqgan_path).encode(torch.stack([videos[i]["video"] for i in range(3)]))
    test = CodesDataset(out, "test")
    assert torch.equal(torch.stack([test[i]["codes"] for i in range(3)]), expected)
    assert [test[i]["text"] for i in range(3)] == [videos[i]["text"] for i in range(3)]
    assert [test[i]["label"] for i in range(3)] == [videos[i]["label"] for i in range(3)]
