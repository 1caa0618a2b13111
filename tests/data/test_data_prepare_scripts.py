"""The dataset preparation scripts in datasets/: --help, and their helpers on tiny fake inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tats.data.frame_folder import FrameFolderDataset

SCRIPTS = Path(__file__).resolve().parents[2] / "datasets"
NAMES = ["prepare_ucf101", "prepare_sky_timelapse", "prepare_taichi", "prepare_bair", "prepare_kinetics"]


def tiny_video(path: Path, n: int = 20, w: int = 40, h: int = 30, rate: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=rate)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        for i in range(n):
            frame = av.VideoFrame.from_ndarray(np.full((h, w, 3), 8 * i, np.uint8), format="rgb24")
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return path


@pytest.mark.parametrize("name", NAMES)
def test_help_runs(name):
    out = subprocess.run([sys.executable, str(SCRIPTS / f"{name}.py"), "--help"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0 and "--out" in out.stdout


def test_ucf101_split_lists(tmp_path, load_script):
    m = load_script("datasets/prepare_ucf101.py")
    videos = tmp_path / "UCF-101"
    for rel in ["ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi", "ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi",
                "HandstandPushups/v_HandStandPushups_g01_c01.avi"]:  # folder and list spell it differently
        (videos / rel).parent.mkdir(parents=True, exist_ok=True)
        (videos / rel).write_bytes(b"x")
    lists = tmp_path / "lists"
    lists.mkdir()
    (lists / "trainlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\n"
                                           "HandStandPushups/v_HandStandPushups_g01_c01.avi 37\n")
    (lists / "testlist01.txt").write_text("ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi\n")
    assert m.read_split_list(lists / "testlist01.txt") == ["ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi"]
    out = str(tmp_path / "out")
    m.main(["--videos", str(videos), "--splits", str(lists), "--out", out, "--mode", "copy"])
    assert (tmp_path / "out/train/HandstandPushups/v_HandStandPushups_g01_c01.avi").is_file()
    assert (tmp_path / "out/test/ApplyEyeMakeup/v_ApplyEyeMakeup_g01_c01.avi").is_file()
    with pytest.raises(FileNotFoundError, match="missing"):
        m.resolve(videos, "Nope/v_x.avi")


def test_sky_layout_is_readable(tmp_path, load_script):
    m = load_script("datasets/prepare_sky_timelapse.py")
    for split in ("sky_train", "sky_test"):
        folder = tmp_path / "sky" / split / "vid1" / "clip3"
        folder.mkdir(parents=True)
        for i in range(5):  # a clip of 4 frames needs more than 4 (the release's rule)
            Image.fromarray(np.full((8, 8, 3), i, np.uint8)).save(folder / f"vid1_frames_{i:08d}.jpg")
    m.main(["--src", str(tmp_path / "sky"), "--out", str(tmp_path / "out")])
    assert (tmp_path / "out/train/vid1_clip3").is_dir()
    assert len(FrameFolderDataset(tmp_path / "out", train=False, sequence_length=4, resolution=8)) == 1


def test_taichi_frames_from_videos_and_folders(tmp_path, load_script):
    m = load_script("datasets/prepare_taichi.py")
    tiny_video(tmp_path / "taichi/train/abc.mp4", n=6)
    folder = tmp_path / "taichi/test/def.mp4"
    folder.mkdir(parents=True)
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(folder / "0000000.png")
    m.main(["--src", str(tmp_path / "taichi"), "--out", str(tmp_path / "out"), "--size", "16"])
    frames = sorted((tmp_path / "out/train/abc").glob("*.png"))
    assert len(frames) == 6 and Image.open(frames[0]).size == (21, 16)
    assert (tmp_path / "out/test/def/0000000.png").is_file()


def test_bair_record_decoding(load_script):
    m = load_script("datasets/prepare_bair.py")
    frames = np.random.default_rng(0).integers(0, 256, (30, 64, 64, 3), dtype=np.uint8)
    features = {f"{i}/image_aux1/encoded": frames[i].tobytes() for i in range(30)}
    features.update({f"{i}/action": b"" for i in range(30)})
    np.testing.assert_array_equal(m.decode_example(features), frames)
    with pytest.raises(ValueError, match="image_aux1"):
        m.decode_example({"0/action": b""})


def test_kinetics_helpers_and_trim(tmp_path, load_script):
    m = load_script("datasets/prepare_kinetics.py")
    assert m.resized_even(240, 320, 128) == (128, 170) and m.resized_even(321, 241, 64) == (86, 64)
    assert m.clip_name("abc", 12.0, 22.0) == "abc_000012_000022"
    csv = tmp_path / "val.csv"
    csv.write_text("label,youtube_id,time_start,time_end,split\nplaying drums,xyz,1,2,val\n")
    assert m.parse_annotations(csv) == [dict(label="playing_drums", youtube_id="xyz", start=1.0, end=2.0,
                                             split="test")]
    src = tiny_video(tmp_path / "raw/xyz.mp4", n=30, rate=10)
    m.main(["--src", str(tmp_path / "raw"), "--annotations", str(csv), "--out", str(tmp_path / "out"),
            "--size", "16"])
    out = tmp_path / "out/test/playing_drums/xyz_000001_000002.mp4"
    with av.open(str(out)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert len(frames) == 10 and frames[0].shape == (16, 22, 3)
    assert abs(frames[0].mean() - 80) < 4  # the trimmed clip starts at frame 10 (1 s at 10 fps)
    assert src.is_file()
