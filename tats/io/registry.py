"""The checkpoints published with the TATS release, by name: a registry (:data:`MODELS`), and fetching
them into the cache.

Wherever a checkpoint path is accepted, a name is too: :func:`resolve_checkpoint` turns it into the
cached file, downloading, checking and recording it the first time. Command lines call
:func:`resolve_args` on their checkpoint flags, then :func:`check_files` (or :func:`check_file_flag`),
so every path flag names a file before anything is loaded. docs/models.md has the names and the rules
(paths, cache folder, checks, recorded hashes, offline use).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tats.io.checkpoint import CheckpointError, checkpoint_kind, load_checkpoint
from tats.io.download import DownloadError, download, file_digest, file_lock, offline
from tats.io.fetch import cache_dir
from tats.io.hosts import download_url, drive_id, opener_for

KINDS = {"vqgan": "VQGAN", "transformer": "transformer", "i3d": "I3D"}
RECORDS = "registry_hashes.json"


class UnknownModelError(CheckpointError):
    """A name-shaped checkpoint argument that is neither a file nor a published model's name."""


@dataclass(frozen=True)
class ModelEntry:
    """One published checkpoint: what it is and where it comes from."""

    name: str
    dataset: str
    role: str  # what it is, for people (``--list``, the README's table)
    kind: str  # "vqgan", "transformer" or "i3d": what a loader must find in the file
    url: str  # the share link as published (the release's README or its code)
    filename: str  # the file's name in ``<cache>/models``
    size: int | None = None  # bytes, where known
    sha256: str | None = None  # where known; else recorded on first verification
    aliases: tuple[str, ...] = ()

    @property
    def host(self) -> str:
        return "Google Drive" if drive_id(self.url) else "Dropbox" if "dropbox" in self.url else "the web"


def _drive(file_id: str) -> str:
    return f"https://drive.google.com/file/d/{file_id}/view?usp=sharing"


def _entry(name: str, dataset: str, role: str, kind: str, url: str, **kw: Any) -> ModelEntry:
    return ModelEntry(name, dataset, role, kind, url, kw.pop("filename", f"{name}.ckpt"), **kw)


#: The release README's checkpoints (Google Drive ids and Dropbox links as published there) and the I3D
#: its FVD code fetched by Drive id (the release's ``tats/download.py``).
MODELS: tuple[ModelEntry, ...] = (
    _entry("ucf101", "UCF-101", "VQGAN", "vqgan", _drive("15Otpyr7v6Wnyw2HfQr_cuaRsBiSMd7Rh")),
    _entry("ucf101-base", "UCF-101", "TATS-base transformer, class-conditional", "transformer",
           _drive("1Nxt35mmBDuNANxHP0p8WBMWXOQ-YPkus")),
    _entry("ucf101-base-uncond", "UCF-101", "TATS-base transformer, unconditional", "transformer",
           _drive("1pQsMdO2b84m7asp_lNg44c_UE5DUC6pa")),
    _entry("sky", "Sky Time-lapse", "VQGAN (also the hierarchical models' VQGAN)", "vqgan",
           _drive("1ExV0XdJKlGP4lzn0X2W9307X-DE240iW")),
    _entry("sky-base", "Sky Time-lapse", "TATS-base transformer, unconditional", "transformer",
           _drive("1mtd_mC0ZEvImlPXAdda2-4CvE-10Ljci")),
    _entry("sky-ar", "Sky Time-lapse", "TATS-hierarchical AR transformer (sparse latent frames)",
           "transformer", _drive("15ay8Lrra6opBU4o__CnrHfR2Caq2G-1G")),
    _entry("sky-interp", "Sky Time-lapse", "TATS-hierarchical interpolation transformer", "transformer",
           _drive("1WJiH3qh1_fe3PLbzKdRKR-h6iFudtAfr")),
    _entry("taichi", "Taichi-HD", "VQGAN", "vqgan", _drive("1hcWIADkDsm916Xkxfz1YbljHU2ZAQFpQ")),
    _entry("taichi-base", "Taichi-HD", "TATS-base transformer, unconditional", "transformer",
           _drive("10j0p4PlkZwqQd7CmZmk9-4_ZboW4r03R")),
    _entry("taichi-hier", "Taichi-HD", "VQGAN of the hierarchical models (a separate file from `taichi`)",
           "vqgan", _drive("15zujnX54wfqhhIToocvyHhdpbsxcTIv0")),
    _entry("taichi-ar", "Taichi-HD", "TATS-hierarchical AR transformer (sparse latent frames)", "transformer",
           _drive("1TrjbpGwCkFhvsiQrnl5EH76HYZoWszbY")),
    _entry("taichi-interp", "Taichi-HD", "TATS-hierarchical interpolation transformer", "transformer",
           _drive("1EQnV3IqmwFsEdza7gz4PUeUqr9bINPkz")),
    _entry("mugen", "MUGEN", "VQGAN (256 px)", "vqgan",
           "https://www.dropbox.com/s/1fjfvapsre3jzjv/vqgan_mugen_256_41616_epoch%3D18-step%3D19999.ckpt?dl=1"),
    _entry("mugen-base", "MUGEN", "TATS-base transformer, text-conditional", "transformer",
           "https://www.dropbox.com/s/45y44klhv04yzx8/"
           "coinrun_vqvae_lpips_gpt_16_256_41616_19999__epoch%3D59-step%3D379999-train.ckpt?dl=1"),
    _entry("drums", "AudioSet-Drums", "video VQGAN", "vqgan", _drive("1ZpQkVUoGWShL2M8phTzyO6W9-uYPJ40J")),
    _entry("drums-stft", "AudioSet-Drums", "STFT (audio) VQGAN", "vqgan",
           _drive("1CNQLfgazb7OI_c69RWUdhO56mg-9HN-o")),
    _entry("drums-base", "AudioSet-Drums", "TATS-base transformer, audio-conditional", "transformer",
           _drive("1eHP0eSv3s-NGAv60HbF3AZsp3SBvR70u")),
    _entry("i3d", "Kinetics-400", "I3D for FVD, the release's i3d_pretrained_400.pt", "i3d",
           "https://drive.google.com/uc?export=download&id=1mQK8KD8G6UWRa5t87SRMm5PVXtlpneJT",
           filename="i3d_pretrained_400.pt", aliases=("release",)),
)

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")  # no "/", no "." suffix: never a path users type


def names(kind: str | None = None) -> list[str]:
    """Registered names (of one ``kind``: "vqgan", "transformer", "i3d"), in registry order."""
    return [m.name for m in MODELS if kind is None or m.kind == kind]


def lookup(name: str) -> ModelEntry | None:
    """The entry called ``name`` (or one of its aliases; case-insensitive), else None."""
    key = name.strip().lower()
    return next((m for m in MODELS if key == m.name or key in m.aliases), None)


def get_model(name: str) -> ModelEntry:
    """The entry called ``name``; :class:`UnknownModelError` listing the names otherwise."""
    entry = lookup(name)
    if entry is None:
        raise UnknownModelError(f"no published model is called {name!r}; names: {', '.join(names())}")
    return entry


def models_dir(cache: str | os.PathLike | None = None) -> Path:
    """Where published checkpoints are cached: ``<cache_dir>/models`` (``$TATS_CACHE/models``)."""
    return cache_dir(cache) / "models"


def cached_path(name: str, cache: str | os.PathLike | None = None) -> Path:
    """The path ``name``'s file has in the cache (whether or not it is there yet)."""
    return models_dir(cache) / get_model(name).filename


# ------------------------------------------------------------------------------ checks and records
def check_checkpoint(path: str | os.PathLike, kind: str) -> None:
    """Raise :class:`CheckpointError` unless ``path`` is a PyTorch checkpoint of ``kind``.

    Looks at the first bytes (a zip archive or a pickle), then reads the file with the weights-only
    loader, tensors memory-mapped (nothing in it runs, and a large file is not read into memory), and
    checks its keys: a VQGAN, a transformer, or an I3D state dict (``*conv3d.weight`` keys)."""
    path = Path(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK\x03\x04") or head.startswith(b"\x80")):
        raise CheckpointError(f"{path.name} is not a PyTorch checkpoint: it starts with {head!r}, neither a "
                              "zip archive nor a pickle")
    ckpt = load_checkpoint(path, mmap=zipfile.is_zipfile(path))
    if kind == "i3d":
        sd = ckpt.get("state_dict", ckpt)
        ok = isinstance(sd, dict) and any(str(k).endswith("conv3d.weight") for k in sd)
        found = "an I3D state dict" if ok else "no I3D weights (no *conv3d.weight keys)"
    else:
        found = checkpoint_kind(ckpt)
        ok = found == kind
        found = "neither VQGAN nor transformer weights" if found == "unknown" else f"a {KINDS[found]}"
    del ckpt  # release the memory map before the file is renamed
    if not ok:
        raise CheckpointError(f"{path.name} is not a {KINDS[kind]} checkpoint: it holds {found}")


def read_records(cache: str | os.PathLike | None = None) -> dict[str, dict]:
    """The sizes and sha256 recorded when each cached file was first verified (name -> record)."""
    path = models_dir(cache) / RECORDS
    try:
        with open(path, encoding="utf-8") as f:
            records = json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read the checkpoint records {path}: {err}; delete it to record "
                              "the cached files again") from None
    return records if isinstance(records, dict) else {}


def _record(entry: ModelEntry, path: Path, size: int, sha256: str, cache: str | os.PathLike | None) -> None:
    """Write ``entry``'s verified size and sha256 into the records file (atomically, under its lock)."""
    records_path = models_dir(cache) / RECORDS
    with file_lock(records_path):
        records = read_records(cache)
        records[entry.name] = {"file": path.name, "size": size, "sha256": sha256, "url": entry.url,
                               "verified": datetime.date.today().isoformat()}
        fd, tmp = tempfile.mkstemp(prefix=f".{RECORDS}.", suffix=".tmp", dir=records_path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(records, f, indent=1, sort_keys=True)
            f.write("\n")
        os.replace(tmp, records_path)


def expected(entry: ModelEntry, cache: str | os.PathLike | None = None) -> tuple[int | None, str | None, str]:
    """``(size, sha256, where from)`` the file of ``entry`` must have: the registry's values, else the
    record of its first verification, else ``(None, None, "")``."""
    if entry.sha256 is not None:
        return entry.size, entry.sha256, "registry"
    rec = read_records(cache).get(entry.name)
    if rec and rec.get("file") == entry.filename and rec.get("sha256"):
        return entry.size or rec.get("size"), rec["sha256"], f"recorded on {rec.get('verified', '?')}"
    return entry.size, None, ""


def verify_cached(entry: ModelEntry, path: Path, cache: str | os.PathLike | None = None) -> str | None:
    """None when the cached ``path`` is ``entry``'s file, else why not.

    With a known or recorded sha256 the file's size and sha256 must match it. Without one (first use
    of a downloaded or hand-placed file) it must pass :func:`check_checkpoint`, and is then recorded."""
    size, sha, _ = expected(entry, cache)
    got_size = path.stat().st_size
    if size is not None and got_size != size:
        return f"it has {got_size} bytes, expected {size}"
    if sha is not None:
        got = file_digest(path)
        return None if got == sha else f"its sha256 {got} is not the expected {sha}"
    try:
        check_checkpoint(path, entry.kind)
    except CheckpointError as err:
        return str(err)
    _record(entry, path, got_size, file_digest(path), cache)
    return None


# ----------------------------------------------------------------------------------------- fetching
def manual_hint(entry: ModelEntry, dst: Path) -> str:
    """How to put ``entry``'s file into the cache by hand."""
    return (f"download it where the network is reachable from {entry.url} (or run `python "
            f"scripts/download_models.py {entry.name}` there and copy {dst.parent}) and place it at {dst}; "
            "it is checked when first used")


def _download(
    entry: ModelEntry, dst: Path, force: bool, progress: bool, cache: str | os.PathLike | None
) -> None:
    size, sha, origin = (entry.size, entry.sha256, "registry") if force else expected(entry, cache)
    url = download_url(entry.url)
    print(f"[tats] downloading {entry.name} ({entry.dataset} {entry.role}) from {entry.host} into {dst}",
          file=sys.stderr, flush=True)
    try:
        download(url, dst, sha256=sha, size=size, desc=entry.name, progress=progress,
                 opener=opener_for(entry.url), verify=lambda p: check_checkpoint(p, entry.kind))
    except DownloadError as err:
        extra = ""
        if sha is not None and origin != "registry" and "sha256" in str(err):
            extra = (f" The file at the source differs from the one verified before ({origin}); if the "
                     f"publisher replaced it, `python scripts/download_models.py --force {entry.name}` "
                     "accepts the new one.")
        raise DownloadError(f"{entry.name}: {err}.{extra} By hand: {manual_hint(entry, dst)}") from None
    if sha is None or force:
        _record(entry, dst, dst.stat().st_size, file_digest(dst), cache)


def fetch_model(
    name: str, cache: str | os.PathLike | None = None, force: bool = False, progress: bool = True
) -> Path:
    """The verified cached file of the published model ``name``, downloaded if missing or corrupted.

    ``force`` downloads it again and records the new file even if it differs from the old record.
    Raises :class:`DownloadError` when a download fails or is refused (an HTML page, not a checkpoint,
    another sha256) and ``FileNotFoundError`` when ``$TATS_OFFLINE`` forbids the download; both say
    how to place the file by hand."""
    entry = get_model(name)
    dst = models_dir(cache) / entry.filename
    problem = None
    if not force and dst.is_file():  # checked without the lock, so DDP ranks verify in parallel
        problem = verify_cached(entry, dst, cache)
        if problem is None:
            return dst
    if offline():  # nothing is written: no lock, no download
        what = ("--force asks for a new download" if force else
                f"the cached {dst} is not {entry.name}'s file ({problem})" if problem else "it is not cached")
        raise FileNotFoundError(f"{entry.name} ({entry.dataset} {entry.role}): {what} and $TATS_OFFLINE is "
                                f"set, so it is not downloaded: {manual_hint(entry, dst)}")
    with file_lock(dst):
        if dst.is_file() and not force:  # another process may have fetched it while we waited
            problem = verify_cached(entry, dst, cache)
            if problem is None:
                return dst
            print(f"[tats] the cached {dst} is not {entry.name}'s file ({problem}): fetching it again",
                  file=sys.stderr, flush=True)
        if dst.is_file():
            dst.unlink()
        _download(entry, dst, force, progress, cache)
    return dst


T = TypeVar("T")


def resolve_checkpoint(value: T, kind: str | None = None, cache: str | os.PathLike | None = None) -> T | Path:
    """A checkpoint argument as the loaders need it: a published model's name becomes its cached file
    (fetched and verified by :func:`fetch_model`); anything else is returned unchanged.

    Unchanged: non-strings (loaded dicts, ``Path`` objects), existing files, and strings that are not
    name-shaped (a ``/`` or a suffix: a missing path is reported by the loader, as before). A
    name-shaped string that is neither raises :class:`UnknownModelError` listing the names; a name of
    another ``kind`` ("vqgan", "transformer", "i3d") raises :class:`CheckpointError` before any download.
    """
    if not isinstance(value, str) or Path(value).expanduser().is_file() or not _NAME.fullmatch(value):
        return value
    entry = lookup(value)
    listed = ", ".join(names(kind))
    what = f"{KINDS[kind]} " if kind else ""
    if entry is None:
        raise UnknownModelError(f"{value!r} is neither a file nor the name of a published {what}checkpoint; "
                                f"{what}names: {listed} (`python scripts/download_models.py --list`)")
    if kind is not None and entry.kind != kind:
        raise CheckpointError(f"{value!r} is the {entry.dataset} {entry.role}, not a {KINDS[kind]}; "
                              f"{what}names: {listed}")
    return fetch_model(entry.name, cache)


def resolve_args(args: argparse.Namespace, cache: str | os.PathLike | None = None, **flag_kinds: str) -> None:
    """Replace the published-model names among ``args``' checkpoint flags by their cached files, in place.

    ``flag_kinds`` maps each flag's attribute name to the kind it takes (``gpt_ckpt="transformer"``). A
    failure exits with a message naming the flag."""
    for flag, kind in flag_kinds.items():
        value = getattr(args, flag, None)
        try:
            resolved = resolve_checkpoint(value, kind, cache)
        except (CheckpointError, DownloadError, FileNotFoundError) as err:
            raise SystemExit(f"--{flag} {value}: {err}") from None
        if resolved is not value:
            setattr(args, flag, str(resolved))


def check_file_flag(flag: str, value: str | None, required: bool = False) -> None:
    """``SystemExit`` when ``--flag value`` names no file (or is missing while ``required``): run after
    :func:`resolve_args`, before anything is loaded."""
    if value is None:
        if required:
            raise SystemExit(f"--{flag} is required")
        return
    if not Path(value).expanduser().is_file():
        raise SystemExit(f"--{flag} {value}: file not found")


def check_files(args: argparse.Namespace, *flags: str) -> None:
    """:func:`check_file_flag` for each of ``args``' path ``flags`` that is given."""
    for flag in flags:
        check_file_flag(flag, getattr(args, flag, None))


def model_rows(cache: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per registered model for listings: the entry's fields plus ``path``, ``cached`` (the file
    is there) and ``bytes`` (its size, or None)."""
    rows = []
    for m in MODELS:
        path = models_dir(cache) / m.filename
        cached = path.is_file()
        rows.append({"name": m.name, "dataset": m.dataset, "role": m.role, "kind": m.kind, "url": m.url,
                     "host": m.host, "aliases": list(m.aliases), "path": str(path), "cached": cached,
                     "bytes": path.stat().st_size if cached else None})
    return rows
