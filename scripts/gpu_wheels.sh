#!/usr/bin/env bash
# Fetch into .whl/ the wheels the lent GPU image lacks, for CPython 3.12 on x86-64 Linux: PyAV (reading
# video files), ftfy + wcwidth and regex (caption tokenizer). That image has no network; the work tree
# carries .whl/ there and scripts/gpu_check.sh installs it (pip --no-index --target .whl/site-312).
# imageio-ffmpeg (68 MB, writing mp4) is left out: no check writes video, and the carry limit is 64 MiB.
#   bash scripts/gpu_wheels.sh            # then run the device command with carry [".whl"]
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: --no-deps \
  --python-version "${GPU_PYTHON_VERSION:-3.12}" --implementation cp \
  --platform manylinux2014_x86_64 --platform manylinux_2_28_x86_64 \
  -d .whl "av>=11" "ftfy>=6.1" wcwidth "regex>=2022.1"
du -sh .whl
