"""Automatic text descriptions of MUGEN / CoinRun clips, from the episode's game states.

The rules are the release's (``tats/coinrun/generate_text_desc.py``), written here from its behaviour
(docs/data.md, "MUGEN / CoinRun episodes"): the clip's frames are cut into runs of one pose kind, runs
are merged, each long enough run gets a phrase, and the description joins them, e.g.
``Mugen walks to the right, and jumps up to the right to a platform and collects a coin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tats.data.coinrun.game import GEM, Game

#: Runs shorter than this (end - start) get no phrase; ground runs shorter than this may merge jumps.
MIN_RUN = 5
EMPTY_BELOW = ".12"  # space, coin, gem: nothing to stand on
GROUND_TILES, CRATE_TILES, LADDER_TILE = "SAab", "#$&%", "="


def pose_kind(pose: str) -> str:
    """``walk1`` -> ``ground``; climb1/climb2 -> ``climb``; ``jump``, ``hit`` unchanged."""
    base = pose.strip("12")
    return "ground" if base in ("walk", "duck", "stand") else base


@dataclass
class Run:
    """Frames ``start..end`` (inclusive) with one pose kind, and what happened in them."""

    start: int
    end: int
    kind: str
    x0: float
    y0: float
    x1: float
    y1: float
    above: str = "."
    below: str = "."
    jumps: int = 0
    coins: int = 0
    gems: int = 0
    shield_start: bool = False
    shield_end: bool = False
    shield_changed: bool = False
    killed: list[str] = field(default_factory=list)
    jumped_over: list[str] = field(default_factory=list)
    killed_by: str = ""

    def bumped_head(self) -> bool:
        return self.kind == "ground" and self.end - self.start <= 1 and self.below in EMPTY_BELOW

    def same_level_jump(self) -> bool:
        return self.kind == "jump" and abs(self.y1 - self.y0) <= 0.5

    def absorb(self, runs: list[Run]) -> None:
        """Extend this run over ``runs`` (a bump or short ground run, then a jump)."""
        last = runs[-1]
        self.end, self.x1, self.y1 = last.end, last.x1, last.y1
        self.above, self.below = last.above, last.below
        for r in runs:
            self.jumps += r.jumps - (1 if r.bumped_head() else 0)
            self.coins += r.coins
            self.gems += r.gems
            self.killed += r.killed
            self.jumped_over += r.jumped_over


def _make_run(game: Game, kind: str, start: int, cut: int, last: bool) -> Run:
    """The run from ``start`` to the frame before ``cut`` (to ``cut`` itself for the last run)."""
    frames, maze = game.frames, game.maze
    if kind == "jump":
        before, after = max(start - 1, 0), cut
    else:
        before, after = start - 1, (cut if last else cut - 1)  # start - 1 may be -1: the last frame
    a0, a1 = frames[before].agent, frames[after].agent
    run = Run(start, cut if last else cut - 1, kind, a0.x, a0.y, a1.x, a1.y, jumps=1 if kind == "jump" else 0)
    ry, rx = round(run.y1), round(run.x1)
    run.above, run.below = maze[ry + 1][rx], maze[ry - 1][rx]
    if kind == "jump" and run.below in EMPTY_BELOW:  # landed just over an edge: look at the other cell
        run.below = maze[ry - 1][int(run.x1) * 2 + 1 - rx]
    return run


def _collect_facts(run: Run, game: Game) -> None:
    """Coins and gems collected, shield changes, monsters killed / jumped over, who killed Mugen."""
    frames, names = game.frames, game.monster_list
    first = frames[max(run.start - 1, 0)]
    last = frames[run.end]
    if len(last.coins_eaten) > len(first.coins_eaten):
        for x, y in set(last.coins_eaten) - set(first.coins_eaten):
            if game.maze[y][x] == GEM:
                run.gems += 1
            else:
                run.coins += 1
    run.shield_start = frames[run.start].agent.power_up_mode
    run.shield_end = last.agent.power_up_mode
    modes = {frames[i].agent.power_up_mode for i in range(run.start, run.end + 1)}
    run.shield_changed = len(modes) == 2
    # a kill shows in the frame after it: look one frame past the run
    stop = min(run.end + 2, len(frames))
    prev: set[int] = set()
    for i in range(run.start, stop):
        dead = {j for j, m in enumerate(frames[i].monsters) if m.is_dead}
        if i > run.start and len(dead) > len(prev):
            run.killed.append(names[frames[i].monsters[min(dead - prev)].theme])
        prev = dead
    if run.kind == "hit":
        best, theme = 1000.0, -1
        for m in frames[run.start].monsters:
            d = (run.x0 - m.x) ** 2 + (run.y0 - m.y) ** 2
            if d < best:
                best, theme = d, m.theme
        if theme != -1:
            run.killed_by = names[theme]
    if run.kind == "jump":
        ground_y = round(run.y0)
        over: set[int] = set()
        for i in range(run.start, run.end + 1):
            spot = (round(frames[i].agent.x), ground_y)
            over |= {j for j, m in enumerate(frames[i].monsters) if (round(m.x), round(m.y)) == spot}
        for j in sorted(over):  # those still alive at the end
            if not frames[stop - 1].monsters[j].is_dead:
                run.jumped_over.append(names[frames[run.end].monsters[j].theme])


def _collect_phrase(run: Run) -> str:
    parts = []
    if run.coins:
        parts.append(" a coin" if run.coins == 1 else " a few coins")
    if run.gems:
        parts.append(" a gem" if run.gems == 1 else " a few gems")
    text = " and".join(parts)
    if run.shield_changed:
        if not run.shield_start and run.shield_end:
            text += " to turn on the shield"
        elif run.shield_start and not run.shield_end:
            text += " to turn off the shield"
        elif run.shield_start:
            text += " to turn shield off then on again"
        else:
            text += " to turn shield on then off again"
    return " and collects" + text


def describe_run(run: Run) -> str:
    """The phrase of one run ('' for runs shorter than :data:`MIN_RUN`)."""
    if run.end - run.start < MIN_RUN:
        return ""
    if run.kind == "hit":
        return f"killed by a {run.killed_by or 'monster'}"
    ground = run.kind == "ground"
    if run.y1 - run.y0 > 0.5:
        up_down = " up"
    elif run.y0 - run.y1 > 0.5:
        up_down = " down"
    else:
        up_down = " a bit" if ground else ""
    if run.x1 - run.x0 > 0.5:
        sideways = " to the right"
    elif run.x0 - run.x1 > 0.5:
        sideways = " to the left"
    else:
        sideways = " a bit" if ground else ""
    text = ""
    if run.kind == "climb":
        text = f"climbs{up_down} on a ladder"
    elif ground:
        text = f"walks{sideways}"
    elif run.kind == "jump":
        times = " a few times" if run.jumps >= 2 else ""
        dest = ""
        if up_down:
            if run.below in GROUND_TILES:
                dest = " to the ground" if run.y1 < 1.5 else " to a platform"
            elif run.below in CRATE_TILES:
                dest = " to a crate"
            elif run.below == LADDER_TILE:
                dest = " to a ladder"
        over = " over a " + " and a ".join(run.jumped_over) if run.jumped_over else ""
        text = f"jumps{up_down}{times}{sideways}{over}{dest}"
    if run.coins or run.gems:
        text += _collect_phrase(run)
    if run.killed:
        text += " and killed a " + " and a ".join(run.killed)
    return text


def _merge_bumps(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    i = 0
    while i < len(runs):
        inner = 0 < i < len(runs) - 1
        if inner and runs[i].bumped_head() and out[-1].kind == "jump" and runs[i + 1].kind == "jump":
            out[-1].absorb(runs[i : i + 2])
            i += 2
        else:
            out.append(runs[i])
            i += 1
    return out


def _merge_level_jumps(runs: list[Run]) -> list[Run]:
    out: list[Run] = []
    i = 0
    while i < len(runs):
        r = runs[i]
        between_jumps = (r.kind == "ground" and 0 < i < len(runs) - 1 and out[-1].kind == "jump"
                         and runs[i + 1].kind == "jump")
        if (between_jumps and out[-1].same_level_jump() and runs[i + 1].same_level_jump()
                and r.end - r.start < MIN_RUN):
            out[-1].absorb(runs[i : i + 2])
            i += 2
        else:
            out.append(r)
            i += 1
    return out


def describe_clip(game: Game, start: int = 0, end: int = -1, alien: str = "Mugen") -> str:
    """The automatic description of frames ``[start, end)`` of ``game`` (``end=-1``: to the end)."""
    n = len(game.frames)
    end = n if end == -1 else min(n, end)
    start = max(0, start)
    runs: list[Run] = []
    run_start, kind = start, pose_kind(game.frames[start].agent.pose)
    last = start
    for i in range(start + 1, end):
        last = i
        k = pose_kind(game.frames[i].agent.pose)
        if k != kind:
            runs.append(_make_run(game, kind, run_start, i, last=False))
            run_start, kind = i, k
    runs.append(_make_run(game, kind, run_start, last, last=True))
    runs = _merge_level_jumps(_merge_bumps(runs))
    phrases = []
    for run in runs:
        _collect_facts(run, game)
        phrase = describe_run(run)
        if phrase:
            phrases.append(phrase)
    return f"{alien or 'Mugen'} " + ", and ".join(phrases)
