"""MUGEN / CoinRun: the renderer, the automatic text, and the datasets, on episodes and sprites the tests
write. Expected pixels, labels and texts are worked out by hand from the release's rules (the numbers
in the comments), not taken from the code under test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tats.data.coinrun.dataset import CoinRunDataset, CoinRunOptions
from tats.data.coinrun.game import parse_game
from tats.data.coinrun.render import MissingAssetError, SpriteSet, draw_frame
from tats.data.coinrun.text import describe_clip
from tests.release_formats import COLOURS, agent_state, episode, write_coinrun_assets, write_coinrun_folder

# Scene for the renderer: zoom 6, 64-pixel frames, the game's 64-cell-wide maze: a cell is k = 6 * 64 / 64
# = 6 px; the camera centre c = (64 - 1) // 2 = 31; the agent at x = 10 gives dx = -10 k + c - k / 2 = -32,
# and zoom 6 gives dy = -c + 4.5 k = -4. A cell (x, y) is drawn at (6 x - 32, 64 - 6 y - 4).
RES = 64


def _scene(vx: float = 0.5, eaten: bool = False, shield: bool = False) -> dict:
    maze = ["S" * 64] + ["." * 64] * 12  # ground on row 0; the coin at (12, 2) was eaten by the clip's end
    agent = agent_state(10.0, 1.0, vx=vx, power_up_mode=shield)
    frames = [{"agent": agent, "monsters": [dict(m_id=0, x=14.0, y=1.0, theme=1)],  # theme 1: the snail
               "coins_eaten": [[12, 2]] if eaten else []},
              {"agent": agent, "coins_eaten": [[12, 2]]}]
    return episode(frames, maze=maze, zoom=6.0)


@pytest.fixture(scope="module")
def assets(tmp_path_factory) -> Path:
    return write_coinrun_assets(tmp_path_factory.mktemp("sprites") / "assets")


def _draw(assets, data, semantic=False, **kw):
    game = parse_game(data)
    return draw_frame(game, 0, SpriteSet(assets, game, RES, 18), RES, semantic=semantic, **kw)


def test_game_frame_pixels(assets):
    c = COLOURS
    img = _draw(assets, _scene())
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    # ground tiles (x, 0): rect [floor(6x - 32.1), floor(59.9), ceil(6.7), ceil(6.7)] -> rows 59..65
    assert (img[61] == c["mid"]).all()
    # the agent (4x8 sprite, aspect 2): [floor(60 - 32), floor(64 - 6 (1 + 2 - 1) - 4), 6, 12] = cols 28..33,
    # rows 48..59, drawn after the tiles; facing right: its left half on the left
    assert tuple(img[55, 28]) == c["agent_left"] and tuple(img[55, 33]) == c["agent_right"]
    # its half-transparent bottom rows (alpha 128) were made opaque: the colour itself, not a blend
    assert tuple(img[59, 28]) == c["agent_left"] and tuple(img[60, 28]) == c["mid"]
    # the coin at (12, 2): [floor(72 - 32.1), floor(59.9 - 12), 7, 7] = cols 39..45, rows 47..53
    assert tuple(img[50, 42]) == c["coin"]
    # the snail at (14, 1): [84 - 32, 64 - 6 - 4, 6, 6] = cols 52..57, rows 54..59
    assert tuple(img[56, 54]) == c["snail"] and tuple(img[56, 58]) == c["background"]
    # the background image scaled to 64 * 6 = 384 px covers the rest
    assert tuple(img[20, 5]) == c["background"]


def test_facing_left_mirrors_and_eaten_coins_vanish(assets):
    c = COLOURS
    img = _draw(assets, _scene(vx=-0.5, eaten=True))
    assert tuple(img[55, 28]) == c["agent_right"] and tuple(img[55, 33]) == c["agent_left"]
    assert tuple(img[50, 42]) == c["background"]  # eaten in this frame


def test_shield_is_drawn_over_the_agent(assets):
    img = _draw(assets, _scene(shield=True))
    # [floor(60 - 32 - 7 * 64 / 1024), floor(64 - 6 * 2 - 4 + 8 * 64 / 1024), ceil(6.9), ceil(12.6)]
    # = cols 27..33, rows 48..60
    assert tuple(img[55, 27]) == COLOURS["shield"] and tuple(img[60, 30]) == COLOURS["shield"]


def test_semantic_map_labels(assets):
    labels = _draw(assets, _scene(), semantic=True)
    assert labels.shape == (64, 64) and labels.dtype == np.uint8
    # max_label 18: ground surface 'S' = 4, the agent = 18, coin = 17, snail = 11, background 0
    assert labels[61, 20] == 4 and labels[55, 30] == 18 and labels[50, 42] == 17
    assert labels[56, 54] == 11 and labels[20, 5] == 0
    assert labels[49, 30] == 18  # the mask follows the sprite: the whole 12-row agent
    boxed = _draw(assets, _scene(), semantic=True, bbox_agent=True)
    # a box without its top int(0.8 * 6) = 4 rows: rows 52..59
    assert boxed[49, 30] == 0 and boxed[52, 30] == 18 and boxed[59, 30] == 18


def test_coins_eaten_by_the_end_are_put_back():
    game = parse_game(_scene())
    assert game.maze[2][12] == "1"  # eaten in the last frame, '.' in the file
    assert game.monster_list == ["sawHalf", "snail", "bee"]  # ground, walking, flying
    assert game.frames[0].agent.pose == "walk1" and game.frames[0].agent.is_facing_right


def test_missing_assets_are_named(tmp_path, assets):
    data = _scene()
    write_coinrun_folder(tmp_path / "coinrun", 1, 1)
    with pytest.raises(MissingAssetError, match=r"asset folder not found: .*nowhere.*--coinrun_assets"):
        CoinRunDataset(tmp_path / "coinrun", options=CoinRunOptions(sequence_length=2, resolution=16,
                                                                    coinrun_assets=str(tmp_path / "nowhere")))
    data["background_themes"] = ["backgrounds/space/missing.png"]
    with pytest.raises(MissingAssetError, match="space/missing.png not found in the asset folder"):
        SpriteSet(assets, parse_game(data), RES, 18)


# ----------------------------------------------------------------------------------- automatic text
def _walk_jump_stand() -> dict:
    """Frames 0-6 walk right on the ground (x 2 .. 5), 7-13 jump up to the platform of row 3 (landing
    at (7, 4) on frame 13), 14-19 stand there; the coin at (6, 2) is collected on frame 9."""
    maze = ["S" * 64, "." * 64, "." * 64, "." * 6 + "SSSS" + "." * 54] + ["." * 64] * 9
    frames = []
    for i in range(20):
        if i <= 6:
            a = agent_state(2.0 + 0.5 * i, 1.0, vx=0.5, t=i)
        elif i <= 12:
            a = agent_state(5.5 + (i - 7) * 0.25, 1.5 + (i - 7) * 0.4, vx=0.25, vy=0.4, t=i)
        elif i == 13:
            a = agent_state(7.0, 4.0, vx=0.0, vy=-0.1, t=i)
        else:
            a = agent_state(7.0, 4.0, t=i)
        frames.append({"agent": a, "coins_eaten": [[6, 2]] if i >= 9 else []})
    return episode(frames, maze=maze)


def test_automatic_text_by_hand():
    game = parse_game(_walk_jump_stand())
    # runs from frame 1: ground 1..6 (from frame 0 at x=2 to frame 6 at x=5: right), jump 7..13 (from
    # frame 6 (5, 1) to frame 14 (7, 4): up, right, 'S' below (7, 3) and y >= 1.5: a platform; one coin
    # collected between frames 6 and 13), ground 14..19 (frames 13 -> 19 do not move: "a bit")
    assert describe_clip(game, 1, 20) == ("Mugen walks to the right, and jumps up to the right to a platform "
                                          "and collects a coin, and walks a bit")
    # runs shorter than 5 frames get no phrase: 1..4 is a 3-frame ground run
    assert describe_clip(game, 1, 5) == "Mugen "
    assert describe_clip(game, 1, 20, alien="robot").startswith("robot walks")


def test_automatic_text_quirk_at_frame_zero():
    # release quirk, kept: a non-jump run starting at frame 0 takes its start position from the episode's
    # last frame (index -1); Mugen walking right from x=2 to x=7.5 then reads as not moving
    game = parse_game(episode([{"agent": agent_state(2.0 + 0.5 * i, 1.0, vx=0.5, t=i)} for i in range(12)]))
    assert describe_clip(game, 2, 12) == "Mugen walks to the right"  # from frame 1: x 2.5 -> 7.5
    assert describe_clip(game, 0, 12) == "Mugen walks a bit"


def test_killed_by_the_nearest_monster():
    snail = dict(m_id=0, x=6.2, y=1.0, theme=1)
    saw = dict(m_id=1, x=20.0, y=1.0, theme=0)
    frames = [{"agent": agent_state(2.0 + 0.5 * i, 1.0, vx=0.5, t=i), "monsters": [snail, saw]}
              for i in range(8)]
    frames += [{"agent": agent_state(5.5, 1.0, is_killed=True), "monsters": [snail, saw]} for _ in range(7)]
    game = parse_game(episode(frames))
    # ground 1..7 (x 2 -> 5.5), hit 8..14: nearest monster to (5.5, 1) in frame 8 is the snail
    assert describe_clip(game, 1, 15) == "Mugen walks to the right, and killed by a snail"


# ----------------------------------------------------------------------------------------- datasets
@pytest.fixture
def coinrun(tmp_path) -> Path:
    return write_coinrun_folder(tmp_path / "MyCoinRun", n_train=3, n_test=2, n_frames=12)


def test_clips_follow_the_release_window(coinrun):
    opt = CoinRunOptions(sequence_length=4, sample_every_n_frames=2, resolution=16)
    ds = CoinRunDataset(coinrun, train=True, options=opt)
    assert len(ds) == 3
    # (seq - 1) * n = 6 < 12 frames: starts drawn in [0, 12 - 6), frames start, start + 2, ..., start + 6
    starts = {ds[0]["start"] for _ in range(60)}
    assert starts == set(range(6))
    item = ds[1]
    assert item["video"].shape == (3, 4, 16, 16)
    assert item["video"].min() >= -0.5 and item["video"].max() <= 0.5
    game = parse_game(json.loads((coinrun / "train" / "ep001.json").read_text()))
    sprites = SpriteSet(coinrun / "assets", game, 16, 18)
    for t in range(4):
        frame = draw_frame(game, item["start"] + 2 * t, sprites, 16)
        assert torch.equal(item["video"][:, t], torch.from_numpy(frame).permute(2, 0, 1).float() / 255 - 0.5)
    test = CoinRunDataset(coinrun, train=False, options=opt)
    assert len(test) == 2 and {test[0]["start"] for _ in range(5)} == {0}  # evaluation: the first window
    fixed = CoinRunDataset(coinrun, train=True, options=CoinRunOptions(sequence_length=4, resolution=16,
                                                                        fixed_start_idx=True))
    assert {fixed[0]["start"] for _ in range(5)} == {0}


def test_semantic_map_items(coinrun):
    opt = CoinRunOptions(sequence_length=2, resolution=16, use_onehot_smap=True, fixed_start_idx=True)
    both = CoinRunDataset(coinrun, options=opt, seg_maps=True)[0]
    assert both["video"].shape == (3, 2, 16, 16)
    onehot = both["video_smap"]  # one-hot, max_label + 1 = 19 channels, values 0 / 1 (not shifted)
    assert onehot.shape == (19, 2, 16, 16) and set(onehot.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(onehot.sum(0), torch.ones(2, 16, 16))
    opt = CoinRunOptions(sequence_length=2, resolution=16, image_channels=3, fixed_start_idx=True)
    plain = CoinRunDataset(coinrun, options=opt, game_frames=False, seg_maps=True)
    maps = plain[0]["video"]  # --smap_only: the maps are the video, label / 18 - 0.5 on 3 channels
    labels = onehot.argmax(0).float()  # (2, 16, 16)
    assert maps.shape == (3, 2, 16, 16)
    for channel in maps:
        assert torch.allclose(channel, labels / 18 - 0.5)
    assert {0, 4, 18} <= set(labels.unique().int().tolist())  # background, ground, the agent


def test_manual_text_and_annotation_filter(coinrun, tmp_path):
    notes = tmp_path / "manual.json"
    notes.write_text(json.dumps({"ep000": ["first", "second"], "ep002": ["only one"]}))
    opt = CoinRunOptions(sequence_length=8, resolution=16, text_path=str(notes))
    ds = CoinRunDataset(coinrun, options=opt, text=True)
    assert {ds[0]["text"] for _ in range(20)} == {"first", "second"}
    assert ds[2]["text"] == "only one"
    assert ds[1]["text"].startswith("Mugen walks")  # no manual text: the automatic one
    opt.use_manual_annotation_only = True
    only = CoinRunDataset(coinrun, options=opt, text=True)
    assert [Path(e["path"]).stem for e in only.entries] == ["ep000", "ep002"]


def _write_v2(root: Path, n_frames: list[int], full: bool = False) -> None:
    data = []
    for i, n in enumerate(n_frames):
        (root / "episodes").mkdir(parents=True, exist_ok=True)
        name = f"episodes/ep{i}.json"
        (root / name).write_text(json.dumps(
            episode([{"agent": agent_state(2 + 0.5 * f, 1.0, vx=0.5, t=f)} for f in range(n)])))
        video = {"json_file": name, "num_frames": n}
        if full:
            video.update(character_ranges={"snail": [[8, 10]]} if i == 0 else {},
                         game_event_timestamps={"collect_coin": [3]})
        else:
            video.update(gt_characters=["snail"] if i == 0 else [], game_events=["collect_coin"])
        data.append({"video": video, "annotations": [{"text": f"auto {i}", "type": "auto"},
                                                     {"text": f"manual {i}", "type": "manual"},
                                                     {"text": f"other {i}", "type": "manual"}]})
    meta = {"type": "full" if full else "clip", "data_folder": ".", "characters": ["snail"],
            "game_events": ["collect_coin"]}
    for split in ("train", "test"):
        (root / f"{split}.json").write_text(json.dumps({"metadata": meta, "data": data}))


def test_v2_index_annotations_and_balanced_classes(tmp_path):
    root = tmp_path / "coinrun_v2"
    write_coinrun_assets(root / "assets")
    _write_v2(root, [12, 3, 12])  # the 3-frame episode is too short for (4 - 1) * 1 = 3: dropped
    opt = CoinRunOptions(sequence_length=4, resolution=16, coinrun_v2_dataloader=True, balanced_sampler=True)
    with pytest.warns(RuntimeWarning, match="skipped 1"):
        ds = CoinRunDataset(root, options=opt, text=True)
    assert len(ds) == 2
    assert {ds[0]["text"] for _ in range(30)} == {"auto 0", "manual 0", "other 0"}
    opt.use_manual_annotation_only = True
    assert {ds[1]["text"] for _ in range(30)} == {"manual 2", "other 2"}  # never index 0, the auto text
    # classes: characters then game events; item 0 has both, item 1 (the third episode) the event only
    assert ds.classes_for_sampling.tolist() == [[1, 1], [0, 1]]


def test_v2_full_episodes_start_where_the_class_is(tmp_path):
    root = tmp_path / "coinrun_full"
    write_coinrun_assets(root / "assets")
    _write_v2(root, [12, 12], full=True)
    opt = CoinRunOptions(sequence_length=2, resolution=16, coinrun_v2_dataloader=True, balanced_sampler=True)
    ds = CoinRunDataset(root, options=opt, text=True)
    # class 0 (snail) is on screen in frames 8..10 of episode 0: a clip [s, s + 2] must meet it: s >= 6
    starts = {ds[(0, 0)]["start"] for _ in range(40)}
    assert starts and min(starts) >= 6 and starts <= set(range(11))
    assert ds[(0, 0)]["text"].startswith("Mugen")  # full episodes: the automatic text of the clip


def test_corrupt_and_short_episodes_are_skipped_and_counted(coinrun):
    (coinrun / "train" / "ep001.json").write_text("{not json")
    ds = CoinRunDataset(coinrun, options=CoinRunOptions(sequence_length=4, resolution=16))
    with pytest.warns(RuntimeWarning, match=r"could not read .*ep001.json"):
        assert ds[1]["path"].endswith("ep002.json")  # the next episode instead
    long = CoinRunOptions(sequence_length=46, sample_every_n_frames=2, resolution=16, check_game_length=True)
    (coinrun / "train" / "ep002.json").write_text(json.dumps(
        episode([{"agent": agent_state(2.0, 1.0)} for _ in range(95)])))
    # (46 - 1) * 2 + 1 = 91 > 90: the release checks every episode for > 90 frames: 12-frame ones go
    with pytest.warns(RuntimeWarning, match="skipped 2 unusable"):
        kept = CoinRunDataset(coinrun, options=long)
    assert [Path(e["path"]).name for e in kept.entries] == ["ep002.json"]
