#!/bin/bash
# Step time against train ranks: bench-scaling under mpirun with 1 and 2
# ranks on this machine, then the two side by side with the speed-up over
# 1 rank. The step-1 global loss and gradient norm must agree between the
# runs (to 1e-6, relative for the norm): the result does not depend on N.
# The 2-rank run also prints the GPU model table.
#
#   tools/bench/scaling.sh [bench-scaling options, e.g. --preset small]
#
# PESO_BIN_DIR names the build folder (default: build in the repository).
# Ranks are not bound to cores (--bind-to none): on a machine shared with
# other jobs a bound rank cannot move off a busy core.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
bin=${PESO_BIN_DIR:-$here/build}/bench-scaling
if [ ! -x "$bin" ]; then
    echo "scaling.sh: $bin not found; build first or set PESO_BIN_DIR" >&2
    exit 1
fi
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
out=$(mktemp -d /tmp/peso_scaling_XXXXXX)
trap 'rm -rf "$out"' EXIT

for n in 1 2; do
    extra=()
    [ "$n" = 1 ] && extra=(--no-model)
    echo "== mpirun -np $n $(basename "$bin") $* ${extra[*]}"
    mpirun --oversubscribe --allow-run-as-root --bind-to none -np "$n" "$bin" "$@" "${extra[@]}" |
        tee "$out/np$n.txt"
done

# result lines: "result ranks=N step_ms=... key=value ..."
field() { grep '^result ' "$1" | tr ' ' '\n' | sed -n "s/^$2=//p"; }
s1=$(field "$out/np1.txt" step_ms)
echo
echo "| ranks | step (ms) | speed-up vs 1 rank | forward+backward (ms) | all-reduce in step (ms) \
| optimizer (ms) | all-reduce alone (ms) | bytes per all-reduce | step-1 loss | step-1 gradient norm |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for n in 1 2; do
    f=$out/np$n.txt
    awk -v n="$n" -v s1="$s1" -v s="$(field "$f" step_ms)" -v fb="$(field "$f" fb_ms)" \
        -v ar="$(field "$f" ar_ms)" -v op="$(field "$f" opt_ms)" -v al="$(field "$f" ar_alone_ms)" \
        -v by="$(field "$f" bytes)" -v l="$(field "$f" loss1)" -v g="$(field "$f" gnorm1)" 'BEGIN {
        printf "| %d | %.2f | %.2fx | %.2f | %.3f | %.3f | %.3f | %d | %s | %s |\n",
            n, s, s1 / s, fb, ar, op, al, by, l, g }'
done

awk -v l1="$(field "$out/np1.txt" loss1)" -v l2="$(field "$out/np2.txt" loss1)" \
    -v g1="$(field "$out/np1.txt" gnorm1)" -v g2="$(field "$out/np2.txt" gnorm1)" 'BEGIN {
    dl = l1 - l2; if (dl < 0) dl = -dl
    dg = (g1 - g2) / g1; if (dg < 0) dg = -dg
    printf "\nstep 1, 2 ranks against 1: |loss difference| %.3g, relative gradient-norm difference %.3g\n", dl, dg
    if (dl > 1e-6 || dg > 1e-6) { print "scaling.sh: the result depends on the number of ranks" > "/dev/stderr"; exit 1 }
}'
