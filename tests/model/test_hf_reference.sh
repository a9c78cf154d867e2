#!/bin/bash
# The model engine against Hugging Face transformers + PEFT: loss, logits
# and every LoRA gradient of two tiny random Llama configs (tied and
# untied) within 1e-4 relative in float32, through peso-model's loss and
# logits commands, and an adapter folder written by `peso-model adapter`
# loaded in PEFT with the same logits (tools/reference/hf_llama_check.py).
# Needs the reference venv that tools/reference/setup-venv.sh makes;
# without it the test is skipped, or fails under PESO_TEST_STRICT (CI;
# tests/skip.sh).
set -euo pipefail
src=${PESO_SOURCE_DIR:?} bin=${PESO_BIN_DIR:?}
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "$src/tests/skip.sh"
need_ref_venv "import torch, transformers, peft, safetensors, h5py"
exec "$py" "$src/tools/reference/hf_llama_check.py" --peso-model "$bin/peso-model"
