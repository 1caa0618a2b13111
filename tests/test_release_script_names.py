"""The release's script names (and the fork's train_gpt.py) answer --help with the flags of ours."""

from __future__ import annotations

import contextlib
import io
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: alias -> the script it stands for (the release's names, at the root and under scripts/; a public
#: fork's train_gpt.py)
ALIASES = {
    "sample_vqgan_transformer_short_videos.py": "sample_short_videos.py",
    "sample_vqgan_transformer_long_videos.py": "sample_long_videos.py",
    "sample_vqgan_transformer_audio_cond.py": "scripts/sample_audio_cond.py",
    "sample_vqgan_transformer_hierarchical.py": "scripts/sample_hierarchical.py",
    "scripts/sample_vqgan_transformer_short_videos.py": "sample_short_videos.py",
    "scripts/sample_vqgan_transformer_long_videos.py": "sample_long_videos.py",
    "scripts/sample_vqgan_transformer_audio_cond.py": "scripts/sample_audio_cond.py",
    "scripts/sample_vqgan_transformer_hierarchical.py": "scripts/sample_hierarchical.py",
    "train_gpt.py": "train_transformer.py",
}


def help_flags(script: str, monkeypatch) -> set[str]:
    """Run ``python <script> --help`` in-process; returns the flags its help lists (exit code 0)."""
    path = ROOT / script
    monkeypatch.setattr(sys, "argv", [str(path), "--help"])
    monkeypatch.syspath_prepend(str(path.parent))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as info:
        runpy.run_path(str(path), run_name="__main__")
    assert info.value.code in (0, None), f"{script} --help exited with {info.value.code}"
    return set(re.findall(r"(?<![\w-])--[A-Za-z][\w-]*", out.getvalue()))


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_release_names_answer_help_with_the_same_flags(alias, monkeypatch):
    flags = help_flags(alias, monkeypatch)
    assert "--help" in flags and len(flags) > 10
    assert flags == help_flags(ALIASES[alias], monkeypatch)

