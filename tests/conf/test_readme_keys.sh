#!/usr/bin/env bash
# The README's configuration table must be exactly what the schema says:
# the whole output of --help-config, as one block, inside README.md.
set -euo pipefail
bin=${PESO_BIN_DIR:?}/peso-prep
"$bin" --help-config >"${TMPDIR:-/tmp}/peso-keys.$$"
trap 'rm -f "${TMPDIR:-/tmp}/peso-keys.$$"' EXIT
python3 - "${PESO_SOURCE_DIR:?}/README.md" "${TMPDIR:-/tmp}/peso-keys.$$" <<'PY' ||
import sys
doc = open(sys.argv[2]).read()
sys.exit(0 if doc in open(sys.argv[1]).read() else 1)
PY
    { echo "README.md's key table differs from 'peso-prep --help-config'; paste its output into README.md"; exit 1; }
echo "README key table matches the schema"
