"""MUGEN / CoinRun episodes: the per-episode JSON game state (the fields the release's
``tats/coinrun/game.py`` reads), parsed into plain dataclasses, and the states derived from it by the
release's rules (the agent's facing and pose, a monster's image, a monster's theme name).
docs/data.md ("MUGEN / CoinRun episodes") shows the file and the rules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

#: The agent's walk/climb images alternate every this many ``time_alive`` steps (the game's constant).
AGENT_ANIM_FREQ = 5
SPACE, COIN, GEM = ".", "1", "2"


@dataclass
class Agent:
    """The player (Mugen) in one frame, in maze units (x right, y up)."""

    x: float
    y: float
    vx: float = 0.0
    vy: float = 0.0
    time_alive: int = 0
    ladder: bool = False
    spring: float = 0
    is_killed: bool = False
    killed_animation_frame_cnt: int = 0
    power_up_mode: bool = False

    @property
    def is_facing_right(self) -> bool:
        return not self.vx < 0

    @property
    def walk1_mode(self) -> bool:
        return (self.time_alive // AGENT_ANIM_FREQ) % 2 == 0

    @property
    def pose(self) -> str:
        """One of hit, climb1, climb2, jump, duck, stand, walk1, walk2 (the asset name suffix)."""
        if self.is_killed:
            return "hit"
        if self.ladder:
            return "climb1" if self.walk1_mode else "climb2"
        if self.vy != 0:
            return "jump"
        if self.spring != 0:
            return "duck"
        if self.vx == 0:
            return "stand"
        return "walk1" if self.walk1_mode else "walk2"


@dataclass
class Monster:
    """One monster in one frame; ``theme`` indexes :attr:`Game.monster_list`."""

    x: float
    y: float
    theme: int = 0
    vx: float = 0.0
    vy: float = 0.0
    is_jumping: bool = False
    is_dead: bool = False
    time: int = 0
    anim_freq: int = 1
    monster_dying_frame_cnt: int = 0

    @property
    def walk1_mode(self) -> bool:
        if self.is_jumping:
            return self.vy == 0
        return (self.time // self.anim_freq) % 2 == 0


@dataclass
class Frame:
    """The game state at one video frame."""

    agent: Agent
    monsters: list[Monster] = field(default_factory=list)
    coins_eaten: list[tuple[int, int]] = field(default_factory=list)
    state_time: float = 0


def _pick(cls: type, data: dict[str, Any]) -> Any:
    """``cls`` from the keys of ``data`` it has fields for (the JSON carries extras, e.g. ``pose``)."""
    names = cls.__dataclass_fields__
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class Game:
    """One episode: level, themes and per-frame states (docs/data.md shows the JSON)."""

    maze: list[str]
    frames: list[Frame]
    zoom: float = 5.5
    bgzoom: float = 0.4
    maze_w: int = 64
    maze_h: int = 13
    world_theme_n: int = 0
    agent_theme_n: int = 0
    background_themes: list[str] = field(default_factory=list)
    ground_themes: list[str] = field(default_factory=list)
    agent_themes: list[str] = field(default_factory=list)
    monster_names: dict[str, list[str]] = field(default_factory=dict)
    path: str = ""

    @property
    def monster_list(self) -> list[str]:
        """Monster names in ``theme`` order: ground, then walking, then flying ones."""
        m = self.monster_names
        return [*m.get("ground", []), *m.get("walking", []), *m.get("flying", [])]

    @property
    def background(self) -> str:
        return self.background_themes[self.world_theme_n]

    @property
    def ground(self) -> str:
        return self.ground_themes[self.world_theme_n]

    @property
    def agent_theme(self) -> str:
        return self.agent_themes[self.agent_theme_n]

    def tile(self, x: int, y: int) -> str:
        return self.maze[y][x]


def parse_game(data: dict[str, Any], path: str = "") -> Game:
    """A :class:`Game` from an episode's decoded JSON.

    Coins eaten by the end of the clip are put back into the maze where it shows empty space: the
    release's clip files were saved after the coins were collected, and each frame's own
    ``coins_eaten`` decides whether a coin is drawn (the release's ``reset_eaten_coins``).
    """
    try:
        frames = [
            Frame(
                agent=_pick(Agent, f["agent"]),
                monsters=[_pick(Monster, m) for m in f.get("monsters", [])],
                coins_eaten=[(int(c[0]), int(c[1])) for c in f.get("coins_eaten", [])],
                state_time=f.get("state_time", 0),
            )
            for f in data["frames"]
        ]
        maze = [str(row) for row in data["maze"]]
        scalars = {k: data[k] for k in ("zoom", "bgzoom", "maze_w", "maze_h", "world_theme_n",
                                        "agent_theme_n") if k in data}
        lists = {k: list(data[k]) for k in ("background_themes", "ground_themes", "agent_themes")
                 if k in data}
        monster_names = {k: list(v) for k, v in (data.get("monster_names") or {}).items()}
    except (KeyError, TypeError, IndexError) as err:
        raise ValueError(f"{path or 'episode'}: not a CoinRun episode JSON ({type(err).__name__}: {err}); "
                         "expected 'maze' and 'frames' with an 'agent' per frame") from None
    if not frames:
        raise ValueError(f"{path or 'episode'}: the episode has no frames")
    if frames[-1].coins_eaten:
        rows = [list(r) for r in maze]
        for x, y in frames[-1].coins_eaten:
            if rows[y][x] == SPACE:
                rows[y][x] = COIN
        maze = ["".join(r) for r in rows]
    return Game(maze=maze, frames=frames, monster_names=monster_names, path=path, **scalars, **lists)


def load_game(path: str | os.PathLike) -> Game:
    """Read and parse one episode file; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path}: cannot read the episode JSON ({err})") from None
    return parse_game(data, str(path))
