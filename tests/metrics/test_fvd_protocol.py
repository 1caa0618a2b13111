"""The release's FVD protocol around the metric: uint8 by truncation, real clips drawn at random over
every training window (seeded), and what the old selection (the first videos in path order) did."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from torch import nn

from tats.data.sources import iter_video_batches, pick_clips
from tats.io.video import to_uint8
from tats.metrics.fvd import I3DFeatureExtractor, comparability_warning, frechet_distance

CLASS_BASE = {"A": 20, "B": 100, "C": 180}  # frame i of a class-k video has grey level base + 2 i
N_VIDEOS, N_FRAMES = 4, 20  # per class; windows of 16 frames: 5 per video, 60 in all


def write_grey_mp4(path, n_frames: int, base: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width = stream.height = 16
        stream.pix_fmt, stream.options = "yuv420p", {"crf": "0"}
        for i in range(n_frames):
            img = np.full((16, 16, 3), base + 2 * i, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.fixture(scope="module")
def classes_root(tmp_path_factory):
    """3 classes x 4 training videos of 20 frames: 5 windows of 16 frames each, 60 in all."""
    root = tmp_path_factory.mktemp("classes")
    for name, base in CLASS_BASE.items():
        for v in range(N_VIDEOS):
            write_grey_mp4(root / "train" / name / f"{v}.mp4", N_FRAMES, base)
    write_grey_mp4(root / "test" / "A" / "t.mp4", N_FRAMES, 20)
    return root


def class_and_start(clips: np.ndarray) -> list[tuple[str, int]]:
    """(class, window start) of uint8 clips (N, T, H, W, C): the grey ramp ``base + 2 (start + t)`` that
    fits the clip's frame levels best (the codec's YUV rounding moves levels by a unit or two)."""
    levels = clips.reshape(*clips.shape[:2], -1).mean(axis=2)  # (N, T)
    ramps = {(name, start): base + 2 * (start + np.arange(clips.shape[1]))
             for name, base in CLASS_BASE.items() for start in range(N_FRAMES - 16 + 1)}
    return [min(ramps, key=lambda key: np.abs(row - ramps[key]).max()) for row in levels]


def draw(root, n: int, selection: str = "random", seed: int = 0, info: dict | None = None) -> np.ndarray:
    return np.concatenate(list(iter_video_batches(str(root), n_frames=16, max_videos=n, batch_size=5,
                                                  resolution=8, split="train", selection=selection,
                                                  seed=seed, info=info)))


def test_real_clips_are_a_seeded_draw_over_every_training_window(classes_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    info: dict = {}
    clips = draw(classes_root, 12, info=info)
    assert clips.shape == (12, 16, 8, 8, 3) and info == {"available": 3 * N_VIDEOS * 5, "used": 12}
    drawn = class_and_start(clips)
    assert {c for c, _ in drawn} == {"A", "B", "C"} and len({s for _, s in drawn}) > 1
    assert np.array_equal(draw(classes_root, 12), clips)  # the same seed, the same set
    assert class_and_start(draw(classes_root, 12, seed=1)) != drawn
    # the old selection: the first clips in path order are all of the alphabetically first class
    assert {c for c, _ in class_and_start(draw(classes_root, 12, "first"))} == {"A"}
    assert sorted(set(pick_clips(60, 12, seed=0).tolist())) == pick_clips(60, 12, seed=0).tolist()  # distinct
    assert pick_clips(5, 12).tolist() == [0, 1, 2, 3, 4]  # fewer than asked: all of them


class _ColourTime(nn.Module):
    """Stand-in for I3D: mean colour of each half of the clip -> (B, 6) features."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.adaptive_avg_pool3d(x, (2, 1, 1)).flatten(1).double()


def test_random_draw_vs_class_restricted_set(classes_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path))
    model = _ColourTime()

    def feats(clips: np.ndarray) -> np.ndarray:
        ext = I3DFeatureExtractor(model, "tats", batch_size=8, progress=False)
        ext.update(clips)
        return ext.compute()

    a, b = feats(draw(classes_root, 12, seed=0)), feats(draw(classes_root, 12, seed=1))
    first = feats(draw(classes_root, 12, "first"))
    assert frechet_distance(a, a) < 1e-9 * np.trace(np.cov(a, rowvar=False))  # a set against itself
    assert frechet_distance(a, first) > 5 * frechet_distance(a, b)  # the path-order set is biased


def test_real_clips_from_frame_folders_without_split(tmp_path):
    from PIL import Image

    for v in range(3):  # the release's layout: frame folders straight under the data path
        (tmp_path / f"v{v}").mkdir()
        for i in range(18):
            Image.fromarray(np.full((8, 8, 3), 10 * v + i, np.uint8)).save(tmp_path / f"v{v}" / f"{i}.png")
    info: dict = {}
    clips = np.concatenate(list(iter_video_batches(str(tmp_path), n_frames=16, resolution=8,
                                                   image_folder=True, uint8="round", info=info)))
    assert clips.shape == (3, 16, 8, 8, 3) and info == {"available": 3, "used": 3}
    for v, clip in enumerate(clips):  # one clip per folder (in order), 16 consecutive frames from 0 or 1
        levels = clip.reshape(16, -1).mean(axis=1) - 10 * v
        assert levels[0] in (0, 1) and np.array_equal(levels, levels[0] + np.arange(16))


def test_uint8_by_truncation_under_protocol_tats():
    levels = torch.tensor([0.0, 17.7, 100.5, 254.99, 255.0])  # pixel values before the uint8 cast
    video = (levels / 255 - 0.5).view(1, 1, 5, 1, 1).expand(1, 3, 5, 2, 2)  # (B, C, T, H, W)
    assert to_uint8(video, "truncate")[0, :, 0, 0, 0].tolist() == [0, 17, 100, 254, 255]
    assert to_uint8(video)[0, :, 0, 0, 0].tolist() == [0, 18, 100, 255, 255]  # rounding (styleganv)

    class Record(nn.Module):
        def forward(self, x):
            self.seen = x
            return torch.zeros(len(x), 400)

    for protocol, expected in (("tats", [0, 17, 100, 254, 255]), ("styleganv", [0, 18, 100, 255, 255])):
        model = Record()
        I3DFeatureExtractor(model, protocol, progress=False).update(video)
        got = model.seen[0, 0, :, 100, 100].double()  # frames are uniform: resizing keeps the value
        want = 2 * torch.tensor(expected, dtype=torch.float64) / 255 - 1
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


def test_comparability_warning():
    assert comparability_warning(2048, 2048) is None and comparability_warning(4096, 2048) is None
    note = comparability_warning(2048, 64)
    assert "64 generated vs 2048 real" in note and "not comparable with published FVDs" in note


def test_fvd_real_draw_script(tmp_path, monkeypatch, load_script):
    """scripts/fvd_real_draw.py end to end on a few moving-digit videos with a stand-in I3D."""
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    script = load_script("scripts/fvd_real_draw.py")
    monkeypatch.setattr(script, "load_i3d", lambda *a, **k: _ColourTime())
    result = script.main(["--out", str(tmp_path / "out"), "--n", "6", "--videos", "30", "--frames", "18",
                          "--resolution", "16", "--batch_size", "6"])
    assert (tmp_path / "out" / "data" / "train").is_dir() and result["n_clips"] == 6
    assert result["fvd_A_vs_A"] == 0 and result["fvd_A_vs_B"] > 0
    # the first 6 of ~30 videos in path order: the first few of ~20 classes
    assert result["classes_in_old"] < result["classes_in_A"]


class _FrameLevels(nn.Module):
    """Stand-in I3D that records the grey level of every frame it is fed: (B, 3, T, S, S) -> (B, 4)."""

    weights_sha256, weights_path = "levels", "levels"

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[torch.Tensor] = []
        self.w = nn.Parameter(torch.ones(()), requires_grad=False)

    def forward(self, x):
        levels = ((x[:, 0, :, 100, 100] + 1) / 2 * 255).round()  # (B, T) back to uint8 levels
        self.seen.append(levels)
        return torch.stack([levels.mean(1), levels.std(1), levels[:, 0], levels[:, -1]], dim=1) * self.w


@pytest.mark.parametrize("preset, frames", [
    ("fvd2048_16f", list(range(16))),
    ("fvd2048_128f", list(range(128))),
    ("fvd2048_128f_subsample8f", list(range(0, 128, 8))),
])
def test_named_protocols_take_the_frames_they_name(tmp_path, monkeypatch, load_script, preset, frames):
    """StyleGAN-V's protocols: 16 or 128 consecutive frames, or every 8th of 128, on both sides (a .npy
    whose frame t has grey level t), the styleganv preprocessing (rounding, N covariance), 2048 per side."""
    script = load_script("scripts/compute_fvd.py")
    model = _FrameLevels()
    monkeypatch.setattr(script, "load_i3d", lambda *a, **k: model)
    ramp = np.arange(130, dtype=np.uint8)[None, :, None, None, None]
    np.save(tmp_path / "real.npy", np.broadcast_to(ramp, (5, 130, 16, 16, 3)).copy())
    fake = np.broadcast_to(ramp, (3, 130, 16, 16, 3)).copy()
    fake[1] = np.minimum(fake[1].astype(int) + 9, 255)  # one clip differs: a finite, non-zero FVD
    np.save(tmp_path / "fake.npy", fake)
    with pytest.warns(UserWarning, match="3 generated vs 5 real clips is not comparable"):
        out = script.main(["--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / "fake.npy"),
                           "--protocol", preset, "--no_cache", "--batch_size", "8"])
    seen = torch.cat(model.seen)  # (5 real + 3 fake, T)
    expected = torch.tensor(frames, dtype=seen.dtype).expand(8, -1).clone()
    expected[5 + 1] = torch.clamp(expected[5 + 1] + 9, max=255)
    torch.testing.assert_close(seen, expected, rtol=0, atol=0)
    assert (out["preset"], out["protocol"], out["uint8"], out["frames"]) == (preset, "styleganv", "round",
                                                                             len(frames))
    assert out["real"]["max_videos"] == out["fake"]["max_videos"] == 2048
    assert out["frame_stride"] == (8 if "subsample" in preset else 1) and out["real"]["clips_per_video"] == 1
    with pytest.raises(SystemExit):  # a named protocol fixes the frame count
        script.main(["--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / "fake.npy"),
                     "--protocol", preset, "--n_frames", "8"])


def test_named_protocols_thin_a_dataset_through_its_frame_stride(load_script):
    script = load_script("scripts/compute_fvd.py")
    assert script.stride_kwargs("demo", 8, 2, False) == dict(sample_every_n_frames=16, frame_stride=1)
    assert script.stride_kwargs("x.npy", 8, 2, False) == dict(sample_every_n_frames=2, frame_stride=8)
