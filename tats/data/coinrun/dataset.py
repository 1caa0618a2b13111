"""MUGEN / CoinRun datasets: episodes rendered to clips, semantic maps and text descriptions.

Two layouts, as the release reads them (``tats/coinrun/coinrun_data.py`` and ``coinrun_data_v2.py``),
for a ``--data_path`` folder whose name contains ``coinrun``: v1, one JSON file per episode, and v2
(``--coinrun_v2_dataloader``), an index file per split. Items (keys as the release's): ``video``
``(3, T, R, R)`` in [-0.5, 0.5] (or the semantic map with ``--smap_only``), ``video_smap``
(``--smap_cond``), ``text`` (``--text_cond``), ``path``, ``start``. docs/data.md has the layouts,
flags and rules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from tats.data.base import MAX_READ_RETRIES, load_with_fallback, warn_skipped
from tats.data.coinrun.game import Game, load_game
from tats.data.coinrun.render import ALIEN_NAMES, MissingAssetError, SpriteSet, check_asset_root, draw_frame
from tats.data.coinrun.text import describe_clip

#: The release's CoinRun text length (its dataset default; its training script has no such flag).
COINRUN_TEXT_SEQ_LEN = 256
#: Random starts tried for a clip that must show the balanced sampler's class.
MAX_START_DRAWS = 1000


def is_coinrun_path(path: str | os.PathLike | None) -> bool:
    """The release's rule: a folder whose path contains ``coinrun`` (any case) holds CoinRun episodes."""
    return path is not None and Path(path).is_dir() and "coinrun" in str(path).lower()


@dataclass
class CoinRunOptions:
    """The CoinRun settings, named as the release's flags (defaults as its dataset's)."""

    sequence_length: int | None = None
    resolution: int = 256
    sample_every_n_frames: int = 1
    image_channels: int = 3
    max_label: int = 18
    use_onehot_smap: bool = False
    bbox_smap_for_agent: bool = False
    bbox_smap_for_monsters: bool = False
    fixed_start_idx: bool = False
    check_game_length: bool = False
    get_text_only: bool = False
    text_path: str | None = None
    use_manual_annotation_only: bool = False
    random_alien: bool = False
    coinrun_v2_dataloader: bool = False
    balanced_sampler: bool = False
    coinrun_assets: str | None = None

    @classmethod
    def from_args(cls, args: Any) -> CoinRunOptions:
        """From a Namespace: fields it has and that are not None (as the release's dataset did)."""
        names = [f.name for f in fields(cls)]
        return cls(**{k: getattr(args, k) for k in names if getattr(args, k, None) is not None})

    @property
    def span(self) -> int:
        """``(seq - 1) * n``: an episode needs more frames than this."""
        return (self.sequence_length - 1) * self.sample_every_n_frames


class CoinRunDataset(Dataset):
    """MUGEN episodes as clips (see the module docstring and docs/data.md).

    Args:
        root: the CoinRun folder (``train/``, ``test/`` or ``train.json``, ``test.json``).
        train: which split.
        options: :class:`CoinRunOptions`.
        game_frames, seg_maps, text: what items carry (the release's ``get_game_frame``,
            ``get_seg_map``, ``get_text_desc``).
    """

    def __init__(self, root: str | os.PathLike, train: bool = True, options: CoinRunOptions | None = None,
                 game_frames: bool = True, seg_maps: bool = False, text: bool = False) -> None:
        self.root = Path(root)
        self.train = train
        self.split = "train" if train else "test"
        self.opt = options or CoinRunOptions()
        if not (game_frames or seg_maps or text):
            raise ValueError("a CoinRun dataset must return game frames, semantic maps or text")
        if self.opt.sequence_length is None and not self.opt.get_text_only:
            raise ValueError("CoinRun clips need --sequence_length")
        self.game_frames, self.seg_maps, self.text = game_frames, seg_maps, text
        self.asset_root = Path(self.opt.coinrun_assets or self.root / "assets")
        if (game_frames or seg_maps) and not self.opt.get_text_only:
            check_asset_root(self.asset_root)  # before any episode is read: a clear error naming it
        self.manual: dict[str, list[str]] = {}
        self.full_episodes = False
        self.entries: list[dict[str, Any]] = []  # {"path": Path, "annotations": [...], "video": {...}}
        if self.opt.coinrun_v2_dataloader:
            self._index_v2()
        else:
            self._index_v1()
        if not self.entries:
            raise ValueError(f"--data_path {self.root}: no usable CoinRun episode in the {self.split} split")
        self.classes_for_sampling = None
        if self.opt.balanced_sampler and train:
            self._index_classes()
        self._sprites: dict[tuple, SpriteSet] = {}

    # ------------------------------------------------------------------ indexing
    def _index_v1(self) -> None:
        folder = self.root / self.split
        if not folder.is_dir():
            raise ValueError(f"--data_path {self.root}: expected {folder} with <episode>.json files "
                             "(or train.json / test.json with --coinrun_v2_dataloader)")
        files = sorted(p for p in folder.iterdir() if p.suffix == ".json")
        skipped = []
        if self.opt.check_game_length and not self.opt.get_text_only and self.opt.span + 1 > 90:
            # (the release checks only clips longer than its 3-second, 90-frame episodes)
            kept = []
            for p in files:
                try:
                    n = len(load_game(p).frames)
                except ValueError as err:
                    skipped.append((p.name, str(err)))
                    continue
                if n > self.opt.span:
                    kept.append(p)
                else:
                    skipped.append((p.name, f"{n} frames, a clip spans {self.opt.span + 1}"))
            files = kept
        if self.text and self.opt.text_path:
            try:
                self.manual = json.loads(Path(self.opt.text_path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise ValueError(f"--text_path {self.opt.text_path}: cannot read the manual descriptions "
                                 f"({err}); expected a JSON object {{episode name: [texts]}}") from None
        if self.text and self.opt.use_manual_annotation_only:
            if not self.manual:
                raise ValueError("--use_manual_annotation_only needs --text_path with manual descriptions")
            files = [p for p in files if p.stem in self.manual]
        warn_skipped("CoinRun episodes", str(folder), skipped)
        self.entries = [{"path": p} for p in files]

    def _index_v2(self) -> None:
        index = self.root / f"{self.split}.json"
        try:
            data = json.loads(index.read_text(encoding="utf-8"))
            meta, items = data["metadata"], data["data"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ValueError(f"--coinrun_v2_dataloader: cannot read {index} ({type(err).__name__}: {err}); "
                             "expected {\"metadata\": {...}, \"data\": [...]}") from None
        self.metadata = meta
        self.full_episodes = meta.get("type") == "full"
        # the release joins data_folder with each json_file as given; a relative folder is read from here
        base = Path(meta.get("data_folder") or ".")
        base = base if base.is_absolute() else self.root / base
        span = self.opt.span if self.opt.sequence_length is not None else -1
        skipped = []
        for i, item in enumerate(items):
            video = item.get("video", {})
            if int(video.get("num_frames", 0)) > span:
                self.entries.append({"path": base / video["json_file"], "video": video,
                                     "annotations": item.get("annotations", [])})
            else:
                skipped.append((f"item {i}", f"{video.get('num_frames')} frames, a clip spans {span + 1}"))
        warn_skipped("CoinRun episodes", str(index), skipped)

    def _index_classes(self) -> None:
        """Multi-hot ``(N, C)`` characters and game events of every item, for the balanced sampler."""
        if not self.opt.coinrun_v2_dataloader:
            raise ValueError("--balanced_sampler needs --coinrun_v2_dataloader (the classes come from its "
                             "index)")
        meta = self.metadata
        self.sampling_classes = list(meta.get("characters", [])) + list(meta.get("game_events", []))
        lookup = {name: i for i, name in enumerate(self.sampling_classes)}
        rows = []
        for e in self.entries:
            v = e["video"]
            if self.full_episodes:
                present = list(v.get("character_ranges", {})) + list(v.get("game_event_timestamps", {}))
            else:
                present = list(v.get("gt_characters", [])) + list(v.get("game_events", []))
            row = [0] * len(self.sampling_classes)
            for name in present:
                if name not in lookup:
                    raise ValueError(f"{self.root / (self.split + '.json')}: class {name!r} is not among the "
                                     "metadata's characters and game_events")
                row[lookup[name]] = 1
            rows.append(row)
        self.classes_for_sampling = torch.tensor(rows, dtype=torch.long)

    # ------------------------------------------------------------------ items
    def __len__(self) -> int:
        return len(self.entries)

    def describe(self, index: int) -> str:
        return str(self.entries[index]["path"])

    def sprites(self, game: Game) -> SpriteSet:
        """The sprites of ``game``'s themes at ``--resolution`` (loaded once per theme combination)."""
        aliens = None
        if self.opt.random_alien:
            aliens = ALIEN_NAMES["train"] + ALIEN_NAMES["test"]
        key = (game.background, game.ground, None if aliens else game.agent_theme, tuple(game.monster_list),
               game.zoom, game.maze_w)
        if key not in self._sprites:
            self._sprites[key] = SpriteSet(self.asset_root, game, self.opt.resolution, self.opt.max_label,
                                           aliens)
        return self._sprites[key]

    def window(self, game: Game, valid: list | None = None) -> tuple[int, int]:
        """``(start, end)`` frame range of a clip of ``game`` (``valid``: frame ranges or single frames
        the clip must touch, from the balanced sampler's class)."""
        n = len(game.frames)
        if self.opt.sequence_length is None or self.opt.get_text_only:
            return 0, n
        span, seq, every = self.opt.span, self.opt.sequence_length, self.opt.sample_every_n_frames
        if span >= n:
            raise ValueError(f"{game.path}: {n} frames, too few for {seq} frames {every} apart")
        if self.opt.fixed_start_idx or not self.train:
            start = 0
        else:
            for _ in range(MAX_START_DRAWS):  # the release redraws until the class is on screen
                start = int(torch.randint(0, n - span, (1,)).item())
                if not valid or any(_touches(r, start, start + seq * every) for r in valid):
                    break
            else:
                raise ValueError(f"{game.path}: no clip start in [0, {n - span}) shows the sampled class "
                                 f"(frames {valid})")
        return start, start + seq * every

    def _clip(self, game: Game, start: int, end: int, sprites: SpriteSet, semantic: bool,
              alien: str) -> torch.Tensor:
        o = self.opt
        frames = [draw_frame(game, i, sprites, o.resolution, semantic, alien,
                             bbox_agent=o.bbox_smap_for_agent, bbox_monsters=o.bbox_smap_for_monsters)
                  for i in range(start, end, o.sample_every_n_frames)]
        video = torch.from_numpy(np.stack(frames))  # (T, R, R, 3) or (T, R, R)
        if not semantic:
            return video.permute(3, 0, 1, 2).float() / 255.0 - 0.5  # (3, T, R, R)
        if self.opt.use_onehot_smap:  # one-hot stays in [0, 1] (the release's choice)
            return F.one_hot(video.long(), self.opt.max_label + 1).permute(3, 0, 1, 2).float()
        video = video.float()[None] / self.opt.max_label  # (1, T, R, R)
        return video.repeat(max(self.opt.image_channels, 1), 1, 1, 1) - 0.5

    def _caption(self, index: int, game: Game, start: int, end: int, alien: str) -> str:
        entry = self.entries[index]
        if self.opt.coinrun_v2_dataloader and not self.full_episodes:
            notes = entry["annotations"]
            low = 1 if self.opt.use_manual_annotation_only else 0  # index 0 is the automatic text
            if len(notes) <= low:
                kind = "manual annotation" if low else "annotation"
                raise ValueError(f"{entry['path']}: no {kind} to draw a text from")
            return str(notes[int(torch.randint(low, len(notes), (1,)).item())]["text"])
        texts = self.manual.get(entry["path"].stem)
        if texts:
            return str(texts[0] if len(texts) == 1 else texts[int(torch.randint(0, len(texts), (1,)).item())])
        return describe_clip(game, start, end, alien)

    def _load(self, index: int, target_class: int | None = None) -> dict[str, Any]:
        entry = self.entries[index]
        game = load_game(entry["path"])
        valid = None
        if target_class is not None and self.full_episodes:
            name = self.sampling_classes[target_class]
            v = entry["video"]
            valid = (v.get("character_ranges", {}).get(name, [])
                     + v.get("game_event_timestamps", {}).get(name, []))
            if not valid:
                raise ValueError(f"{entry['path']}: the sampler drew class {name!r}, which the episode lacks")
        start, end = self.window(game, valid)
        alien = "Mugen"
        if self.opt.random_alien:
            names = ALIEN_NAMES[self.split]
            alien = names[int(torch.randint(0, len(names), (1,)).item())]
        item: dict[str, Any] = {"path": str(entry["path"]), "start": start}
        if not self.opt.get_text_only and (self.game_frames or self.seg_maps):
            sprites = self.sprites(game)
            if self.game_frames:
                item["video"] = self._clip(game, start, end, sprites, False, alien)
            if self.seg_maps:
                key = "video_smap" if self.game_frames else "video"
                item[key] = self._clip(game, start, end, sprites, True, alien)
        if self.text:
            item["text"] = self._caption(index, game, start, end, alien)
        return item

    def __getitem__(self, index: int | tuple[int, int]) -> dict[str, Any]:
        target = None
        if isinstance(index, tuple):  # (item, class) from the balanced sampler
            index, target = index
        n = len(self)
        index = int(index) % n
        return load_with_fallback(
            self, index, lambda i, attempt: self._load(i, target if attempt == 0 else None),
            lambda i: (i + 1) % n, min(MAX_READ_RETRIES, n), "episode",
            errors=(ValueError, OSError, KeyError, IndexError),
            fatal=(MissingAssetError,),  # every episode needs the sprites: no other item would do better
        )


def _touches(valid: Any, start: int, stop: int) -> bool:
    """Whether a character range ``[s, e]`` (or an event frame ``t``) meets the clip ``[start, stop]``."""
    lo, hi = (valid[0], valid[1]) if isinstance(valid, (list, tuple)) else (valid, valid)
    return hi >= start and stop >= lo
