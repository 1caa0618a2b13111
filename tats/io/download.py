"""Downloading files into the cache: resumable, verified, atomic, and safe for several processes.

:func:`download` streams a URL into ``<dst>.part`` (continuing a partial file with an HTTP ``Range``
request when the server allows it), checks the size and sha256 when they are known, and renames the
finished file onto ``dst``; a kill at any point leaves either no ``dst`` or a complete one.
:func:`file_lock` serialises writers of one cache entry across processes (DDP ranks started at the same
moment): the first one downloads, the others wait and then find the file.

Nothing downloaded is executed: the files are archives or weight files that the callers read with
:mod:`tats.io.checkpoint`'s weights-only loader or its numpy-only unpickler.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import http.client
import os
import re
import sys
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

from tqdm.auto import tqdm

CHUNK = 1 << 20
USER_AGENT = "tats-downloader"


class DownloadError(RuntimeError):
    """A download failed, was refused (an HTML page instead of the file), or did not verify."""


def offline() -> bool:
    """True when ``$TATS_OFFLINE`` is set to a true value (1, true, yes, on): never download."""
    return os.environ.get("TATS_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def file_digest(path: str | os.PathLike, algo: str = "sha256") -> str:
    """Hex digest of a file's bytes (``algo`` as in :mod:`hashlib`, sha256 by default): the one file
    hash of the project (downloads, the published models' records, a codes file's VQGAN, I3D weights)."""
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


#: Errors of filesystems that refuse ``flock`` (some NFS, Lustre and GPFS mounts).
_NO_LOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL)
#: A directory lock older than this is reported as left behind by a killed process.
STALE_LOCK_S = 3600.0


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive lock on ``<path>.lock`` (created if needed) for the ``with`` block.

    An OS-level lock (``flock`` on POSIX, ``msvcrt.locking`` on Windows): it is released when the
    holder exits or dies, so a killed fetch never leaves other processes waiting forever. Where the
    filesystem refuses ``flock``, a POSIX record lock (``lockf``, which NFS serves), and where that is
    refused too, a lock directory ``<path>.lock.d`` (``mkdir`` is atomic everywhere; a killed holder
    leaves it behind, and after :data:`STALE_LOCK_S` the error names it for deletion)."""
    lock = Path(f"{path}.lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+b") as f:
        if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
            import msvcrt

            f.seek(0)
            msvcrt.locking(f.fileno(), msvcrt.LK_LOCK, 1)
            try:
                yield
            finally:
                f.seek(0)
                msvcrt.locking(f.fileno(), msvcrt.LK_UNLCK, 1)
            return
        import fcntl

        for name, fn in (("flock", fcntl.flock), ("lockf", fcntl.lockf)):
            try:
                fn(f.fileno(), fcntl.LOCK_EX)
            except OSError as err:
                if err.errno not in _NO_LOCK:
                    raise
                warnings.warn(f"{lock}: the filesystem refuses {name} ({err.strerror}); trying "
                              "another lock", RuntimeWarning, stacklevel=3)
                continue
            try:
                yield
            finally:
                fn(f.fileno(), fcntl.LOCK_UN)
            return
    with _directory_lock(Path(f"{lock}.d")):
        yield


@contextlib.contextmanager
def _directory_lock(lock: Path, poll_s: float = 0.5) -> Iterator[None]:
    while True:
        try:
            lock.mkdir()
            break
        except FileExistsError:
            try:
                age = time.time() - lock.stat().st_mtime
            except FileNotFoundError:
                continue  # released just now
            if age > STALE_LOCK_S:
                raise TimeoutError(f"{lock}: a lock held for {age / 60:.0f} min; a killed process may have "
                                   "left it behind: delete it if no other process is fetching") from None
            time.sleep(poll_s)
    try:
        yield
    finally:
        lock.rmdir()


def _open(url: str, start: int, headers: dict[str, str], timeout: float):
    req = urllib.request.Request(url, headers={"User-Agent": USER_AGENT, **headers})
    if start:
        req.add_header("Range", f"bytes={start}-")
    return urllib.request.urlopen(req, timeout=timeout)


def _is_html(content_type: str, head: bytes) -> bool:
    """An HTML answer: by its declared type, or by its first bytes when the type is missing or generic."""
    if content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml"):
        return True
    start = head[:512].lstrip().lower()
    return start.startswith((b"<!doctype html", b"<html"))


def download(
    url: str,
    dst: str | os.PathLike,
    *,
    sha256: str | None = None,
    size: int | None = None,
    desc: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60.0,
    progress: bool = True,
    opener: Callable[[int], Any] | None = None,
    verify: Callable[[Path], None] | None = None,
) -> Path:
    """Download ``url`` to ``dst`` and return ``dst``.

    A ``<dst>.part`` left by an interrupted run is continued (``Range``) when the server answers 206,
    and restarted when it answers 200; a download that breaks off keeps it for the next try and raises
    :class:`DownloadError`. A file longer than ``size`` or of another ``sha256`` is deleted and refused,
    and so is an HTML page (what file hosts send for a missing file, a quota error or a login wall)
    where a binary file was expected.

    ``opener(start)``, when given, opens the response instead of a plain GET of ``url`` (a host with a
    confirmation step, :func:`tats.io.hosts.open_drive`); it must send ``Range: bytes=start-`` when
    ``start`` > 0. ``verify(part_path)`` checks the finished file before it is renamed onto ``dst``
    (e.g. that it is a checkpoint): when it raises, the file is deleted and :class:`DownloadError` names
    the reason.
    """
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    part = Path(f"{dst}.part")
    start = part.stat().st_size if part.is_file() else 0
    if size is not None and start > size:  # not a prefix of the file we want
        part.unlink()
        start = 0
    try:
        resp = opener(start) if opener is not None else _open(url, start, headers or {}, timeout)
    except urllib.error.HTTPError as err:
        # 416: nothing from `start` on. The partial file is whole when the size (known, or the server's
        # "Content-Range: bytes */N") says so; otherwise it is not a prefix of this file: start over.
        whole = re.fullmatch(r"bytes \*/(\d+)", (err.headers or {}).get("Content-Range", "") or "")
        if err.code == 416 and start and (size or (int(whole.group(1)) if whole else None)) == start:
            resp = None
        elif err.code == 416 and start:
            part.unlink()
            return download(url, dst, sha256=sha256, size=size, desc=desc, headers=headers, timeout=timeout,
                            progress=progress, opener=opener, verify=verify)
        else:
            raise DownloadError(f"downloading {url}: HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:
        raise DownloadError(f"downloading {url}: {getattr(err, 'reason', err)}") from None
    total = size
    if resp is not None:
        with resp:
            try:
                first = resp.read(CHUNK)
            except (OSError, http.client.HTTPException) as err:
                raise DownloadError(f"downloading {url}: {err}") from None
            if _is_html(resp.headers.get("Content-Type", ""), first):
                raise DownloadError(
                    f"{url} answered with an HTML page instead of the file (a moved link, a quota or a "
                    "login page); nothing was saved")
            if resp.status != 206:  # the server ignored the range: start over
                start = 0
            length = resp.headers.get("Content-Length")
            total = start + int(length) if length is not None else size
            bar = tqdm(total=total, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                       desc=desc or dst.name, disable=not progress, file=sys.stderr)
            try:
                with open(part, "ab" if start else "wb") as f:
                    f.write(first)
                    bar.update(len(first))
                    for chunk in iter(lambda: resp.read(CHUNK), b""):
                        f.write(chunk)
                        bar.update(len(chunk))
                    f.flush()
                    os.fsync(f.fileno())
            except (OSError, http.client.HTTPException) as err:  # URLError is an OSError
                raise DownloadError(f"downloading {url} broke off after {part.stat().st_size} bytes "
                                    f"({err}); run again to continue from {part}") from None
            finally:
                bar.close()
    got = part.stat().st_size
    if (total is not None and got < total) or (size is not None and got < size):  # connection closed early
        raise DownloadError(f"downloading {url} broke off after {got} of {size or total} bytes; run again "
                            f"to continue from {part}")
    if size is not None and got != size:
        part.unlink()
        raise DownloadError(f"{url}: got {got} bytes, expected {size}; the partial file was deleted")
    if sha256 is not None:
        digest = file_digest(part)
        if digest != sha256:
            part.unlink()
            raise DownloadError(f"{url}: sha256 {digest} is not the expected {sha256}; the file was deleted")
    if verify is not None:
        try:
            verify(part)
        except Exception as err:  # noqa: BLE001 - any refusal deletes the file and is reported
            part.unlink()
            raise DownloadError(f"{url}: {err}; the downloaded file was deleted") from None
    os.replace(part, dst)
    return dst
