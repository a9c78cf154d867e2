#!/usr/bin/env bash
# Installs the dependencies, builds with -Werror and runs every test.
# The README's test command and CI's (.ci/run) are this script.
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-debian.sh
bash tools/reference/setup-venv.sh   # Hugging Face reference checks (.venv-ref)
cmake -S . -B build -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPESO_WERROR=ON
cmake --build build -j"$(nproc)"
ctest --test-dir build --output-on-failure
