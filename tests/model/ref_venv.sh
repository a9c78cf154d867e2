# Sourced by the tests that compare with Hugging Face libraries: finds the
# reference venv (tools/reference/setup-venv.sh; $PESO_REF_VENV names
# another) and sets $py. Without it such a test fails in CI, where
# tools/test.sh has made the venv, and is skipped elsewhere.
# Usage: need_ref_venv "import torch, transformers"
need_ref_venv() {
    local venv=${PESO_REF_VENV:-${PESO_SOURCE_DIR:?}/.venv-ref}
    py=$venv/bin/python
    if [ -x "$py" ] && "$py" -c "$1" 2>/dev/null; then
        return 0
    fi
    local msg="no reference venv at $venv that can '$1': run tools/reference/setup-venv.sh"
    if [ "${CI:-}" = true ]; then
        echo "FAIL: $msg"
        exit 1
    fi
    echo "SKIP: $msg"
    exit 0
}
