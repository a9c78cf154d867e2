#!/usr/bin/env bash
# Installs the dependencies, builds, and runs the main job on the built-in
# synthetic default (conf/demo.yaml): stage 1 trains LoRA and the code
# tokens of the tiny built-in model on D1, then stages 2-5 run for
# pretrain, single evolving LoRA, PESO and SumLoRA all, each stage
# evaluated by constrained beam search; the report table is printed and
# its plots written to runs/demo/report/. Extra arguments go to every
# peso-train call (e.g. --set out_dir=/tmp/demo).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tools/setup-debian.sh
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
cmake --build build -j"$(nproc)"
out=$(./build/peso-train --config conf/demo.yaml "$@" --print-config | sed -n 's/^out_dir: "\(.*\)"$/\1/p')
start=$(date +%s)
for method in pretrain single peso "sumlora --set method.variant=all"; do
    echo "== peso-train: method $method"
    # --resume: a rerun continues (or re-evaluates) instead of refusing
    # shellcheck disable=SC2086
    ./build/peso-train --config conf/demo.yaml --set method.name=$method "$@" --resume
done
echo "== report ($(($(date +%s) - start)) s of training and evaluation)"
tools/report "$out" --out "$out/report"
