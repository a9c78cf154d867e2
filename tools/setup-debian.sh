#!/usr/bin/env bash
# Installs the Debian packages PESO builds, tests and plots with.
# Debian 12 (bookworm) or newer; run as root or with sudo available.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
PKGS=(
  build-essential cmake pkg-config git curl ca-certificates  # curl: tools/fetch-amazon.sh
  libopenmpi-dev openmpi-bin        # MPI data parallelism
  libhdf5-dev hdf5-tools            # dataset and checkpoint files, h5dump
  libyaml-dev                       # configuration
  libcjson-dev                      # JSON, the project's library (fastest in tools/bench/json_libs)
  libjson-c-dev libjansson-dev      # optional: only that benchmark compares them with cJSON
  zlib1g-dev                        # gzip input
  libopenblas-dev                   # CPU matrix products
  libpcre2-dev                      # BPE pre-tokenizer regex
  libcriterion-dev                  # unit tests
  python3 python3-venv python3-h5py # reference checks (stdlib Python + h5py)
  gnuplot-nox                       # report plots
)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}"
