"""Per-folder index of video frame counts, cached in a small JSON file and refreshed when files change.

The index stores, for every video file of a split folder, its size, modification time and frame
count (from :func:`tats.data.decode.probe_video`, i.e. container metadata, never a full decode). It
does not depend on the clip length, so changing ``--sequence_length`` reuses it. Entries whose size or
mtime changed are probed again, removed files are dropped, and unreadable files are remembered with
their error so that they are reported (once per dataset) without being re-probed every run.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

from tqdm import tqdm

from tats.data import decode

INDEX_NAME = ".tats_clip_index.json"
INDEX_VERSION = 1
VIDEO_EXTENSIONS = (".mp4", ".avi", ".webm", ".mkv", ".mov", ".m4v")


def default_cache_dir() -> Path:
    """``$TATS_CACHE`` if set, else ``~/.cache/tats``."""
    return Path(os.environ.get("TATS_CACHE") or Path.home() / ".cache" / "tats")


def list_video_files(split_dir: Path, extensions: tuple[str, ...] = VIDEO_EXTENSIONS) -> list[str]:
    """Relative POSIX paths of the video files under ``split_dir`` (recursive, sorted)."""
    exts = tuple(e.lower() for e in extensions)
    files = []
    for dirpath, dirnames, filenames in os.walk(split_dir, followlinks=True):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if name.lower().endswith(exts) and not name.startswith("."):
                files.append(Path(dirpath, name).relative_to(split_dir).as_posix())
    return sorted(files)


def _cache_paths(split_dir: Path, cache_dir: Path | None) -> list[Path]:
    """Where the index may live: beside the data first, then under the cache directory."""
    key = hashlib.sha1(str(split_dir.resolve()).encode()).hexdigest()[:16]
    fallback = Path(cache_dir or default_cache_dir()) / "clip_index" / f"{split_dir.name}-{key}.json"
    return [split_dir / INDEX_NAME, fallback]


def _read_json(path: Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("version") == INDEX_VERSION else None


def _write_json_atomic(path: Path, data: dict) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp_index_", dir=path.parent)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=0, sort_keys=True)
        os.replace(tmp, path)
        return True
    except OSError:
        return False


def load_clip_index(
    split_dir: Path,
    files: list[str] | None = None,
    cache_dir: Path | None = None,
    progress: bool = True,
) -> tuple[dict[str, dict], Path]:
    """Frame counts of every video under ``split_dir``, reusing the cached index where still valid.

    Args:
        split_dir: a split folder (e.g. ``ucf101/train``).
        files: relative paths to index (default: :func:`list_video_files`).
        cache_dir: where the index goes when ``split_dir`` is read-only (default
            :func:`default_cache_dir`).

    Returns:
        ``(entries, index_path)`` where ``entries[rel] = dict(size, mtime_ns, n_frames, fps, error)``
        (``error`` is None for readable files, else the message) and ``index_path`` is the JSON file
        read or written.
    """
    split_dir = Path(split_dir)
    if files is None:
        files = list_video_files(split_dir)
    candidates = _cache_paths(split_dir, cache_dir)
    cached: dict = {}
    used_path = candidates[0]
    for path in candidates:
        data = _read_json(path)
        if data is not None:
            cached, used_path = data.get("files", {}), path
            break

    entries: dict[str, dict] = {}
    to_probe = []
    for rel in files:
        st = (split_dir / rel).stat()
        old = cached.get(rel)
        if old is not None and old.get("size") == st.st_size and old.get("mtime_ns") == st.st_mtime_ns:
            entries[rel] = old
        else:
            to_probe.append((rel, st))
    for rel, st in tqdm(to_probe, desc=f"indexing {split_dir}", disable=not progress or len(to_probe) < 50):
        entry = dict(size=st.st_size, mtime_ns=st.st_mtime_ns, n_frames=0, fps=0.0, error=None)
        try:
            info = decode.probe_video(split_dir / rel)
            entry.update(n_frames=info["n_frames"], fps=info["fps"])
        except Exception as err:  # noqa: BLE001 - any probe failure marks the file unusable
            entry["error"] = f"{type(err).__name__}: {err}"
        entries[rel] = entry

    if to_probe or set(cached) != set(entries):
        data = dict(version=INDEX_VERSION, root=str(split_dir.resolve()), files=entries)
        for path in candidates:
            if _write_json_atomic(path, data):
                used_path = path
                break
    return entries, used_path
