#!/usr/bin/env bash
# Create ./.venv (once) and install tats with the given extras into it. Sourced by demo.sh and test.sh.
# Set TATS_PYTHON to choose the interpreter that makes the venv (default: python3).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [ ! -x "$root/.venv/bin/python" ]; then
  "${TATS_PYTHON:-python3}" -m venv "$root/.venv"
fi
"$root/.venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$root[${1:-test}]"
PY="$root/.venv/bin/python"
export PY
