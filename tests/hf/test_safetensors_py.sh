#!/bin/bash
# The C safetensors writer against the official library: the file the C
# test writes must load in Python's safetensors with the same values, and
# be byte-identical to what safetensors.numpy.save_file writes for the
# same tensors. Needs the reference venv (tools/reference).
set -euo pipefail
src=${PESO_SOURCE_DIR:?} bin=${PESO_BIN_DIR:?}
source "$src/tests/model/ref_venv.sh"
need_ref_venv "import safetensors, numpy, ml_dtypes"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
PESO_ST_EXPORT_DIR=$dir "$bin/hf_test_safetensors" --jobs=1 \
    --filter 'safetensors/writer_lays_out_as_the_official_library' >/dev/null
"$py" - "$dir" <<'PY'
import sys
import ml_dtypes
import numpy as np
import safetensors
from safetensors import safe_open
from safetensors.numpy import save_file
d = sys.argv[1]
c_file = f"{d}/c_written.safetensors"
# the values of tests/hf/test_safetensors.c (w_a, w_b, w_z)
a = np.array([[0.0, -1.5, 3.25], [0.001, 123456.789, -7.0]], dtype=np.float32)
b = np.array([1.0, 1.01171875, 3.140625], dtype=np.float32).astype(ml_dtypes.bfloat16)
z = np.array(7.5, dtype=np.float32)
with safe_open(c_file, framework="numpy") as f:
    assert f.metadata() == {"format": "pt"}, f.metadata()
    assert sorted(f.keys()) == ["a", "b", "z"], f.keys()
    assert np.array_equal(f.get_tensor("a"), a)
    assert f.get_tensor("z").shape == () and f.get_tensor("z") == z
raw = dict(safetensors.deserialize(open(c_file, "rb").read()))
assert raw["b"]["dtype"] == "BF16" and raw["b"]["shape"] == [3]
assert bytes(raw["b"]["data"]) == b.tobytes(), (bytes(raw["b"]["data"]), b.tobytes())
save_file({"a": a, "b": b, "z": z}, f"{d}/py_written.safetensors", metadata={"format": "pt"})
assert open(c_file, "rb").read() == open(f"{d}/py_written.safetensors", "rb").read(), "bytes differ"
print("4 passed, 0 failed")
PY
