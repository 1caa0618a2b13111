"""Every `python SCRIPT ...` command line in README.md and docs/*.md parses with that script's own argument
parser.

The command is run in-process up to its (last) ``parse_args`` call, then stopped, so the check costs
no training or sampling but catches any flag the README shows that the script does not accept.
"""

from __future__ import annotations

import argparse
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def readme_commands() -> list[list[str]]:
    """``python X.py args`` lines from the fenced code blocks of the README and docs/, continuations
    joined."""
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith("python ") and ".py" in line.split()[1]:
                words = [w for w in shlex.split(line) if w != "..."]
                commands.append(words[1:])
    return commands


class _Parsed(Exception):
    def __init__(self, namespace: argparse.Namespace):
        self.namespace = namespace


COMMANDS = readme_commands()


def test_readme_has_commands():
    scripts = {c[0] for c in COMMANDS}
    root_scripts = {"train_vqgan.py", "train_transformer.py", "sample_short_videos.py",
                    "sample_long_videos.py"}
    assert root_scripts <= scripts


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c)[:80] for c in COMMANDS])
def test_readme_command_parses(argv, monkeypatch):
    script = ROOT / argv[0]
    assert script.is_file(), f"README names {argv[0]}, which does not exist"
    original = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        ns = original(self, args, namespace)
        # Only the script's main parser ends the run (pre-parsers for --config use parse_known_args).
        raise _Parsed(ns)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
    monkeypatch.setattr(sys, "argv", [str(script), *argv[1:]])
    monkeypatch.syspath_prepend(str(script.parent))
    monkeypatch.syspath_prepend(str(ROOT))
    with pytest.raises(_Parsed):
        try:
            runpy.run_path(str(script), run_name="__main__")
        except SystemExit as err:  # argparse rejected a flag: show which command
            pytest.fail(f"README command does not parse: {' '.join(argv)} (exit {err.code})")
