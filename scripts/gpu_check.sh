#!/usr/bin/env bash
# GPU and multi-GPU readiness: one PASS/FAIL (or SKIP) line per check, then a summary; exit 1 on a FAIL.
#   bash scripts/gpu_check.sh                  # on this machine's GPUs
#   bash scripts/gpu_check.sh --cpu-smoke      # the checks' CPU paths at tiny sizes (the test suite runs it)
#   bash scripts/gpu_check.sh --only long-sampling --work runs/gpu_check   # (see --help for the checks)
# Python: $PY if set, else ./.venv/bin/python (scripts/test.sh makes it), else python3.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
if compgen -G ".whl/*.whl" > /dev/null; then  # wheels the device image lacks (scripts/gpu_wheels.sh)
  # one folder per Python version: the wheels are built for one (cp312), and another Python must not
  # import them (pip refuses to install them there, and the check then runs without them)
  site=".whl/site-$("$PY" -c 'import sys; print("%d%d" % sys.version_info[:2])')"
  if [ ! -d "$site" ] && ! "$PY" -m pip install --quiet --disable-pip-version-check --no-index --no-deps \
      --target "$site" .whl/*.whl 2> /dev/null; then
    echo "note: the wheels in .whl/ are not for $("$PY" --version); running without them" >&2
    rm -rf "$site"
  fi
  if [ -d "$site" ]; then export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"; fi
fi
for arg in "$@"; do  # the smoke run's tiny ops: one thread each (no spinning on a shared CPU)
  if [ "$arg" = "--cpu-smoke" ]; then
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" OPENBLAS_NUM_THREADS="${OPENBLAS_NUM_THREADS:-1}"
    export MKL_NUM_THREADS="${MKL_NUM_THREADS:-1}"
  fi
done
exec "$PY" scripts/gpu_check.py "$@"
