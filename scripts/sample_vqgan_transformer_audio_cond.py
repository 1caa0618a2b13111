"""The release's name for ``scripts/sample_audio_cond.py`` (same flags); see `--help`."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().with_name("sample_audio_cond.py")), run_name="__main__")
