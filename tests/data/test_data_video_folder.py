"""Video-folder dataset on tiny files written here: labels, clip values, seeking, index cache, errors."""

from __future__ import annotations

import os
import warnings
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from tats.data import clip_index, decode
from tats.data.video_folder import VideoFolderDataset


def write_video(path, n_frames: int, codec: str = "libx264", w: int = 32, h: int = 24, gop: int = 4,
                step: int = 8):
    """Frame i is uniform grey 20 + step * i (so decoded values identify the frame)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.codec_context.gop_size = gop
        if codec == "libx264":
            stream.options = {"crf": "0", "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0"}
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 20 + step * i, np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def grey_level(video: torch.Tensor) -> np.ndarray:
    """Mean pixel value per frame of a (C, T, H, W) clip, back in 0..255."""
    return ((video + 0.5) * 255).mean(dim=(0, 2, 3)).numpy()


@pytest.fixture
def ucf_like(tmp_path, monkeypatch):
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "ucf"
    write_video(root / "train" / "Bowling" / "a.mp4", 30)
    write_video(root / "train" / "Archery" / "b.avi", 20, codec="mpeg4")
    write_video(root / "test" / "Bowling" / "c.mp4", 30)
    write_video(root / "test" / "Cycling" / "d.webm", 20, codec="libvpx-vp9")  # class only in test
    return root


def test_labels_shapes_and_every_window(ucf_like):
    train = VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=16)
    test = VideoFolderDataset(ucf_like, train=False, sequence_length=4, resolution=16,
                              sample_every_n_frames=2)
    assert train.classes == test.classes == ["Archery", "Bowling", "Cycling"] and train.n_classes == 3
    # every window of 4 frames: b.avi (20 frames) 17, a.mp4 (30 frames) 27, in sorted path order
    assert len(train) == 17 + 27 and len(test) == 27 + 17
    item = train[0]
    assert item["video"].shape == (3, 4, 16, 16) and item["video"].dtype == torch.float32
    assert item["label"] == 0 and item["path"].endswith("b.avi") and item["start"] == 0
    np.testing.assert_allclose(grey_level(item["video"]), [20, 28, 36, 44], atol=3)  # mpeg4: lossy
    last = train[16]  # the last window of b.avi starts at frame 16
    assert last["path"].endswith("b.avi") and last["start"] == 16
    np.testing.assert_allclose(grey_level(last["video"]), [148, 156, 164, 172], atol=3)
    first_a = train[17]
    assert first_a["path"].endswith("a.mp4") and first_a["label"] == 1 and first_a["start"] == 0
    # evaluation: the same windows, each thinned to every 2nd frame -> T = 4 / 2 = 2 frames
    for i, (start, label) in ((0, (0, 1)), (5, (5, 1)), (27, (0, 2)), (43, (16, 2))):
        clip = test[i]
        assert clip["video"].shape == (3, 2, 16, 16) and (clip["start"], clip["label"]) == (start, label)
        np.testing.assert_allclose(grey_level(clip["video"]), [20 + 8 * start, 36 + 8 * start], atol=2.5)
        torch.testing.assert_close(clip["video"], test[i]["video"])


def test_one_clip_per_video(ucf_like):
    train = VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=16, clips_per_video=1)
    assert len(train) == 2 and train[0]["path"].endswith("b.avi") and train[1]["label"] == 1
    levels = grey_level(train[0]["video"])  # random start, but consecutive frames: steps of 8
    np.testing.assert_allclose(np.diff(levels), 8, atol=2)
    test = VideoFolderDataset(ucf_like, train=False, sequence_length=4, resolution=16, clips_per_video=3)
    assert len(test) == 6  # 3 passes over the 2 videos; evaluation starts evenly spaced: 0, mid, last
    assert [test[i]["start"] for i in (0, 2, 4)] == [0, 13, 26]  # c.mp4: 27 starts, 0..26
    assert [test[i]["start"] for i in (1, 3, 5)] == [0, 8, 16]  # d.webm: 17 starts


def test_random_starts_cover_the_video(ucf_like):
    ds = VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=8, clips_per_video=1)
    firsts = {round((grey_level(ds[1]["video"])[0] - 20) / 8) for _ in range(40)}  # a.mp4, 30 frames
    assert len(firsts) > 5 and min(firsts) >= 0 and max(firsts) <= 26


def test_decode_seeks_near_the_clip_start(tmp_path):
    path = write_video(tmp_path / "long.mp4", 60, gop=4, step=3)
    stats: dict = {}
    frames = decode.decode_clip(path, start=41, n_frames=3, stride=3, stats=stats)  # frames 41, 44, 47
    assert frames.shape == (3, 24, 32, 3)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [20 + 3 * 41, 20 + 3 * 44, 20 + 3 * 47], atol=2)
    assert stats["decoded"] <= 12  # from the key frame at 40, not from frame 0
    with pytest.raises(decode.ShortClipError):
        decode.decode_clip(path, start=58, n_frames=4)


def test_probe_uses_metadata(ucf_like):
    info = decode.probe_video(ucf_like / "train" / "Bowling" / "a.mp4")
    assert info == dict(n_frames=30, fps=10.0, source="frames")
    assert decode.probe_video(ucf_like / "test" / "Cycling" / "d.webm")["n_frames"] == 20  # no frame count


def test_index_cache_built_reused_and_rebuilt(ucf_like, monkeypatch):
    calls = []
    real_probe = decode.probe_video
    monkeypatch.setattr(decode, "probe_video", lambda p: calls.append(p) or real_probe(p))
    VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=8)
    index_file = ucf_like / "train" / clip_index.INDEX_NAME
    assert index_file.is_file() and len(calls) == 2
    ds = VideoFolderDataset(ucf_like, train=True, sequence_length=8, resolution=8)  # other length: reused
    assert len(calls) == 2 and ds.index_path == index_file
    # Replace a file (new size and mtime): only that file is probed again, and its length updates.
    write_video(ucf_like / "train" / "Archery" / "b.avi", 12, codec="mpeg4")
    os.utime(ucf_like / "train" / "Archery" / "b.avi", ns=(1, 1))
    ds = VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=8)
    assert len(calls) == 3 and dict((r, n) for r, n, _ in ds.items)["Archery/b.avi"] == 12
    assert len(ds) == (12 - 3) + (30 - 3)
    write_video(ucf_like / "train" / "Archery" / "e.mp4", 10)  # new file
    ds = VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=8)
    assert len(calls) == 4 and len(ds.items) == 3 and len(ds) == 9 + 7 + 27


def test_index_falls_back_to_cache_dir_when_split_is_not_writable(ucf_like, tmp_path):
    (ucf_like / "test" / clip_index.INDEX_NAME).mkdir()  # a directory in the way: cannot write there
    ds = VideoFolderDataset(ucf_like, train=False, sequence_length=4, resolution=8)
    assert ds.index_path.is_file() and (tmp_path / "cache") in ds.index_path.parents


def test_corrupt_file_warns_once_and_empty_folder_raises(ucf_like, tmp_path):
    bad = ucf_like / "train" / "Bowling" / "broken.mp4"
    bad.write_bytes(np.random.default_rng(0).bytes(2000))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = VideoFolderDataset(ucf_like, train=True, sequence_length=4, resolution=8)
        ds[0], ds[1]
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "broken.mp4" in messages[0] and "skipped 1" in messages[0]
    assert len(ds.items) == 2

    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match="no usable video under .*empty"):
        VideoFolderDataset(tmp_path / "empty", train=True)
    with pytest.raises(ValueError, match="train/ and test/"):
        VideoFolderDataset(tmp_path / "missing", train=True)


def test_read_failure_moves_on_then_raises(ucf_like):
    ds = VideoFolderDataset(ucf_like, train=False, sequence_length=4, resolution=8)
    (ucf_like / "test" / "Cycling" / "d.webm").write_bytes(b"not a video any more")
    with pytest.warns(RuntimeWarning, match="d.webm"):
        item = ds[30]  # a window of d.webm: falls through to the next video (wraps around to c.mp4)
    assert item["path"].endswith("c.mp4") and item["start"] == 0
    (ucf_like / "test" / "Bowling" / "c.mp4").write_bytes(b"broken too")
    with pytest.warns(RuntimeWarning), pytest.raises(RuntimeError, match="c.mp4(.|\n)*d.webm"):
        ds[0]


def test_sequential_fallback_agrees_and_gaps_hold_the_previous_frame(tmp_path):
    path = write_video(tmp_path / "v.mp4", 20, step=10)
    sequential = decode.decode_clip(path, 9, 3, 2, seek=False)
    np.testing.assert_array_equal(decode.decode_clip(path, 9, 3, 2), sequential)
    # A variable-frame-rate file: timestamps 0..4 then 6..9 (tick 5 missing).
    vfr = tmp_path / "vfr.mp4"
    with av.open(str(vfr), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = 16, 16, "yuv420p"
        stream.options = {"crf": "0"}
        for pts in [0, 1, 2, 3, 4, 6, 7, 8, 9]:
            frame = av.VideoFrame.from_ndarray(np.full((16, 16, 3), 20 + 20 * pts, np.uint8), format="rgb24")
            frame.pts, frame.time_base = pts, Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    # Indices follow the average rate (9 frames/s here), so the 9 frames are indices 0..8 as the
    # metadata frame count says: indices 3..6 are the frames stamped 3, 4, 6, 7.
    assert decode.probe_video(vfr)["n_frames"] == 9
    frames = decode.decode_clip(vfr, 3, 4)
    np.testing.assert_allclose(frames.mean(axis=(1, 2, 3)), [80, 100, 140, 160], atol=2)
    np.testing.assert_array_equal(decode.decode_clip(vfr, 3, 4, seek=False), frames)


def test_frame_rate_resamples_as_videoclips(tmp_path, monkeypatch):
    """--frame_rate r on a 10 fps file of n frames: ceil(n * r / 10) frames, frame k = file frame
    floor(k * 10 / r) (torchvision VideoClips' rule), then windows as usual."""
    monkeypatch.setenv("TATS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "v"
    write_video(root / "train" / "A" / "a.mp4", 25)  # 10 fps; frame i is grey 20 + 8 i
    write_video(root / "test" / "A" / "a.mp4", 25)
    down = VideoFolderDataset(root, train=True, sequence_length=4, resolution=16, frame_rate=4)
    # 25 frames at 10 fps -> ceil(10.0) = 10 frames at 4 fps: file frames 0, 2.5 -> 2, 5, 7.5 -> 7, ...
    assert len(down) == 10 - 4 + 1
    np.testing.assert_allclose(grey_level(down[0]["video"]), [20 + 8 * i for i in (0, 2, 5, 7)], atol=1)
    np.testing.assert_allclose(grey_level(down[6]["video"]), [20 + 8 * i for i in (15, 17, 20, 22)], atol=1)
    up = VideoFolderDataset(root, train=True, sequence_length=4, resolution=16, frame_rate=20,
                            sample_every_n_frames=2)
    assert len(up) == 50 - 4 + 1  # each file frame twice
    np.testing.assert_allclose(grey_level(up[3]["video"]), [20 + 8 * i for i in (1, 2)], atol=1)
    same = VideoFolderDataset(root, train=True, sequence_length=4, resolution=16, frame_rate=10)
    assert len(same) == 22 and torch.equal(same[5]["video"], VideoFolderDataset(
        root, train=True, sequence_length=4, resolution=16)[5]["video"])


def test_frame_rate_on_frames_without_a_rate_is_ignored_with_a_warning(tmp_path):
    from tats.data.demo import make_demo_data
    from tats.data.sources import open_dataset

    h5 = make_demo_data(tmp_path / "d.h5", n_train=4, n_test=2, sequence_length=8, resolution=16,
                        progress=False)
    with pytest.warns(UserWarning, match="--frame_rate applies to folders of video files") as record:
        ds = open_dataset(h5, False, train=True, sequence_length=4, resolution=16, frame_rate=8)
    assert f"--data_path {h5}" in str(record[0].message) and len(ds) == 4
