#!/usr/bin/env bash
# One peso-train job: some or all continual stages of one method.
#
#   sbatch [--gpus-per-node=N] [--time=...] jobs/stage.sh
#   PESO_CONFIG=conf/instruments.yaml PESO_STAGES=2-3 sbatch jobs/stage.sh
#
# Variables (slurm/README.md has every one with an example): PESO_ROOT,
# PESO_BIN, PESO_CONFIG, PESO_STAGES, PESO_SET, PESO_LAUNCH.
#
# Slurm sends USR1 to this shell 120 s before the time limit (B: below);
# the shell forwards it to the launcher, which forwards it to peso-train.
# peso-train then writes a partial checkpoint after its current optimizer
# step and exits 75; this script requeues the job, and the requeued run
# sees the checkpoints and passes --resume. B: is chosen over a plain
# --signal=USR1@120 because the latter only reaches srun job steps, so a
# peso-train started directly or by mpirun would never see it. SIGTERM
# (scancel, the time limit, preemption) is forwarded too but does not
# requeue: the job was meant to end.
#
# No GPU is requested here, so the script also runs on CPU partitions:
# sbatch --gpus-per-node=N jobs/stage.sh asks for them.
#
# The output file is opened in append mode, so one log holds every
# restart of the job. Without Slurm (bash jobs/stage.sh) the same logic
# runs peso-train directly and passes status 75 through.
#
#SBATCH --job-name=peso-stage
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
##SBATCH --gpus-per-node=1
#SBATCH --time=24:00:00
#SBATCH --signal=B:USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=%x-%j.out
set -euo pipefail

log() { echo "peso-job: $*"; }
log "job ${SLURM_JOB_ID:-none} (${SLURM_JOB_NAME:-no Slurm}) on $(hostname), restart count ${SLURM_RESTART_COUNT:-0}, $(date -Is)"

# sbatch runs a copy of this script from its spool directory, so the tree
# is found through the submission directory, not through $0.
if [ -n "${SLURM_JOB_ID:-}" ]; then
    root=${PESO_ROOT:-${SLURM_SUBMIT_DIR:-$PWD}}
    launch_default="srun --mpi=pmix"
else
    root=${PESO_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
    launch_default=""
fi
bin=${PESO_BIN:-$root/build/peso-train}
read -r -a launch <<<"${PESO_LAUNCH-$launch_default}"
read -r -a pairs <<<"${PESO_SET:-}"

args=()
[ -n "${PESO_CONFIG:-}" ] && args+=(--config "$PESO_CONFIG")
for p in "${pairs[@]}"; do
    args+=(--set "$p")
done

[ -x "$bin" ] || { log "PESO_BIN $bin is not an executable peso-train"; exit 2; }
config=$("$bin" "${args[@]}" --print-config) || { log "peso-train rejected the config"; exit 2; }
out_dir=$(sed -n 's/^out_dir: "\(.*\)"$/\1/p' <<<"$config")
[ -n "$out_dir" ] || { log "no out_dir in the resolved config"; exit 2; }
out_dir=$(realpath -m "$out_dir")

[ -n "${PESO_STAGES:-}" ] && args+=(--stages "$PESO_STAGES")
# A requeued or resubmitted job continues from what the earlier runs wrote;
# peso-train refuses to start over checkpoints without --resume.
if [ -d "$out_dir" ] && [ -n "$(find "$out_dir" -maxdepth 2 -name 'stage-*.h5' -print -quit)" ]; then
    args+=(--resume)
    log "checkpoints found under $out_dir: passing --resume"
fi

log "stages ${PESO_STAGES:-all}; checkpoints $out_dir/stage-1.h5 and $out_dir/<run>/stage-<t>.h5; metrics $out_dir/metrics.jsonl"
log "resolved config:"
echo "$config"
log "command: ${launch[*]:+${launch[*]} }$bin ${args[*]}"

child=""
pending=0
terminated=0
# shellcheck disable=SC2317  # called by the traps below
forward() {
    pending=1
    [ "$1" = TERM ] && terminated=1
    log "got SIG$1, forwarding it to pid $child"
    if [ -n "$child" ]; then
        kill -s "$1" "$child" 2>/dev/null || true
    fi
}
trap 'forward USR1' USR1
trap 'forward TERM' TERM

# In the background so that the traps run while it trains; a trap
# interrupts wait with a status above 128, so wait again for the real one
# (127: the first wait had already returned it).
"${launch[@]}" "$bin" "${args[@]}" &
child=$!
rc=0
wait "$child" || rc=$?
while [ "$pending" = 1 ] && [ "$rc" -gt 128 ]; do
    pending=0
    again=0
    wait "$child" || again=$?
    [ "$again" = 127 ] || rc=$again
done
log "peso-train exited with status $rc"

# SIGTERM comes from scancel, the time limit or preemption: the job is
# meant to end (a preempted job is requeued by Slurm itself), so only a
# stop asked for by USR1 requeues.
if [ "$rc" = 75 ] && [ "$terminated" = 1 ]; then
    log "stopped by SIGTERM (scancel, time limit or preemption): not requeueing; resubmit to resume"
elif [ "$rc" = 75 ] && [ -n "${SLURM_JOB_ID:-}" ]; then
    log "requeueing job $SLURM_JOB_ID; its next run resumes from the checkpoint"
    if scontrol requeue "$SLURM_JOB_ID"; then
        exit 0
    fi
    log "scontrol requeue $SLURM_JOB_ID failed; resubmit this job to continue"
fi
exit "$rc"
