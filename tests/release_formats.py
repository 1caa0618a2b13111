"""Small files in the release's data formats, written by the tests themselves.

- CoinRun / MUGEN: a sprite folder of a few tiny solid-colour PNGs (most poses reach their image through
  the release's ``_suffix`` fallback) and episode JSON files;
- AudioSet-Drums: STFT pickles with their mp4 twins (``stft/`` and ``video/``);
- HDF5: video with a text-description file, semantic-map pairs, release token files.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import h5py
import numpy as np
from PIL import Image

# sprite colours (RGB), all distinct
COLOURS = {
    "background": (10, 20, 30), "center": (200, 0, 0), "mid": (0, 200, 0), "cliff": (0, 0, 200),
    "crate": (120, 60, 0), "lava": (250, 120, 0), "lavatop": (250, 200, 0), "ladder": (90, 90, 90),
    "coin": (255, 255, 0), "gem": (255, 0, 255), "agent_left": (0, 255, 255), "agent_right": (255, 255, 255),
    "saw": (60, 0, 60), "snail": (0, 60, 60), "bee": (60, 60, 0), "shield": (30, 140, 230),
}
AGENT = "kenneyLarge/Players/128x256_no_helmet/Yellow/alienYellow"


def _solid(path: Path, size: tuple[int, int], rgb: tuple[int, int, int], alpha: int = 255) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGBA", size, (*rgb, alpha)).save(path)


def write_coinrun_assets(root: Path) -> Path:
    """The sprites one episode of :func:`episode` needs, as tiny PNGs (fallbacks cover the poses)."""
    c = COLOURS
    Path(root).mkdir(parents=True, exist_ok=True)
    _solid(root / "backgrounds/space/bg.png", (8, 8), c["background"])
    for name, colour in (("Center", "center"), ("Mid", "mid"), ("Cliff", "cliff")):  # Cliff_left -> Cliff
        _solid(root / f"kenney/Ground/Planet/planet{name}.png", (4, 4), c[colour])
    _solid(root / "kenney/Tiles/boxCrate.png", (4, 4), c["crate"])  # boxCrate_double etc. -> boxCrate
    _solid(root / "kenney/Tiles/lava.png", (4, 4), c["lava"])
    _solid(root / "kenney/Tiles/lavaTop.png", (4, 4), c["lavatop"])  # lavaTop_low -> lavaTop
    _solid(root / "kenney/Tiles/ladderMid.png", (4, 4), c["ladder"])
    _solid(root / "kenneyLarge/Items/coinGold.png", (4, 4), c["coin"])
    _solid(root / "kenneyLarge/Items/gemRed.png", (4, 4), c["gem"])
    # the agent: 4 wide, 8 high (aspect 2), left half one colour, right half another (shows mirroring);
    # its bottom two rows are half transparent (alpha 128), which the loader makes opaque
    agent = np.zeros((8, 4, 4), np.uint8)
    agent[:, :2, :3], agent[:, 2:, :3] = c["agent_left"], c["agent_right"]
    agent[..., 3] = 255
    agent[6:, :, 3] = 128
    path = root / f"{AGENT}.png"  # every pose (_walk1, _jump, ...) falls back to it
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(agent, "RGBA").save(path)
    for name, colour in (("sawHalf", "saw"), ("snail", "snail"), ("bee", "bee")):
        _solid(root / f"kenneyLarge/Enemies/{name}.png", (4, 4), c[colour])  # _move, _dead -> the same
    _solid(root / "bubble_shield.png", (4, 8), c["shield"])
    return root


def agent_state(x: float, y: float, vx: float = 0.0, vy: float = 0.0, t: int = 0, **extra) -> dict:
    state = dict(x=x, y=y, vx=vx, vy=vy, time_alive=t, ladder=False, spring=0, is_killed=False,
                 killed_animation_frame_cnt=0, power_up_mode=False)
    return {**state, **extra}


def episode(frames: list[dict], maze: list[str] | None = None, zoom: float = 5.5, maze_w: int = 64,
            maze_h: int = 13) -> dict:
    """An episode JSON: ``frames`` are ``{"agent": ..., "monsters": [...], "coins_eaten": [...]}``."""
    if maze is None:  # solid ground on row 0, a platform on row 3
        maze = ["S" * maze_w] + ["." * maze_w] * 2 + ["." * 10 + "SSSS" + "." * (maze_w - 14)]
        maze += ["." * maze_w] * (maze_h - len(maze))
    return dict(game_id=0, level_seed=1, zoom=zoom, bgzoom=0.4, maze_w=maze_w, maze_h=maze_h,
                world_theme_n=0, agent_theme_n=0, background_themes=["backgrounds/space/bg.png"],
                ground_themes=["Planet"], agent_themes=["Yellow"],
                monster_names={"ground": ["sawHalf"], "walking": ["snail"], "flying": ["bee"]},
                video_res=1024, maze=maze,
                frames=[dict(frame_id=i, state_time=i, coins_eaten=f.get("coins_eaten", []),
                             agent=f["agent"], monsters=f.get("monsters", [])) for i, f in enumerate(frames)])


def walking_episode(n_frames: int = 12, x0: float = 2.0, speed: float = 0.5) -> dict:
    """Mugen walks right on the ground (y = 1) for ``n_frames`` frames."""
    return episode([{"agent": agent_state(x0 + speed * i, 1.0, vx=speed, t=i)} for i in range(n_frames)])


def write_coinrun_folder(root: Path, n_train: int = 3, n_test: int = 2, n_frames: int = 12) -> Path:
    """A v1 CoinRun folder (its name contains ``coinrun``): ``train/``, ``test/`` episode files and
    ``assets/``. Episodes walk right from different places."""
    root = Path(root)
    write_coinrun_assets(root / "assets")
    for split, n in (("train", n_train), ("test", n_test)):
        (root / split).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            data = walking_episode(n_frames, x0=2.0 + i)
            (root / split / f"ep{i:03d}.json").write_text(json.dumps(data))
    return root


# ------------------------------------------------------------------------------------ AudioSet-Drums
def write_stft_drums(root: Path, names: dict[str, list[str]], n_frames: int = 90, fps: int = 30,
                     size: int = 16, stft_shape: tuple[int, int] = (8, 4), protocol: int = 4) -> Path:
    """``root/stft/{split}/<name>.pickle`` (float ``(n_frames, F, W)`` in [0, 1], row ``t`` filled with
    ``t / 100``) and ``root/video/{split}/<name>.mp4`` (frame ``t``'s pixels = ``2 t``). Returns
    ``root/stft`` (the release's --data_path)."""
    import imageio.v2 as imageio

    for split, stems in names.items():
        (root / "stft" / split).mkdir(parents=True, exist_ok=True)
        (root / "video" / split).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            rows = np.broadcast_to((np.arange(n_frames) / 100.0)[:, None, None], (n_frames, *stft_shape))
            with open(root / "stft" / split / f"{stem}.pickle", "wb") as f:
                pickle.dump(np.ascontiguousarray(rows, dtype=np.float64), f, protocol=protocol)
            frames = np.stack([np.full((size, size, 3), 2 * t, np.uint8) for t in range(n_frames)])
            imageio.mimwrite(root / "video" / split / f"{stem}.mp4", frames, fps=fps, codec="libx264",
                             quality=10, macro_block_size=1, pixelformat="yuv444p",
                             output_params=["-crf", "0"])
    return root / "stft"


# ------------------------------------------------------------------------------------------- HDF5
def write_video_hdf5(path: Path, lengths: dict[str, list[int]], size: int = 8, sentinel: bool = True,
                     channels: int = 3) -> Path:
    """``{split}_data`` uint8 (frame ``j`` of the split = ``j`` in every pixel) and ``{split}_idx`` (the
    video starts, plus the total length when ``sentinel``)."""
    with h5py.File(path, "w") as f:
        for split, lens in lengths.items():
            n = sum(lens)
            shape = (n, size, size, channels) if channels else (n, size, size)
            data = np.broadcast_to(np.arange(n, dtype=np.uint8).reshape(-1, *[1] * (len(shape) - 1)), shape)
            f.create_dataset(f"{split}_data", data=np.ascontiguousarray(data))
            starts = np.cumsum([0, *lens])
            f.create_dataset(f"{split}_idx", data=starts if sentinel else starts[:-1])
    return path


def write_text_descriptions(folder: Path, lines: dict[str, list[list[str]]]) -> None:
    """``{split}_text_description.txt``: one line per video, its descriptions separated by tabs."""
    for split, videos in lines.items():
        (folder / f"{split}_text_description.txt").write_text("".join("\t".join(v) + "\n" for v in videos))


def write_smap_hdf5(path: Path, lengths: dict[str, list[int]], n_classes: int, size: int = 8) -> Path:
    """Label maps ``(N, H, W)``: frame ``j`` has label ``j % n_classes`` on its left half, 0 elsewhere."""
    with h5py.File(path, "w") as f:
        for split, lens in lengths.items():
            n = sum(lens)
            data = np.zeros((n, size, size), np.uint8)
            data[:, :, : size // 2] = (np.arange(n) % n_classes)[:, None, None]
            f.create_dataset(f"{split}_data", data=data)
            f.create_dataset(f"{split}_idx", data=np.cumsum([0, *lens]))
    return path


def write_token_hdf5(path: Path, lengths: dict[str, list[int]], grid: int, n_codes: int = 16384) -> Path:
    """Release token file: ``{split}_data`` int64 ``(N, grid, grid)`` with token ``(j, y, x)`` =
    ``(1000 j + 10 y + x) % n_codes``, and ``{split}_idx`` with the end sentinel."""
    with h5py.File(path, "w") as f:
        for split, lens in lengths.items():
            n = sum(lens)
            j, y, x = np.meshgrid(np.arange(n), np.arange(grid), np.arange(grid), indexing="ij")
            f.create_dataset(f"{split}_data", data=((1000 * j + 10 * y + x) % n_codes).astype(np.int64))
            f.create_dataset(f"{split}_idx", data=np.cumsum([0, *lens]))
    return path
