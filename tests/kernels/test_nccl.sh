#!/usr/bin/env bash
# The CUDA backend's gradient all-reduce (issue 5): 2 MPI ranks build an
# NCCL communicator from an id broadcast over their group and sum device
# buffers of 1, 1024 and 1000003 floats exactly (nccl_allreduce.c). On a
# node with one GPU only one rank takes part (NCCL allows one rank per
# GPU); without a GPU the program checks that a communicator fails on
# every rank with the CUDA error named, and exits 77: the test is skipped,
# also under PESO_TEST_STRICT (tests/skip.sh).
set -euo pipefail
bin=${PESO_BIN_DIR:?}
src=${PESO_SOURCE_DIR:?}
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "$src/tests/skip.sh"
prog=$bin/kernels_nccl_allreduce
[ -x "$prog" ] || { echo "FAIL: $prog is not built"; exit 1; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
rc=0
timeout 120 mpirun --oversubscribe --allow-run-as-root -np 2 "$prog" || rc=$?
[ "$rc" = 77 ] && skip_no_gpu "no CUDA device visible to any rank: the NCCL all-reduce did not run"
exit "$rc"
