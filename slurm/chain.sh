#!/usr/bin/env bash
# Submits stages PESO_FIRST_STAGE..PESO_LAST_STAGE of one run as a chain
# of jobs, one per stage, each starting only after the previous one
# completed successfully (--dependency=afterok). A stage job that is
# requeued after exit 75 stays unfinished for the dependency, so the
# next stage waits for it; a stage that fails cancels the rest.
#
#   PESO_CONFIG=conf/instruments.yaml slurm/chain.sh [sbatch options]
#
# PESO_LAST_STAGE defaults to the number of blocks of the config
# (split.fractions), read with peso-train --print-config. PESO_AFTER
# makes the first job wait for another job too.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export PESO_ROOT=${PESO_ROOT:-$root}
bin=${PESO_BIN:-$PESO_ROOT/build/peso-train}
first=${PESO_FIRST_STAGE:-1}
last=${PESO_LAST_STAGE:-}
if [ -z "$last" ]; then
    args=()
    [ -n "${PESO_CONFIG:-}" ] && args+=(--config "$PESO_CONFIG")
    read -r -a pairs <<<"${PESO_SET:-}"
    for p in "${pairs[@]}"; do
        args+=(--set "$p")
    done
    fractions=$("$bin" "${args[@]}" --print-config | sed -n 's/^  fractions: \[\(.*\)\]$/\1/p')
    [ -n "$fractions" ] || { echo "chain: no split.fractions from $bin --print-config" >&2; exit 2; }
    last=$(tr ',' '\n' <<<"$fractions" | grep -c .)
fi
if ! [[ $first =~ ^[1-9][0-9]*$ && $last =~ ^[1-9][0-9]*$ ]] || [ "$last" -lt "$first" ]; then
    echo "chain: bad stage range $first-$last" >&2
    exit 2
fi

prev=${PESO_AFTER:-}
for t in $(seq "$first" "$last"); do
    dep=()
    [ -n "$prev" ] && dep=(--dependency=afterok:"$prev" --kill-on-invalid-dep=yes)
    id=$(PESO_STAGES=$t sbatch --parsable --job-name="peso-stage$t" "${dep[@]}" "$@" "$PESO_ROOT/jobs/stage.sh")
    id=${id%%;*}
    echo "stage $t: job $id${prev:+, after job $prev}"
    prev=$id
done
