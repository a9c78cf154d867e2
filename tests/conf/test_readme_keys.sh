#!/usr/bin/env bash
# The README's configuration table must be exactly what the schema says.
set -euo pipefail
bin=${PESO_BIN_DIR:?}/peso-prep
doc=$("$bin" --help-config)
if ! grep -qF -- "$doc" <(cat "${PESO_SOURCE_DIR:?}/README.md") 2>/dev/null; then
    python3 - "$PESO_SOURCE_DIR/README.md" <<PY || { echo "README.md's key table differs from 'peso-prep --help-config'; paste its output into README.md"; exit 1; }
import sys
doc = """$doc"""
sys.exit(0 if doc in open(sys.argv[1]).read() else 1)
PY
fi
echo "README key table matches the schema"
