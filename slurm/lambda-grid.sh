#!/usr/bin/env bash
# The paper's lambda search (Section 5.1): every method of
# PESO_GRID_METHODS (default the four with a proximal term) with every
# lambda of PESO_GRID_LAMBDAS (default 0.5 1 2 5 8), as one job array.
#
#   PESO_CONFIG=conf/instruments.yaml slurm/lambda-grid.sh [sbatch options]
#
# All tasks share the config's out_dir, so stage 1 is trained once and
# reused by every task. It must exist before the tasks start: were they
# to start together, each would train stage 1 itself and write the same
# stage-1.h5. So this first submits a stage-1 job and makes the array
# depend on it (afterok: the array starts only if stage 1 succeeded; if
# it fails, the array is cancelled). Each task then runs PESO_STAGES
# (default: every stage, stage 1 being reused). The sbatch options given
# here apply to both jobs.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PESO_ROOT=${PESO_ROOT:-$root}
export PESO_GRID_METHODS=${PESO_GRID_METHODS:-peso l2 ortho output-kl}
export PESO_GRID_LAMBDAS=${PESO_GRID_LAMBDAS:-0.5 1 2 5 8}
read -r -a methods <<<"$PESO_GRID_METHODS"
read -r -a lambdas <<<"$PESO_GRID_LAMBDAS"
n=$((${#methods[@]} * ${#lambdas[@]}))
[ "$n" -gt 0 ] || { echo "lambda-grid: empty grid" >&2; exit 2; }

s1=$(PESO_STAGES=1 sbatch --parsable --job-name=peso-stage1 "$@" "$PESO_ROOT/jobs/stage.sh")
s1=${s1%%;*}
echo "stage 1: job $s1"
grid=$(sbatch --parsable --job-name=peso-lambda --array=0-$((n - 1)) --dependency=afterok:"$s1" \
    --kill-on-invalid-dep=yes "$@" "$PESO_ROOT/slurm/lambda-task.sbatch")
grid=${grid%%;*}
echo "grid: array job $grid, $n tasks (${methods[*]}) x (${lambdas[*]}), after job $s1"
