#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the main job on the built-in
# synthetic default: peso-prep writes runs/demo/dataset.h5 and stats.json and
# prints the per-block statistics table.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-debian.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
./build/peso-prep --config conf/demo.yaml "$@"
