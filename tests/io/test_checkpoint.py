"""Safe checkpoint loading, atomic saving and kind detection (tats.io.checkpoint)."""

from __future__ import annotations

import argparse
import os
import pickle

import pytest
import torch

from tats.io.checkpoint import (
    CheckpointError,
    checkpoint_kind,
    expect_kind,
    hparams_dict,
    load_checkpoint,
    save_checkpoint,
)


class _Payload:
    """Unpickling this runs os.system: the loader must refuse it before anything executes."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickled_code_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "payload_ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Payload(str(marker))}}, path)
    with pytest.raises(CheckpointError, match="evil.ckpt") as err:
        load_checkpoint(path)
    assert "allow-list" in str(err.value)
    assert not marker.exists()


def test_plain_pickle_file_is_refused(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "old.pt"
    with open(path, "wb") as f:
        pickle.dump({"a": _Payload(str(marker))}, f)
    with pytest.raises(CheckpointError):
        load_checkpoint(path)
    assert not marker.exists()


def test_namespace_hparams_load_and_flatten(tmp_path):
    path = tmp_path / "release_like.ckpt"
    args = argparse.Namespace(n_codes=48, gpus=8, unknown_flag="kept")
    ckpt = {"state_dict": {"encoder.w": torch.zeros(1)}, "hyper_parameters": {"args": args, "pkeep": 1.0}}
    torch.save(ckpt, path)
    ckpt = load_checkpoint(path)
    hp = hparams_dict(ckpt)
    assert hp == {"n_codes": 48, "gpus": 8, "unknown_flag": "kept", "pkeep": 1.0}
    assert checkpoint_kind(ckpt) == "vqgan"


def test_missing_and_truncated_files_name_the_path(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.ckpt")
    path = tmp_path / "cut.ckpt"
    torch.save({"state_dict": {"w": torch.randn(100, 100)}}, path)
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="cut.ckpt"):
        load_checkpoint(path)


def test_atomic_save_keeps_old_file_when_interrupted(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": 1}, path)

    def boom(obj, f, *a, **k):
        f.write(b"partial")
        raise KeyboardInterrupt  # a kill in the middle of writing

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary left behind


def test_kind_detection_and_messages(tmp_path):
    gpt = {"state_dict": {"transformer.tok_emb.weight": torch.zeros(1), "first_stage_model.encoder.x": 0}}
    vq = {"state_dict": {"vqgan.encoder.conv_first.conv.weight": torch.zeros(1)}}
    assert checkpoint_kind(gpt) == "transformer"
    assert checkpoint_kind(vq) == "vqgan"
    assert checkpoint_kind({"state_dict": {"foo": 1}}) == "unknown"
    with pytest.raises(CheckpointError, match="it is a transformer checkpoint"):
        expect_kind(gpt, "vqgan", "gpt.ckpt")
    with pytest.raises(CheckpointError, match="it is a VQGAN checkpoint"):
        expect_kind(vq, "transformer", "vq.ckpt")


def test_release_fixtures_load_weights_only(fixtures_dir):
    for name, kind in [("vqgan.ckpt", "vqgan"), ("gpt_label.ckpt", "transformer")]:
        ckpt = load_checkpoint(fixtures_dir / name)
        assert checkpoint_kind(ckpt) == kind
        assert ckpt["pytorch-lightning_version"] == "1.5.4"
