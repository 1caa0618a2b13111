"""The release's name for ``scripts/sample_hierarchical.py`` (same flags); see `--help`."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    script = Path(__file__).resolve().parent / "scripts" / "sample_hierarchical.py"
    runpy.run_path(str(script), run_name="__main__")
