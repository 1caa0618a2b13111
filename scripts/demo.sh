#!/usr/bin/env bash
# The main job on the built-in demo data: set up ./.venv, then run scripts/demo.py.
# Extra arguments go to scripts/demo.py (see `scripts/demo.py --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
"$PY" scripts/demo.py "$@"
