"""The release's data protocol (the release, "Data and evaluation protocol"), expected values computed
here from its rules rather than from the datasets:

- video folders: every window of ``sequence_length`` consecutive frames is an item, in sorted file
  order; a clip is window -> ``[::n]`` -> shorter side bilinear (align_corners=False, size rounded up)
  -> centre crop -> ``/255 - 0.5``, so T = seq / n;
- frame folders: no train/test split needed, one item per folder with more than ``seq * n`` frames,
  start in ``0 .. len - 1 - seq * n``, centre square crop then PIL's antialiased resize, T = seq;
- the window index: counts from metadata only, O(1) length, lookup by prefix sums.
"""

from __future__ import annotations

import time

import av
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from tats.data import decode
from tats.data.frame_folder import FrameFolderDataset
from tats.data.video_folder import VideoFolderDataset
from tats.data.windows import WindowIndex, parse_clips_per_video
from tests.reference_impls import release_clip

SEQ, EVERY, RES = 16, 2, 16
#: float32 clips against the float64 rules: values in [-0.5, 0.5], one grey level is 1/255 = 4e-3
ATOL = 1e-5
H, W = 24, 40  # non-square frames: the resize and the crop both matter


def write_mp4(path, n_frames: int, seed: int) -> None:
    """A real H.264 file of ``n_frames`` 40x24 frames: smooth random patterns that move per frame."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, (H // 4, W // 4, 3)).astype(np.float64)
    base = np.kron(base, np.ones((4, 4, 1)))  # (H, W, 3) blocks, so the codec keeps them
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "10", "x264-params": "keyint=8:min-keyint=8:scenecut=0"}
        for i in range(n_frames):
            img = np.roll(base, 2 * i, axis=1).clip(0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def all_frames(path) -> np.ndarray:
    """Every frame of a file, decoded front to back with PyAV (uint8 (N, H, W, 3))."""
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.fixture(scope="module")
def video_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("videos")
    lengths = {"train/A/y.mp4": 33, "train/A/z.mp4": 16, "train/B/x.mp4": 20, "train/C/short.mp4": 15,
               "test/A/t1.mp4": 18, "test/B/t2.mp4": 25}
    for seed, (rel, n) in enumerate(lengths.items()):
        write_mp4(root / rel, n, seed)
    return root


def refuse(*args, **kwargs):
    raise AssertionError("a dataset decoded frames while building its index")


def test_video_folder_items_are_every_window(video_root, tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    with monkeypatch.context() as m:
        m.setattr(decode, "decode_clip", refuse)  # the index comes from container metadata only
        with pytest.warns(RuntimeWarning, match="short.mp4: 15 frames"):
            train = VideoFolderDataset(video_root, train=True, sequence_length=SEQ, resolution=RES,
                                       sample_every_n_frames=EVERY)
        test = VideoFolderDataset(video_root, train=False, sequence_length=SEQ, resolution=RES,
                                  sample_every_n_frames=EVERY)
        # windows of 16 consecutive frames: n - 15 per file; the 15-frame file has none
        assert len(train) == (33 - 15) + (16 - 15) + (20 - 15)
        assert len(test) == (18 - 15) + (25 - 15)
        assert train.classes == ["A", "B", "C"]

    # test item 0 is the first window of the first file (sorted), through the release's preprocessing
    first = test[0]
    assert first["path"].endswith("test/A/t1.mp4") and first["label"] == 0
    expected = release_clip(all_frames(video_root / "test/A/t1.mp4"), 0, SEQ, EVERY, RES)
    torch.testing.assert_close(first["video"].double(), expected, rtol=0, atol=ATOL)
    # every item has 16 / 2 = 8 frames; items run through the files in order (prefix sums)
    expected = [("train/A/y.mp4", 0, 0), ("train/A/y.mp4", 17, 0), ("train/A/z.mp4", 0, 0),
                ("train/B/x.mp4", 0, 1), ("train/B/x.mp4", 4, 1)]
    for index, (rel, start, label) in zip((0, 17, 18, 19, 23), expected):
        item = train[index]
        assert item["video"].shape == (3, SEQ // EVERY, RES, RES)
        assert (item["path"].endswith(rel), item["start"], item["label"]) == (True, start, label)
        clip = release_clip(all_frames(video_root / rel), start, SEQ, EVERY, RES)
        torch.testing.assert_close(item["video"].double(), clip, rtol=0, atol=ATOL)
    assert {tuple(test[i]["video"].shape) for i in range(len(test))} == {(3, 8, RES, RES)}
    assert test[3]["path"].endswith("t2.mp4") and test[12]["start"] == 9


def test_window_index_is_cheap_and_exact():
    rng = np.random.default_rng(0)
    counts = rng.integers(1, 2000, 200_000)  # a UCF-101-sized index times 15: 2e8 windows
    t0 = time.perf_counter()
    index = WindowIndex(counts)
    built = time.perf_counter() - t0
    assert len(index) == int(counts.sum()) and built < 1.0
    ends = np.cumsum(counts)
    for video in (0, 1, 12345, len(counts) - 1):  # first and last window of some videos
        first = int(ends[video - 1]) if video else 0
        assert index.locate(first) == (video, 0, 0)
        assert index.locate(first + int(counts[video]) - 1) == (video, int(counts[video]) - 1, 0)
    with pytest.raises(IndexError):
        index.locate(len(index))
    per_video = WindowIndex([5, 7, 9], clips_per_video=2)  # pass-major: every video, then again
    assert len(per_video) == 6 and [per_video.locate(i)[:1] + per_video.locate(i)[2:] for i in range(6)] == [
        (0, 0), (1, 0), (2, 0), (0, 1), (1, 1), (2, 1)]
    assert parse_clips_per_video("all") == "all" and parse_clips_per_video("3") == 3
    with pytest.raises(Exception, match="--clips_per_video: expected 'all'"):
        parse_clips_per_video("0")


def write_png(path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_frame_folders_without_split(tmp_path):
    # folders straight under --data_path (no train/ or test/), one nested; frames numbered without padding
    for i in range(12):
        write_png(tmp_path / "v1" / f"img_{i}.png", np.full((20, 30, 3), 10 * i, np.uint8))
    for i in range(9):
        write_png(tmp_path / "sky" / "v2" / f"img_{i}.png", np.full((20, 30, 3), 200 + i, np.uint8))
    for i in range(8):
        write_png(tmp_path / "short" / f"img_{i}.png", np.zeros((20, 30, 3), np.uint8))
    with pytest.warns(RuntimeWarning, match="short: 8 frames, a clip needs 9"):
        train = FrameFolderDataset(tmp_path, train=True, sequence_length=4, resolution=8,
                                   sample_every_n_frames=2)
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        val = FrameFolderDataset(tmp_path, train=False, sequence_length=4, resolution=8,
                                 sample_every_n_frames=2)
    # one item per folder with more than 4 * 2 frames; training and validation read the same folders
    assert len(train) == len(val) == 2
    assert [train.describe(i) for i in range(2)] == [val.describe(i) for i in range(2)]
    starts = set()
    for _ in range(40):
        item = train[1]  # v1: 12 frames -> starts 0 .. 12 - 1 - 8 = 3, then 4 frames 2 apart (T = seq)
        levels = ((item["video"] + 0.5) * 255).mean(dim=(0, 2, 3)).round().int().tolist()
        assert item["video"].shape == (3, 4, 8, 8)
        assert levels == [10 * (item["start"] + 2 * k) for k in range(4)]
        starts.add(item["start"])
    assert starts == {0, 1, 2, 3}
    assert train[0]["start"] == 0  # sky/v2: 9 frames, the one start 0


def test_frame_folders_resize_with_pil_antialiasing(tmp_path):
    stripes = np.zeros((30, 50, 3), np.uint8)
    stripes[:, ::2] = 255  # one-pixel vertical stripes: a resize without antialiasing aliases them
    stripes[:10] //= 2  # and a darker top band, so the vertical position matters too
    for i in range(3):
        write_png(tmp_path / "v" / f"{i}.png", stripes)
    ds = FrameFolderDataset(tmp_path, train=False, sequence_length=2, resolution=10)
    got = ds[0]["video"]  # (3, 2, 10, 10)
    # expected from PIL itself: the centre 30x30 square (columns 10..39), then its antialiased resize
    pil = np.array(Image.fromarray(stripes).crop((10, 0, 40, 30)).resize((10, 10), Image.LANCZOS))
    expected = torch.from_numpy(pil).double().permute(2, 0, 1) / 255 - 0.5  # (C, H, W)
    for t in range(2):
        torch.testing.assert_close(got[:, t].double(), expected, rtol=0, atol=1e-7)
    # antialiased, the stripes of the bright band average out to grey; bilinear sampling without
    # antialiasing (factor 3: every output pixel is one source pixel) keeps pure black and white
    square = torch.from_numpy(stripes[:, 10:40]).double().permute(2, 0, 1)[None] / 255
    plain = F.interpolate(square, size=(10, 10), mode="bilinear", align_corners=False)[0] - 0.5
    assert plain[:, 5:].abs().min() == 0.5
    assert got[:, 0, 5:].abs().max() < 0.1
