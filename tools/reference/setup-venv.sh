#!/usr/bin/env bash
# Makes the reference venv of tools/reference (default .venv-ref at the
# repository root, or $PESO_REF_VENV): Debian's python3-torch (CPU), numpy
# and h5py, seen through --system-site-packages, plus the pinned PyPI
# packages of tools/reference/requirements.txt. Idempotent: a venv made
# from the same requirements by the same interpreter is left alone. Installs
# missing Debian packages as root or through sudo. Exits non-zero with a
# message saying what failed.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
req=$root/tools/reference/requirements.txt
venv=${PESO_REF_VENV:-$root/.venv-ref}
py=/usr/bin/python3
# libopenblas0-pthread: Debian's torch multiplies through the libblas.so.3
# alternative, which is the slow reference BLAS without it.
pkgs=(python3 python3-venv python3-torch python3-numpy python3-h5py libopenblas0-pthread)

die() { echo "setup-venv: $*" >&2; exit 1; }

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null || die "need root or sudo to install: ${missing[*]}"
        sudo=sudo
    fi
    echo "setup-venv: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q || die "apt-get update failed"
    $sudo apt-get install -y -q --no-install-recommends "${missing[@]}" || die "apt-get install ${missing[*]} failed"
fi
"$py" -c 'import torch, numpy, h5py' 2>/dev/null \
    || die "$py cannot import torch, numpy and h5py from Debian's packages"

stamp="$("$py" --version) $(sha256sum "$req" | cut -d' ' -f1)"
if [ -f "$venv/.peso-ref-stamp" ] && [ "$(cat "$venv/.peso-ref-stamp")" = "$stamp" ] \
    && "$venv/bin/python" -c 'import torch, transformers, peft' 2>/dev/null; then
    echo "setup-venv: $venv is up to date"
    exit 0
fi
if [ -e "$venv" ]; then
    # Only ever delete what is recognisably a venv.
    [ -f "$venv/pyvenv.cfg" ] || die "$venv exists and is not a venv; move it away"
    rm -rf "$venv"
fi
"$py" -m venv --system-site-packages "$venv" || die "python3 -m venv $venv failed"
# --no-deps: requirements.txt is the full closure (see there why).
"$venv/bin/pip" install -q --no-input --no-deps -r "$req" || die "pip install -r $req failed"
"$venv/bin/python" - <<'PY' || die "the venv at $venv does not work (see above)"
import numpy, torch, transformers, peft, safetensors, tokenizers, h5py, ml_dtypes
from transformers import LlamaForCausalLM
assert torch.__file__.startswith("/usr/lib/python3/"), f"torch from {torch.__file__}, expected Debian's"
assert numpy.__version__.split(".")[0] == "1", f"numpy {numpy.__version__}: Debian's torch needs numpy 1"
print(f"setup-venv: torch {torch.__version__} (Debian), numpy {numpy.__version__}, "
      f"transformers {transformers.__version__}, peft {peft.__version__}, safetensors {safetensors.__version__}")
PY
arch=$("$py" -c 'import sysconfig; print(sysconfig.get_config_var("MULTIARCH"))')
blas=$(readlink -f "/usr/lib/$arch/libblas.so.3" 2>/dev/null || true)
case "$blas" in
*openblas*) ;;
*) echo "setup-venv: warning: libblas.so.3 is ${blas:-absent}, not OpenBLAS; torch will be slow" >&2 ;;
esac
echo "$stamp" >"$venv/.peso-ref-stamp"
echo "setup-venv: made $venv"
