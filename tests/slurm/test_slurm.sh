#!/usr/bin/env bash
# Slurm operation (issue 5). The job scripts pass bash -n and shellcheck.
#   0. jobs/stage.sh without Slurm forwards USR1 to peso-train, passes its
#      exit 75 through, and resumes when rerun.
# Then, on a one-node Slurm cluster started here (tests/slurm/cluster.sh),
# with the small trainer config:
#   1. sbatch jobs/stage.sh, stages 1-2: COMPLETED, the checkpoints of
#      both stages and the stage-2 metrics line exist;
#   2. slurm/multinode.sbatch shrunk to this node (2 ranks: train + eval)
#      trains and evaluates stage 3 of the same run (with --resume);
#   3. slurm/lambda-grid.sh with a 1 x 2 grid: one stage-1 job that reuses
#      stage 1, then an array whose tasks train (l2, 0.5) and (l2, 1);
#   4. slurm/chain.sh, stages 1-2 of a longer run: USR1 to the stage-1
#      job's batch shell (what --signal=B:USR1@120 sends) makes peso-train
#      checkpoint and exit 75, the job requeues itself and resumes, and
#      the stage-2 job starts only after the requeued stage 1 completed;
#   5. a plain scancel (SIGTERM) stops peso-train at a checkpoint and the
#      job stays cancelled: it does not requeue itself.
# Needs root (the daemons run as root) and Debian's slurm-wlm and munge,
# installed here when absent. Skipped (exit 77) when the daemons cannot
# start on this machine; a failure under PESO_TEST_STRICT (tests/skip.sh).
set -euo pipefail
bin=${PESO_BIN_DIR:?}
src=${PESO_SOURCE_DIR:?}
fail() { echo "FAIL: $*"; exit 1; }
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "$src/tests/skip.sh"

scripts=("$src/jobs/stage.sh" "$src/slurm/chain.sh" "$src/slurm/lambda-grid.sh"
         "$src/slurm/lambda-task.sbatch" "$src/slurm/multinode.sbatch")

install_tools() {
    local pkgs=(slurm-wlm munge shellcheck)
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y "${pkgs[@]}" >"$tmp/apt.log" 2>&1 ||
        { apt-get update >>"$tmp/apt.log" 2>&1 && apt-get install -y "${pkgs[@]}" >>"$tmp/apt.log" 2>&1; }
}

tmp=$(mktemp -d /tmp/peso-slurm.XXXXXX)
# shellcheck source=cluster.sh source-path=SCRIPTDIR
. "$src/tests/slurm/cluster.sh"
cleanup() {
    slurm_cluster_stop "$tmp/cluster"
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for t in sbatch slurmctld slurmd munged mungekey shellcheck; do
    command -v "$t" >/dev/null && continue
    [ "$(id -u)" = 0 ] || skip_missing "$t is missing and installing slurm-wlm, munge and shellcheck needs root"
    install_tools || { tail -5 "$tmp/apt.log"; skip_missing "apt-get install slurm-wlm munge shellcheck failed"; }
    break
done

for f in "${scripts[@]}"; do
    bash -n "$f" || fail "bash -n $f"
done
shellcheck -x "${scripts[@]}" "$src/tests/slurm/cluster.sh" "$src/tests/slurm/test_slurm.sh" || fail "shellcheck"

unset PESO_CONFIG PESO_STAGES PESO_SET PESO_LAUNCH PESO_GRID_METHODS PESO_GRID_LAMBDAS \
    PESO_FIRST_STAGE PESO_LAST_STAGE PESO_AFTER
export PESO_ROOT=$src PESO_BIN=$bin/peso-train
mkdir -p "$tmp/work"
cd "$tmp/work"
# the small config with its out_dir here; the runs differ in epochs
for r in a b c d; do
    sed "s#^seed:#out_dir: \"$tmp/$r\"\nseed:#" "$src/tests/train/small.yaml" >$r.yaml
done
fast="eval.max_users=10 train.max_windows=120"

# ---- 0. without Slurm: USR1 to the script reaches peso-train, 75 passes through,
# and the rerun resumes
env -u SLURM_JOB_ID PESO_CONFIG=c.yaml PESO_STAGES=1 PESO_SET="$fast train.epochs=6" \
    bash "$src/jobs/stage.sh" >c1.log 2>&1 &
pid=$!
for _ in $(seq 1 240); do
    grep -q '^stage 1 epoch 1/6 step 2/' c1.log && break
    sleep 0.25
done
kill -USR1 "$pid"
rc=0
wait "$pid" || rc=$?
[ "$rc" = 75 ] || { tail -20 c1.log; fail "jobs/stage.sh without Slurm: status $rc after USR1, expected 75"; }
grep -q '^peso-job: command: [^ ]*peso-train --config c.yaml' c1.log || fail "a launcher was used without Slurm"
grep -q '^stage 1: stopped by signal 10' c1.log || fail "USR1 did not reach peso-train"
env -u SLURM_JOB_ID PESO_CONFIG=c.yaml PESO_STAGES=1 PESO_SET="$fast train.epochs=6" \
    bash "$src/jobs/stage.sh" >c2.log 2>&1 || { tail -20 c2.log; fail "jobs/stage.sh rerun"; }
grep -q '^stage 1: resuming from' c2.log || fail "the rerun of jobs/stage.sh did not resume"
echo "stage.sh without Slurm: ok"

[ "$(id -u)" = 0 ] || skip_missing "the test cluster runs slurmctld and slurmd as root (part 0 passed)"
slurm_cluster_start "$tmp/cluster" ||
    skip_missing "a one-node Slurm cluster does not start here (daemon output above; part 0 passed)"

# field ID NAME: one field of scontrol show job (the first, for an array)
field() { scontrol show job -o "$1" | head -1 | tr ' ' '\n' | sed -n "s/^$2=//p"; }

# wait_end ID SECONDS: prints the job's final state once it has one
wait_end() {
    local id=$1 end=$((SECONDS + $2)) s
    while :; do
        s=$(field "$id" JobState)
        case $s in
        COMPLETED | FAILED | CANCELLED | TIMEOUT | NODE_FAIL | OUT_OF_MEMORY | BOOT_FAIL | DEADLINE | PREEMPTED)
            echo "$s"
            return 0
            ;;
        esac
        [ "$SECONDS" -lt "$end" ] || { echo "still $s after $2 s"; return 0; }
        sleep 1
    done
}

# expect_done ID LOG SECONDS: the job completed, else its log and the daemons' are shown
expect_done() {
    local s
    s=$(wait_end "$1" "$3")
    [ "$s" = COMPLETED ] && return 0
    tail -30 "$2" 2>/dev/null || true
    slurm_cluster_show_log "$tmp/cluster" slurmd
    fail "job $1: $s, expected COMPLETED"
}

# ---- 1. jobs/stage.sh, stages 1-2
j=$(PESO_CONFIG=a.yaml PESO_STAGES=1-2 PESO_SET=$fast sbatch --parsable "$src/jobs/stage.sh")
log=peso-stage-$j.out
expect_done "$j" "$log" 120
[ "$(field "$j" ExitCode)" = 0:0 ] || fail "job $j exit code $(field "$j" ExitCode)"
[ -f "$tmp/a/stage-1.h5" ] || fail "no stage-1.h5"
[ -f "$tmp/a/peso-lambda2/stage-2.h5" ] || fail "no peso-lambda2/stage-2.h5"
grep -q '"run":"peso-lambda2".*"stage":2,"split":"test"' "$tmp/a/metrics.jsonl" ||
    fail "no stage-2 line in metrics.jsonl"
grep -q "^peso-job: job $j (peso-stage) on .*, restart count 0" "$log" || fail "no job line in $log"
grep -q "^peso-job: .*metrics $tmp/a/metrics.jsonl" "$log" || fail "no metrics path in $log"
grep -q "^out_dir: \"$tmp/a\"" "$log" || fail "no resolved config in $log"
grep -q "^peso-job: command: srun --mpi=pmix $bin/peso-train --config a.yaml .* --stages 1-2$" "$log" ||
    fail "not launched by srun --mpi=pmix with --stages 1-2 and without --resume"
grep -q '^peso-job: peso-train exited with status 0$' "$log" || fail "no exit status in $log"
echo "stage.sh: ok"

# ---- 2. the multinode template on this one node: stage 3 continues the run
# (2 MPI ranks through srun --mpi=pmix: one trains, one evaluates)
j=$(PESO_CONFIG=a.yaml PESO_STAGES=3 PESO_SET="$fast threads=1 parallel.eval_ranks=1" sbatch --parsable \
    --nodes=1 --ntasks-per-node=2 --gpus-per-node=0 "$src/slurm/multinode.sbatch")
log=peso-multinode-$j.out
expect_done "$j" "$log" 90
[ "$(field "$j" NumTasks)" = 2 ] || fail "multinode: $(field "$j" NumTasks) tasks, expected 2"
grep -q -- '--stages 3 --resume$' "$log" || fail "multinode: stage 3 not run with --resume"
[ -f "$tmp/a/peso-lambda2/stage-3.h5" ] || fail "multinode: no peso-lambda2/stage-3.h5"
grep -q '"run":"peso-lambda2".*"stage":3,"split":"test"' "$tmp/a/metrics.jsonl" ||
    fail "multinode: no stage-3 line in metrics.jsonl"
echo "multinode.sbatch: ok"

# ---- 3. the lambda grid, l2 x {0.5, 1}, stage 2, sharing run a's stage 1
PESO_CONFIG=a.yaml PESO_STAGES=2 PESO_SET=$fast PESO_GRID_METHODS=l2 PESO_GRID_LAMBDAS="0.5 1" \
    bash "$src/slurm/lambda-grid.sh" >grid.txt || { cat grid.txt; fail "lambda-grid.sh"; }
s1=$(sed -n 's/^stage 1: job \([0-9]*\)$/\1/p' grid.txt)
arr=$(sed -n 's/^grid: array job \([0-9]*\), 2 tasks.*/\1/p' grid.txt)
if [ -z "$s1" ] || [ -z "$arr" ]; then
    cat grid.txt
    fail "lambda-grid.sh output"
fi
case $(field "$arr" Dependency) in
"afterok:$s1("*) ;;
*) [ "$(field "$s1" JobState)" = COMPLETED ] || fail "the array does not depend on job $s1: $(field "$arr" Dependency)" ;;
esac
expect_done "$s1" "peso-stage1-$s1.out" 60
grep -q '^stage 1: reusing' "peso-stage1-$s1.out" || fail "the grid's stage-1 job did not reuse stage 1"
for k in 0 1; do
    expect_done "${arr}_$k" "peso-lambda-${arr}_$k.out" 90
done
for l in 0.5 1; do
    [ -f "$tmp/a/l2-lambda$l/stage-2.h5" ] || fail "no l2-lambda$l/stage-2.h5"
    grep -q "^peso-job: array task .*: method l2, lambda $l$" peso-lambda-"${arr}"_*.out ||
        fail "no array task for lambda $l"
done
grep -q '"run":"l2-lambda0.5","method":"l2",.*"lambda":0.5,"stage":2' "$tmp/a/metrics.jsonl" ||
    fail "no metrics line of l2, lambda 0.5"
grep -q '"run":"l2-lambda1","method":"l2",.*"lambda":1.0,"stage":2' "$tmp/a/metrics.jsonl" ||
    fail "no metrics line of l2, lambda 1"
echo "lambda-grid.sh: ok"

# ---- 4. a chain of stages 1-2 whose stage-1 job is stopped, requeued and resumed
PESO_CONFIG=b.yaml PESO_LAST_STAGE=2 PESO_SET="$fast train.epochs=6" \
    bash "$src/slurm/chain.sh" >chain.txt || { cat chain.txt; fail "chain.sh"; }
j1=$(sed -n 's/^stage 1: job \([0-9]*\)$/\1/p' chain.txt)
j2=$(sed -n "s/^stage 2: job \([0-9]*\), after job $j1$/\1/p" chain.txt)
if [ -z "$j1" ] || [ -z "$j2" ]; then
    cat chain.txt
    fail "chain.sh output"
fi
case $(field "$j2" Dependency) in
"afterok:$j1("*) ;;
*) fail "job $j2 dependency: $(field "$j2" Dependency), expected afterok:$j1" ;;
esac
log=peso-stage1-$j1.out
for _ in $(seq 1 240); do
    grep -q '^stage 1 epoch 1/6 step 2/' "$log" 2>/dev/null && break
    sleep 0.25
done
grep -q '^stage 1 epoch 1/6 step 2/' "$log" || { tail -20 "$log"; fail "stage 1 of job $j1 did not train"; }
scancel --signal=USR1 --batch "$j1"
expect_done "$j1" "$log" 120
expect_done "$j2" "peso-stage2-$j2.out" 90
[ "$(field "$j1" Restarts)" = 1 ] || fail "job $j1 restarts: $(field "$j1" Restarts), expected 1"
for pat in '^peso-job: got SIGUSR1, forwarding it to pid' '^stage 1: stopped by signal 10 after step' \
    '^peso-job: peso-train exited with status 75$' "^peso-job: requeueing job $j1" \
    "^peso-job: job $j1 (peso-stage1) on .*, restart count 1" '^peso-job: checkpoints found under .*: passing --resume' \
    '^stage 1: resuming from .*stage-1-step-[0-9]*.h5' '^peso-job: peso-train exited with status 0$'; do
    grep -q "$pat" "$log" || { grep '^peso-job:\|^stage 1:' "$log"; fail "no '$pat' in $log"; }
done
end1=$(field "$j1" EndTime)
start2=$(field "$j2" StartTime)
[ "$(date -d "$start2" +%s)" -ge "$(date -d "$end1" +%s)" ] ||
    fail "stage 2 (job $j2) started at $start2, before the requeued stage 1 ended at $end1"
[ -f "$tmp/b/peso-lambda2/stage-2.h5" ] || fail "chain: no peso-lambda2/stage-2.h5"
ls "$tmp"/b/stage-1-step-*.h5 >/dev/null 2>&1 && fail "partial checkpoints left after stage 1 completed"
echo "chain.sh and requeue on exit 75: ok"

# ---- 5. a plain scancel (SIGTERM) ends the job: checkpointed, not requeued
j=$(PESO_CONFIG=d.yaml PESO_STAGES=1 PESO_SET="$fast train.epochs=20" sbatch --parsable "$src/jobs/stage.sh")
log=peso-stage-$j.out
for _ in $(seq 1 240); do
    grep -q '^stage 1 epoch 1/20 step 2/' "$log" 2>/dev/null && break
    sleep 0.25
done
scancel "$j"
s=$(wait_end "$j" 60)
[ "$s" = CANCELLED ] || fail "job $j: $s after scancel, expected CANCELLED"
for _ in $(seq 1 40); do
    grep -q '^peso-job: stopped by SIGTERM' "$log" && break
    sleep 0.25
done
grep -q '^stage 1: stopped by signal 15' "$log" || { tail -20 "$log"; fail "SIGTERM did not reach peso-train"; }
grep -q '^peso-job: stopped by SIGTERM .*not requeueing' "$log" || fail "no 'not requeueing' in $log"
grep -q '^peso-job: requeueing' "$log" && fail "a cancelled job requeued itself"
[ "$(field "$j" Restarts)" = 0 ] || fail "job $j restarts: $(field "$j" Restarts) after scancel"
ls "$tmp"/d/stage-1-step-*.h5 >/dev/null 2>&1 || fail "no partial checkpoint after scancel"
echo "scancel ends the job without requeue: ok"
