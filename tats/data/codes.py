"""Precomputed VQGAN codes: the HDF5 file written by ``scripts/extract_codes.py`` and its dataset.

Training the transformer only needs each clip's codes, so encoding the dataset once (as Latent Video
Transformer does) removes the frozen VQGAN's forward pass from every training step
(``train_transformer.py --vtokens --data_path codes.h5``). docs/data.md has the file layout
(``format = "tats-codes-v1"``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from tats.data.hdf5 import HDF5Handle

FORMAT = "tats-codes-v1"
SPLITS = ("train", "test")


def code_dtype(n_codes: int) -> np.dtype:
    """Smallest signed integer type holding codes ``0..n_codes-1`` (int16 up to 32767 codes)."""
    return np.dtype(np.int16) if n_codes <= np.iinfo(np.int16).max + 1 else np.dtype(np.int32)


class CodesWriter:
    """Append clips' codes, labels and captions to one split of a codes file, growing its datasets.

    Usage::

        with h5py.File(path, "w") as f:
            w = CodesWriter(f, "train", latent_shape=(2, 8, 8), n_codes=1024, with_text=True)
            w.append(codes (B, t, h, w), labels (B,), texts [B])
    """

    def __init__(
        self, f: h5py.File, split: str, latent_shape: tuple[int, int, int], n_codes: int, with_text: bool
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.codes = f.create_dataset(
            f"{split}_codes", shape=(0, *self.latent_shape), maxshape=(None, *self.latent_shape),
            dtype=code_dtype(n_codes), chunks=(1, *self.latent_shape),
        )
        self.labels = f.create_dataset(f"{split}_labels", shape=(0,), maxshape=(None,), dtype=np.int64)
        self.text = (
            f.create_dataset(f"{split}_text", shape=(0,), maxshape=(None,), dtype=h5py.string_dtype("utf-8"))
            if with_text
            else None
        )
        self.n_codes = n_codes

    def __len__(self) -> int:
        return self.codes.shape[0]

    def append(
        self, codes: torch.Tensor, labels: torch.Tensor | None = None, texts: Iterable[str] | None = None
    ) -> None:
        """Add a batch: ``codes (B, t, h, w)`` integers, ``labels (B,)`` (zeros when None), ``texts``
        B strings (empty when None and the file has a text column)."""
        codes_np = codes.detach().cpu().numpy()
        if codes_np.shape[1:] != self.latent_shape:
            raise ValueError(
                f"codes of shape {codes_np.shape[1:]} do not match latent_shape {self.latent_shape}"
            )
        if codes_np.min() < 0 or codes_np.max() >= self.n_codes:
            raise ValueError(
                f"codes must lie in [0, {self.n_codes}), got [{codes_np.min()}, {codes_np.max()}]"
            )
        n, b = len(self), codes_np.shape[0]
        self.codes.resize(n + b, axis=0)
        self.codes[n:] = codes_np.astype(self.codes.dtype)
        lab = np.zeros(b, np.int64) if labels is None else torch.as_tensor(labels).cpu().numpy()
        self.labels.resize(n + b, axis=0)
        self.labels[n:] = lab.reshape(b).astype(np.int64)
        if self.text is not None:
            texts = list(texts) if texts is not None else [""] * b
            if len(texts) != b:
                raise ValueError(f"got {len(texts)} captions for {b} clips")
            self.text.resize(n + b, axis=0)
            self.text[n:] = texts


def read_codes_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The attributes of a codes file as plain Python values (``vqgan_config`` decoded from JSON)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"codes file not found: {path} (write one with scripts/extract_codes.py)")
    with h5py.File(path, "r") as f:
        attrs = {k: (v.tolist() if isinstance(v, np.ndarray) else v) for k, v in f.attrs.items()}
        attrs["splits"] = {s: int(f[f"{s}_codes"].shape[0]) for s in SPLITS if f"{s}_codes" in f}
        attrs["has_text"] = all(f"{s}_text" in f for s in attrs["splits"]) and bool(attrs["splits"])
    if attrs.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a codes file written by scripts/extract_codes.py "
            f"(attrs format={attrs.get('format')!r}, expected {FORMAT!r})"
        )
    for key in ("vqgan_config",):
        if isinstance(attrs.get(key), (str, bytes)):
            attrs[key] = json.loads(attrs[key])
    attrs["latent_shape"] = tuple(int(s) for s in attrs["latent_shape"])
    return attrs


class CodesDataset(HDF5Handle, Dataset):
    """One clip's precomputed codes per item.

    Item: ``dict(codes=LongTensor (t, h, w), label=int, text=str)`` (``text`` only when the file has
    captions). The HDF5 file is opened lazily in each worker process (h5py handles do not survive
    a fork).
    """

    def __init__(self, path: str | os.PathLike, split: str = "train") -> None:
        self.path = Path(path)
        self.attrs = read_codes_attrs(self.path)
        if split not in self.attrs["splits"]:
            raise ValueError(f"{self.path} has no {split!r} split (it has {sorted(self.attrs['splits'])})")
        self.split = split
        self.train = split == "train"
        self.latent_shape: tuple[int, int, int] = self.attrs["latent_shape"]
        self.n_codes: int = int(self.attrs["n_codes"])
        self.n_classes: int = int(self.attrs.get("n_classes", 0))
        self.has_text: bool = bool(self.attrs["has_text"])
        self._len = self.attrs["splits"][split]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not -self._len <= index < self._len:
            raise IndexError(f"index {index} out of range for {self.split} codes of length {self._len}")
        f = self._h5()
        item: dict[str, Any] = {
            "codes": torch.from_numpy(f[f"{self.split}_codes"][index].astype(np.int64)),  # (t, h, w)
            "label": int(f[f"{self.split}_labels"][index]),
        }
        if self.has_text:
            text = f[f"{self.split}_text"][index]
            item["text"] = text.decode("utf-8") if isinstance(text, bytes) else str(text)
        return item

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers get a copy without the open handle
        state = self.__dict__.copy()
        state["_file"] = None
        return state


def _collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    batch: dict[str, Any] = {
        "codes": torch.stack([it["codes"] for it in items]),  # (B, t, h, w)
        "label": torch.tensor([it["label"] for it in items], dtype=torch.long),  # (B,)
    }
    if "text" in items[0]:
        batch["text"] = [it["text"] for it in items]
    return batch


class CodesDataModule(pl.LightningDataModule):
    """Train/validation loaders over a codes file (``test`` split used for validation, as the
    video datamodule does). Batches: ``dict(codes=(B, t, h, w) long, label=(B,) long, text=[B]?)``."""

    def __init__(self, path: str | os.PathLike, batch_size: int = 8, num_workers: int = 0) -> None:
        super().__init__()
        self.path = Path(path)
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.attrs = read_codes_attrs(self.path)
        self.n_classes: int = int(self.attrs.get("n_classes", 0))
        self.latent_shape: tuple[int, int, int] = self.attrs["latent_shape"]
        self.has_text: bool = bool(self.attrs["has_text"])

    def setup(self, stage: str | None = None) -> None:
        self.train_dataset = CodesDataset(self.path, "train")
        self.val_dataset = CodesDataset(self.path, "test" if "test" in self.attrs["splits"] else "train")

    def _loader(self, ds: Dataset, shuffle: bool) -> DataLoader:
        return DataLoader(
            ds, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
            collate_fn=_collate, drop_last=False, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_dataset, True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_dataset, False)


def load_codes(path: str | os.PathLike, split: str = "train") -> np.ndarray:
    """All codes of one split, ``(N, t, h, w)`` (for statistics such as :func:`unigram_entropy`)."""
    with h5py.File(path, "r") as f:
        return f[f"{split}_codes"][:]


def unigram_entropy(codes: np.ndarray | torch.Tensor, n_codes: int) -> float:
    """Entropy (nats) of the codes' empirical histogram: the cross-entropy of the best model that
    ignores context, a baseline a trained transformer must beat."""
    counts = np.bincount(np.asarray(codes).reshape(-1).astype(np.int64), minlength=n_codes).astype(np.float64)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


@torch.no_grad()
def encode_split(
    vqgan: torch.nn.Module,
    dataset: Dataset,
    writer: CodesWriter,
    batch_size: int = 8,
    device: str | torch.device = "cpu",
    num_workers: int = 0,
    passes: int = 1,
    desc: str = "encoding",
) -> int:
    """Encode every clip of ``dataset`` (items ``dict(video=(C, T, H, W), label, text?)``) with the
    frozen ``vqgan`` and append codes, labels and captions to ``writer``, ``passes`` times (training
    datasets draw a new random clip of each video per pass). Returns the number of clips written."""
    from tqdm import tqdm

    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    n = 0
    for p in range(passes):
        for batch in tqdm(loader, desc=f"{desc} ({p + 1}/{passes})" if passes > 1 else desc):
            codes = vqgan.encode(batch["video"].to(device))  # (B, t, h, w)
            writer.append(codes, batch.get("label"), batch.get("text"))
            n += codes.shape[0]
    return n
