"""A public fork's name for ``train_transformer.py`` (same flags); see ``--help``."""

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().with_name("train_transformer.py")), run_name="__main__")
