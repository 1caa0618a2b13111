"""scripts/eval_long_videos.py end to end on a tiny label-conditioned GPT and the demo digits: sampling,
the per-position table, re-reading the videos it wrote, plotting earlier runs, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from tats.data.demo import make_demo_data
from tats.data.long_videos import open_long_videos
from tests.tiny_models import save_transformer


class _TinyI3D(torch.nn.Module):
    """Random stand-in for I3D: (B, 3, T, 224, 224) in [-1, 1] -> (B, 400) features."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = torch.nn.Linear(3 * 4 * 4, 400)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(torch.nn.functional.adaptive_avg_pool3d(x, (1, 4, 4)).flatten(1))


@pytest.fixture
def setup(tmp_path, monkeypatch, load_script):
    import tats.metrics.i3d

    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    calls = []

    def load_i3d(path=None, cache_dir=None, bn_eps=None, device="cpu"):
        calls.append(path)
        torch.manual_seed(0)
        return _TinyI3D().eval().to(device)

    monkeypatch.setattr(tats.metrics.i3d, "load_i3d", load_i3d)
    data = make_demo_data(tmp_path / "digits.h5", n_train=40, n_test=4, sequence_length=16, resolution=16,
                          progress=False)
    gpt = save_transformer(tmp_path / "gpt.ckpt", "label")
    return load_script("scripts/eval_long_videos.py").main, data, gpt, calls


def _argv(gpt, data, save, *extra):
    return ["--gpt_ckpt", str(gpt), "--data_path", str(data), "--resolution", "16", "--length", "40",
            "--n_sample", "3", "--batch_size", "2", "--n_real", "8", "--top_k", "0", "--top_p", "1",
            "--save", str(save), "--no_progress", "--device", "cpu", *extra]


def test_sample_measure_and_reread(setup, tmp_path):
    main, data, gpt, calls = setup
    out = tmp_path / "run"
    res = main(_argv(gpt, data, out, "--draws", "2"))
    assert res["positions"] == [0, 16, 24] and res["length"] == 40 and res["n_videos"] == 3
    for row in res["rows"]:
        for key in ("fvd", "kvd", "digits"):  # digits: moving-digits data and a label-conditioned model
            values = row[key]["values"]
            assert len(values) == 2 and row[key]["mean"] == pytest.approx(np.mean(values))
        assert row["fvd"]["std"] == pytest.approx(np.std(row["fvd"]["values"]))
    assert len(res["real_vs_real"]["fvd"]["values"]) == 2 and 0 <= res["digits_real"] <= 1
    assert res["source"]["decode"]["equals_whole_decode"] and res["decode"] == res["source"]["decode"]
    assert json.loads((out / "quality.json").read_text())["rows"] == res["rows"]
    assert len((out / "quality.csv").read_text().splitlines()) == 4
    for name in ("quality.png", "along_video.png", "along_video.mp4"):
        assert (out / name).stat().st_size > 0, name
    with h5py.File(out / "videos.h5") as f:  # both draws' videos, with their labels (classes cycle)
        assert f["test_idx"][:].tolist() == [0, 40, 80, 120, 160, 200]
        assert f["test_label"][:].tolist() == [0, 1, 2, 0, 1, 2]
    assert calls == [None]  # one I3D, the default weights

    # the written videos, read back and split into the same two draws, give the same figures (I3D runs on
    # batches of another size: float32 features, so 1e-6; wrong frames or draws move FVD by percents)
    again = main(["--videos", str(out / "videos.h5"), "--data_path", str(data), "--resolution", "16",
                  "--n_real", "8", "--draws", "2", "--save", str(tmp_path / "reread"), "--no_progress",
                  "--device", "cpu"])
    for a, b in zip(res["rows"], again["rows"]):
        for key in ("fvd", "kvd", "digits"):
            assert b[key]["values"] == pytest.approx(a[key]["values"], rel=1e-6, abs=1e-9)
    assert again["decode"] == "as read (--videos)"

    main(["--compare", str(out / "quality.json"), str(tmp_path / "reread" / "quality.json"),
          "--save", str(tmp_path / "cmp")])
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 0


@pytest.mark.parametrize("extra, match", [
    (["--positions", "0", "25"], r"--positions \[25\]"),
    (["--n_real", "38"], r"--n_real 38: .* need 41; --data_path .* has 40 windows"),
    (["--window", "8"], r"--window >= 9"),
])
def test_bad_flags_name_the_flag_and_the_number(setup, tmp_path, capsys, extra, match):
    main, data, gpt, _ = setup
    with pytest.raises(SystemExit):
        main(_argv(gpt, data, tmp_path / "bad", *extra))
    assert __import__("re").search(match, capsys.readouterr().err)
    assert not (tmp_path / "bad" / "videos.h5").exists()  # nothing sampled before the check


def test_a_folder_of_mixed_lengths_is_an_error(tmp_path):
    from tats.io.video import write_frames

    rng = np.random.default_rng(0)
    for name, length in (("a.mp4", 40), ("b.mp4", 40), ("c.mp4", 32)):
        write_frames(rng.integers(0, 256, (length, 16, 16, 3), dtype=np.uint8), tmp_path / "v" / name)
    with pytest.raises(ValueError, match=r"--videos .*: videos of mixed lengths \(1 of 32 frames, 2 of 40 "
                                         r"frames; e.g. c.mp4 has 32\)"):
        open_long_videos(tmp_path / "v")
    (tmp_path / "v" / "c.mp4").unlink()
    (tmp_path / "v" / "broken.mp4").write_bytes(b"not a video")
    with pytest.warns(RuntimeWarning, match="skipped 1 unusable item"):
        videos = open_long_videos(tmp_path / "v")
    assert (videos.n, videos.length, videos.skipped) == (2, 40, 1)
    clips, labels = next(videos.batches(4))
    assert clips.shape == (2, 40, 16, 16, 3) and labels is None


def test_a_npy_with_labels_beside_it(tmp_path):
    np.save(tmp_path / "samples.npy", np.zeros((3, 20, 8, 8, 3), np.uint8))
    np.save(tmp_path / "labels.npy", np.array([4, 5, 6]))
    videos = open_long_videos(tmp_path / "samples.npy")
    assert (videos.n, videos.length, videos.labels.tolist()) == (3, 20, [4, 5, 6])
    np.save(tmp_path / "labels.npy", np.array([4, 5]))
    with pytest.raises(ValueError, match="expected 3 labels"):
        open_long_videos(Path(tmp_path / "samples.npy"))
