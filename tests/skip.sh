# shellcheck shell=bash
# Sourced by the script tests: the one place that decides what a test does
# when something it needs is not on this machine (tests/skip.h is the same
# rule for the Criterion programs). Every test is registered with
# SKIP_RETURN_CODE 77, so CTest lists a test that exits 77 as skipped
# ("Not Run"), never as passed; the reason is the "SKIP: " line it prints.
#
# PESO_TEST_STRICT=1 (set by .ci/run) means this machine has everything a
# test may need except a GPU: the reference venv, Slurm (as root), MPI,
# the shared data, h5dump, gnuplot, curl. There a missing set-up is a
# failure, not a skip.
#
#   skip_no_gpu REASON        no GPU visible: exits 77, strict or not.
#   skip_missing REASON       a set-up the whole test needs is missing:
#                             exits 77, or 1 under PESO_TEST_STRICT=1.
#   skip_missing_part REASON  only some checks of a test that otherwise
#                             runs need it: prints the reason and returns,
#                             or exits 1 under PESO_TEST_STRICT=1.
#   need_ref_venv IMPORTS     sets $py to the Hugging Face reference venv's
#                             python if it can run IMPORTS, else skip_missing
#                             (ref_venv_can below, for a part of a test).

peso_test_strict() {
    [ -n "${PESO_TEST_STRICT:-}" ] && [ "$PESO_TEST_STRICT" != 0 ]
}

skip_no_gpu() {
    echo "SKIP: $*"
    exit 77
}

skip_missing() {
    if peso_test_strict; then
        echo "FAIL: $* (PESO_TEST_STRICT=$PESO_TEST_STRICT: a missing set-up is an error)"
        exit 1
    fi
    echo "SKIP: $*"
    exit 77
}

skip_missing_part() {
    if peso_test_strict; then
        echo "FAIL: $* (PESO_TEST_STRICT=$PESO_TEST_STRICT: a missing set-up is an error)"
        exit 1
    fi
    echo "SKIP (part of the test): $*"
}

# The Hugging Face reference venv is made by tools/reference/setup-venv.sh
# (tools/test.sh runs it); $PESO_REF_VENV names another one.
# ref_venv_can IMPORTS: sets $py to its python and succeeds if that python
# can run IMPORTS; otherwise sets $ref_venv_why and fails.
ref_venv_can() {
    local venv=${PESO_REF_VENV:-${PESO_SOURCE_DIR:?}/.venv-ref} err
    py=$venv/bin/python
    if [ ! -x "$py" ]; then
        ref_venv_why="no reference venv: $py is not there (run tools/reference/setup-venv.sh)"
        return 1
    fi
    if ! err=$("$py" -c "$1" 2>&1); then
        ref_venv_why="the reference venv $venv cannot '$1': ${err##*$'\n'} (run tools/reference/setup-venv.sh)"
        return 1
    fi
}

need_ref_venv() {
    ref_venv_can "$1" || skip_missing "$ref_venv_why"
}
