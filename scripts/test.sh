#!/usr/bin/env bash
# The test command: set up ./.venv, then run the whole suite on the CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_env.sh test
"$PY" -m pytest -q tests "$@"
