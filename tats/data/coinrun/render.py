"""Render MUGEN / CoinRun frames and semantic maps from episode states and the game's asset images.

The facts are the release's (``tats/coinrun/construct_from_json.py``); the code is written from them:
the asset folder's layout (the release's ``tats/coinrun/assets``, Kenney sprites), the camera and cell
geometry for a square frame of ``video_res`` pixels, the draw order, sprites with binary alpha, and the
semantic maps' labels and boxes. docs/data.md ("MUGEN / CoinRun episodes") writes them out.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from tats.data.coinrun.game import COIN, GEM, SPACE, Game

LADDER, LAVA_SURFACE, LAVA_MIDDLE = "=", "^", "|"
WALL_SURFACE, WALL_MIDDLE, WALL_CLIFF_LEFT, WALL_CLIFF_RIGHT = "S", "A", "a", "b"
CRATES = ("#", "$", "&", "%")
AGENT_POSES = ("walk1", "walk2", "climb1", "climb2", "stand", "jump", "duck", "hit")
MONSTER_POSES = ("", "_move", "_dead")
#: Frames of the game's animations (agent death, monster death).
DEATH_ANIM_LENGTH = 30
MONSTER_DEATH_ANIM_LENGTH = 3
#: Vertical camera offset (in cells) per zoom level.
DY_RATIO = {5.5: 5.0, 4.3: 6.5, 5.0: 5.5, 6.0: 4.5}
MAX_LABELS = (18, 21, 22)

#: ``--random_alien`` characters (asset path prefix under the asset folder) and their split.
ALIEN_PATHS = {
    "Mugen": "kenneyLarge/Players/128x256_no_helmet/Yellow/alienYellow",
    "alienBeige": "kenney/Players/128x256/Beige/alienBeige",
    "alienBlue": "kenney/Players/128x256/Blue/alienBlue",
    "alienGreen": "kenney/Players/128x256/Green/alienGreen",
    "alienPink": "kenney/Players/128x256/Pink/alienPink",
    "alienYellow": "kenney/Players/128x256/Yellow/alienYellow",
    "adventurer": "kenney_characters/adventurer",
    "maleBunny": "kenney_characters/bunny1",
    "femaleBunny": "kenney_characters/bunny2",
    "femaleAdventurer": "kenney_characters/character_femaleAdventurer",
    "femalePerson": "kenney_characters/character_femalePerson",
    "maleAdventurer": "kenney_characters/character_maleAdventurer",
    "malePerson": "kenney_characters/character_malePerson",
    "platformChar": "kenney_characters/platformChar",
    "robot": "kenney_characters/character_robot",
    "zombieDark": "kenney_characters/character_zombie",
    "femalePlayer": "kenney_characters/female",
    "luigi": "kenney_characters/luigi",
    "malePlayer": "kenney_characters/player",
    "soldier": "kenney_characters/soldier",
    "zombieGreen": "kenney_characters/zombie",
}
ALIEN_NAMES = {
    "train": ["Mugen", "alienBeige", "alienGreen", "alienPink", "alienYellow", "adventurer", "maleBunny",
              "femaleAdventurer", "femalePerson", "maleAdventurer", "malePerson", "platformChar", "robot",
              "zombieDark", "femalePlayer", "luigi", "soldier", "zombieGreen"],
    "test": ["alienBlue", "malePlayer", "femaleBunny"],
}


def semantic_labels(max_label: int = 18) -> dict:
    """Label of every object kind: ``{"background", "alien", "shield", "world": {tile: id},
    "monster": {name: id}}``. The agent is always ``max_label``; objects the v1 game lacks map to 0."""
    if max_label not in MAX_LABELS:
        raise ValueError(f"--max_label {max_label}: expected one of {MAX_LABELS} (18: v1 game, 21/22: v2)")
    v1 = max_label == 18
    world = {WALL_MIDDLE: 3, WALL_SURFACE: 4, WALL_CLIFF_LEFT: 5, WALL_CLIFF_RIGHT: 6,
             COIN: 17 if v1 else 19, GEM: 0 if v1 else 20, LAVA_MIDDLE: 1, LAVA_SURFACE: 2, LADDER: 7,
             **{c: 8 for c in CRATES}}
    monster = {"sawHalf": 16, "bee": 15, "slimeBlock": 14, "slimeBlue": 13, "mouse": 12, "snail": 11,
               "ladybug": 10, "wormPink": 9, "barnacle": 0 if v1 else 17, "frog": 0 if v1 else 18}
    return dict(background=0, alien=max_label, shield=0 if v1 else 21, world=world, monster=monster)


class MissingAssetError(FileNotFoundError):
    """An asset folder or image the episode needs is not there."""


def check_asset_root(root: str | os.PathLike, flag: str = "--coinrun_assets") -> Path:
    """``root`` as a Path, or :class:`MissingAssetError` naming the folder and the flag that sets it."""
    root = Path(root)
    if not root.is_dir():
        raise MissingAssetError(
            f"CoinRun asset folder not found: {root} ({flag}). Rendering MUGEN episodes needs the game's "
            "sprites in the layout of the release's tats/coinrun/assets folder (backgrounds/, kenney/, "
            "kenneyLarge/, bubble_shield.png); pass its location with --coinrun_assets"
        )
    return root


def _resample(img: Image.Image, nearest: bool = False) -> Image.Resampling:
    if nearest or img.mode in ("1", "P"):
        return Image.Resampling.NEAREST
    return Image.Resampling.BICUBIC


def binarize_alpha(img: Image.Image) -> Image.Image:
    """RGBA images: every pixel with alpha > 0 becomes opaque (other modes are returned as they are)."""
    if img.mode != "RGBA":
        return img
    a = np.array(img)
    a[..., 3] = np.where(a[..., 3] > 0, 255, 0)
    return Image.fromarray(a, "RGBA")


@dataclass
class Sprite:
    """A loaded, resized asset: the image, the original height / width and its semantic label."""

    image: Image.Image
    aspect: float
    label: int


def load_sprite(root: Path, rel: str, size_of, label: int, flip: bool = False,
                binarize: bool = True) -> Sprite:
    """Open ``root/rel`` (or the name without its last ``_suffix``), resize it to ``size_of(w, h)``
    (None: keep), mirror it when ``flip``, and make its alpha binary when ``binarize``."""
    path = root / rel
    if not path.is_file():
        stem, ext = os.path.splitext(str(path))
        fallback = Path(stem.rsplit("_", 1)[0] + ext) if "_" in stem else None
        if fallback is None or not fallback.is_file():
            also = f" nor {fallback.name}" if fallback is not None else ""
            raise MissingAssetError(f"CoinRun asset {rel} not found in the asset folder {root}{also}; "
                                    "--coinrun_assets must hold the game's sprites")
        path = fallback
    with Image.open(path) as opened:
        img = opened.copy()
    aspect = img.size[1] / img.size[0]
    size = size_of(*img.size)
    if size is not None:
        img = img.resize(size, _resample(img))
    if flip:
        img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if binarize:  # after resizing, which interpolates alpha again
        img = binarize_alpha(img)
    return Sprite(img, aspect, label)


def asset_files(game: Game, alien_names: list[str] | None = None) -> dict:
    """Relative image paths of everything ``game`` can show (``alien_names``: the characters to load,
    default the episode's own agent theme as ``Mugen``)."""
    walls = f"kenney/Ground/{game.ground}/{game.ground.lower()}"
    tiles, items, enemies = "kenney/Tiles/", "kenneyLarge/Items/", "kenneyLarge/Enemies/"
    world = {WALL_MIDDLE: walls + "Center.png", WALL_SURFACE: walls + "Mid.png",
             WALL_CLIFF_LEFT: walls + "Cliff_left.png", WALL_CLIFF_RIGHT: walls + "Cliff_right.png",
             COIN: items + "coinGold.png", GEM: items + "gemRed.png",
             "#": tiles + "boxCrate.png", "$": tiles + "boxCrate_double.png",
             "&": tiles + "boxCrate_single.png", "%": tiles + "boxCrate_warning.png",
             LAVA_MIDDLE: tiles + "lava.png", LAVA_SURFACE: tiles + "lavaTop_low.png",
             LADDER: tiles + "ladderMid.png"}
    if alien_names is None:
        theme = game.agent_theme
        aliens = {"Mugen": f"kenneyLarge/Players/128x256_no_helmet/{theme}/alien{theme}"}
    else:
        aliens = {name: ALIEN_PATHS[name] for name in alien_names}
    return dict(background=game.background, world=world, alien=aliens, shield="bubble_shield.png",
                monster={name: enemies + name for name in game.monster_list})


class SpriteSet:
    """Every sprite of one theme combination at one frame size (cell size ``k``)."""

    def __init__(self, root: Path, game: Game, video_res: int, max_label: int,
                 alien_names: list[str] | None = None) -> None:
        labels = semantic_labels(max_label)
        files = asset_files(game, alien_names)
        self.k = k = game.zoom * video_res / game.maze_w
        zoomed = video_res * game.zoom
        self.sprites: dict[str, Sprite] = {}
        tile = (math.ceil(k + 0.5), math.ceil(k + 0.5))
        for key, rel in files["world"].items():
            lava = key in (LAVA_MIDDLE, LAVA_SURFACE)  # lava is cut per frame from the full image
            self.sprites[key] = load_sprite(root, rel, lambda w, h, lava=lava: None if lava else tile,
                                            labels["world"][key])
        for name, prefix in files["alien"].items():
            for pose in AGENT_POSES:
                for suffix in ("", "_left"):  # the images face right
                    self.sprites[f"{name}_{pose}{suffix}"] = load_sprite(
                        root, f"{prefix}_{pose}.png", lambda w, h: (math.ceil(k), math.ceil(h / w * k)),
                        labels["alien"], flip=bool(suffix))
        for name, prefix in files["monster"].items():
            for pose in MONSTER_POSES:
                for suffix in ("", "_right"):  # the images face left
                    self.sprites[f"{name}{pose}{suffix}"] = load_sprite(
                        root, f"{prefix}{pose}.png", lambda w, h: (math.ceil(k), math.ceil(k)),
                        labels["monster"].get(name, 0), flip=bool(suffix))
        self.sprites["shield"] = load_sprite(root, files["shield"],
                                             lambda w, h: (math.ceil(k * 1.15), math.ceil(k * 2.1)),
                                             labels["shield"])
        self.sprites["background"] = load_sprite(
            root, files["background"], lambda w, h: (math.ceil(zoomed), math.ceil(zoomed)),
            labels["background"], binarize=False)

    def __getitem__(self, key: str) -> Sprite:
        return self.sprites[key]


def _int_rect(r: list[float]) -> list[int]:
    """xywh (or xyxy) rounded outwards: floor the corner, ceil the size (or far corner)."""
    return [math.floor(r[0]), math.floor(r[1]), math.ceil(r[2]), math.ceil(r[3])]


def _xyxy(r: list[float]) -> list[float]:
    return [r[0], r[1], r[0] + r[2], r[1] + r[3]]


def _outside(r: list[float], size: int) -> bool:
    return r[0] + r[2] < 0 or r[0] > size or r[1] + r[3] < 0 or r[1] > size


def _intersect(a: list[float], b: list[float]) -> list[float] | None:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    return [x0, y0, x1 - x0, y1 - y0] if x1 > x0 and y1 > y0 else None


def _paint(img: Image.Image, rect: list[int], sprite_img: Image.Image, label: int, rgb: bool,
           box: bool = False, cut_top: float = 0.0) -> None:
    """Draw ``sprite_img`` into ``rect`` (xywh, ints): its pixels (``rgb``) or ``label`` through its
    alpha mask; ``box`` paints the whole rectangle, minus ``int(cut_top * width)`` rows at the top."""
    w, h = sprite_img.size
    if (rect[2], rect[3]) != (w, h):  # e.g. a dying monster, or a tile whose rounding differs
        sprite_img = sprite_img.resize((rect[2], rect[3]), _resample(sprite_img, nearest=not rgb))
    if rgb:
        img.paste(sprite_img, _xyxy(rect), sprite_img if sprite_img.mode == "RGBA" else None)
    elif box and cut_top:
        rows = int(cut_top * rect[2])
        img.paste(label, _xyxy([rect[0], rect[1] + rows, rect[2], sprite_img.size[1] - rows]))
    else:
        img.paste(label, _xyxy(rect), sprite_img if sprite_img.mode == "RGBA" and not box else None)


def _fade(sprite_img: Image.Image, amount: int) -> Image.Image:
    """The agent's death animation: alpha lowered by ``amount`` (clipped at 0)."""
    a = np.array(sprite_img.convert("RGBA"), dtype=np.int16)
    a[..., 3] = np.clip(a[..., 3] - amount, 0, None)
    return Image.fromarray(a.astype(np.uint8), "RGBA")


def draw_frame(game: Game, index: int, sprites: SpriteSet, video_res: int, semantic: bool = False,
               alien: str = "Mugen", bbox_agent: bool = False, bbox_monsters: bool = False) -> np.ndarray:
    """Frame ``index`` of ``game`` as uint8 ``(R, R, 3)`` RGB, or ``(R, R)`` labels when ``semantic``."""
    rgb = not semantic
    img = Image.new("RGB" if rgb else "L", (video_res, video_res))
    frame = game.frames[index]
    agent = frame.agent
    k = sprites.k
    centre = (video_res - 1) // 2
    if game.zoom not in DY_RATIO:
        raise ValueError(f"{game.path}: zoom {game.zoom} is not a CoinRun zoom level {sorted(DY_RATIO)}")
    dx = -agent.x * k + centre - 0.5 * k
    dy = -centre + DY_RATIO[game.zoom] * k

    if rgb:  # the background, tiled with parallax (semantic maps leave it at label 0)
        z = video_res * game.zoom
        bg = sprites["background"].image
        for tx in range(-1, 3):
            for ty in range(-1, 2):
                r = [z * tx + centre + game.bgzoom * (dx + k * game.maze_h / 2) - z * 0.5,
                     z * ty + centre + game.bgzoom * (dy - k * game.maze_h / 2) - z * 0.5, z, z]
                if not _outside(r, video_res):
                    img.paste(bg, _xyxy(_int_rect(r)))

    radius = int(1 + game.maze_w / game.zoom)
    ix, iy = int(agent.x + 0.5), int(agent.y + 0.5)
    eaten = set(frame.coins_eaten)
    for y in range(max(iy - radius, 0), min(iy + radius + 1, game.maze_h)):
        for x in range(max(ix - radius, 0), min(ix + radius + 1, game.maze_w)):
            key = game.tile(x, y)
            if key == SPACE or (x, y) in eaten:
                continue
            if key not in sprites.sprites:
                raise ValueError(f"{game.path}: unknown maze tile {key!r} at ({x}, {y})")
            r = [k * x + dx - 0.1, video_res - k * y + dy - 0.1, k + 0.5 + 0.2, k + 0.5 + 0.2]
            if _outside(r, video_res):
                continue
            s = sprites[key]
            if key in (LAVA_MIDDLE, LAVA_SURFACE):
                _draw_lava(img, r, s, frame.state_time, rgb)
            else:
                _paint(img, _int_rect(r), s.image, s.label, rgb)

    for m in frame.monsters:
        shrink = 0.0
        if m.is_dead:
            left = max(0, m.monster_dying_frame_cnt)
            shrink = (MONSTER_DEATH_ANIM_LENGTH - left) * 0.8 / MONSTER_DEATH_ANIM_LENGTH
        rect = [math.floor(k * m.x + dx), math.floor(video_res - k * m.y + dy + k * shrink),
                math.ceil(k), math.ceil(k * (1 - shrink))]
        pose = "_dead" if m.is_dead else ("" if m.walk1_mode else "_move")
        s = sprites[game.monster_list[m.theme] + pose + ("_right" if m.vx > 0 else "")]
        _paint(img, rect, s.image, s.label, rgb, box=bbox_monsters)

    s = sprites[f"{alien}_{agent.pose}" + ("" if agent.is_facing_right else "_left")]
    rect = [math.floor(k * agent.x + dx), math.floor(video_res - k * (agent.y + s.aspect - 1) + dy),
            math.ceil(k), math.ceil(s.aspect * k)]
    image = s.image
    if agent.is_killed:
        # release rule: (31 - count) * 12 of alpha removed; over 255 the agent is not drawn at all
        fade = (DEATH_ANIM_LENGTH + 1 - agent.killed_animation_frame_cnt) * 12
        image = None if fade > 255 else (_fade(image, fade) if rgb else image)
    if image is not None:
        _paint(img, rect, image, s.label, rgb, box=bbox_agent, cut_top=0.8)
    if agent.power_up_mode:
        s = sprites["shield"]
        # the game's offsets of 7 and 8 pixels are for 1024-pixel frames
        rect = [math.floor(k * agent.x + dx - 7 * video_res / 1024),
                math.floor(video_res - k * (agent.y + 1) + dy + 8 * video_res / 1024),
                math.ceil(k * 1.15), math.ceil(k * 2.1)]
        if agent.pose == "duck":
            rect[1] += math.floor(8 * video_res / 1024)
        _paint(img, rect, s.image, s.label, rgb, box=bbox_agent, cut_top=0.45)
    return np.asarray(img)


def _draw_lava(img: Image.Image, r: list[float], s: Sprite, state_time: float, rgb: bool) -> None:
    """Lava scrolls: the tile shows two pieces of the image, shifted by the fractional part of
    ``state_time / 10`` of a tile."""
    w, h = s.image.size
    src = [0, 0, w, h]
    shift = state_time * 0.1
    shift = -(shift - int(shift))  # in (-1, 0]
    d1, d2, s1, s2 = list(r), list(r), list(src), list(src)
    d1[0] += shift * r[2]
    d2[0] += r[2] + shift * r[2]
    s1[0] += -shift * w
    s2[0] += -w - shift * w
    d1, d2 = _intersect(d1, r), _intersect(d2, r)
    if d1 is not None:
        d1[2] += 0.5
    if d2 is not None:
        d2[0] -= 0.5
        d2[2] += 0.5
    s1, s2 = _intersect(s1, src), _intersect(s2, src)
    for piece, dest in ((s1, d1), (s2, d2)):
        if piece is not None and dest is not None:
            crop = s.image.crop(_int_rect(_xyxy(piece)))
            _paint(img, _int_rect(dest), crop, s.label, rgb)
