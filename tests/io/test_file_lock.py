"""The weight-fetch lock (tats.io.download.file_lock) on filesystems that refuse flock."""

from __future__ import annotations

import errno
import os
import sys
import threading
import time

import pytest

from tats.io import download
from tats.io.download import file_lock

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX locks")


def _refuse(*_):
    raise OSError(errno.ENOLCK, "No locks available")


def _excludes(path) -> bool:
    """True when a second holder waits until the first leaves the block."""
    order = []

    def second():
        with file_lock(path):
            order.append("second")

    with file_lock(path):
        t = threading.Thread(target=second)
        t.start()
        time.sleep(0.3)
        order.append("first")
    t.join(10)
    return order == ["first", "second"]


def test_flock_refused_falls_back_to_a_record_lock(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(fcntl, "flock", _refuse)
    with pytest.warns(RuntimeWarning, match=r"w\.bin\.lock: the filesystem refuses flock"):
        with file_lock(tmp_path / "w.bin"):
            pass
    assert not (tmp_path / "w.bin.lock.d").exists()


def test_both_refused_falls_back_to_a_lock_directory(tmp_path, monkeypatch):
    import fcntl

    monkeypatch.setattr(fcntl, "flock", _refuse)
    monkeypatch.setattr(fcntl, "lockf", _refuse)
    with pytest.warns(RuntimeWarning, match="refuses lockf"):
        with file_lock(tmp_path / "w.bin"):
            assert (tmp_path / "w.bin.lock.d").is_dir()
        assert not (tmp_path / "w.bin.lock.d").exists()
        assert _excludes(tmp_path / "w.bin")  # threads: the directory excludes within one process too
    # a lock directory left by a killed process: waited on, then named once it is stale
    stale = tmp_path / "w.bin.lock.d"
    stale.mkdir()
    old = time.time() - download.STALE_LOCK_S - 60
    os.utime(stale, (old, old))
    with pytest.warns(RuntimeWarning), pytest.raises(TimeoutError, match=r"w\.bin\.lock\.d: a lock held for"):
        with file_lock(tmp_path / "w.bin"):
            pass


def test_a_lock_error_other_than_refusal_is_raised(tmp_path, monkeypatch):
    import fcntl

    def broken(*_):
        raise OSError(errno.EIO, "I/O error")

    monkeypatch.setattr(fcntl, "flock", broken)
    with pytest.raises(OSError, match="I/O error"):
        with file_lock(tmp_path / "w.bin"):
            pass
