"""The release's name for ``scripts/sample_hierarchical.py`` (same flags); see `--help`."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().with_name("sample_hierarchical.py")), run_name="__main__")
