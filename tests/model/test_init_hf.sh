#!/bin/bash
# The folders that `peso-model init` writes load in Hugging Face
# transformers: LlamaForCausalLM.from_pretrained with no missing or
# unexpected weights, the parameter count of the Llama formula, the head
# tied or untied as config.json says, the file's weights; and
# AutoTokenizer.from_pretrained, whose ids for each prompt text equal the
# ids our prompt builder assembled, and whose loss with our labels is the
# cross-entropy of the target codes only. Needs the reference venv with
# torch and transformers (tools/reference/setup-venv.sh; $PESO_REF_VENV
# names another one); skipped without it, a failure under PESO_TEST_STRICT.
set -euo pipefail
src=${PESO_SOURCE_DIR:?} bin=${PESO_BIN_DIR:?}
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "$src/tests/skip.sh"
need_ref_venv "import torch, transformers"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
if ! log=$(PESO_INIT_EXPORT_DIR=$dir "$bin/model_test_prompt" --jobs=1 \
    --filter 'prompt/folders_and_examples_export_for_python' 2>&1); then
    echo "$log"
    exit 1
fi
"$py" - "$dir" <<'PY'
import json, sys
import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file
from transformers import AutoTokenizer, GenerationConfig, LlamaForCausalLM, PreTrainedTokenizerFast

d = sys.argv[1]
passed = failed = 0

def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)

def param_formula(c):
    h, hd = c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
    layer = 2 * h + 2 * h * q + 2 * h * kv + 3 * h * c["intermediate_size"]
    tables = 1 if c["tie_word_embeddings"] else 2
    return tables * c["vocab_size"] * h + c["num_hidden_layers"] * layer + h

for name in ["tiny", "tiny-codes", "small"]:
    path = f"{d}/{name}"
    cfg = json.load(open(f"{path}/config.json"))
    model, info = LlamaForCausalLM.from_pretrained(path, output_loading_info=True, torch_dtype=torch.float32)
    bad = {k: v for k, v in info.items() if v}
    check(not bad, f"{name}: loading reported {bad}")
    n = sum(p.numel() for p in model.parameters())
    check(n == param_formula(cfg), f"{name}: {n} parameters, formula {param_formula(cfg)}")
    tied = model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    check(tied == cfg["tie_word_embeddings"], f"{name}: tied={tied}")
    check(model.config.rope_scaling["rope_type"] == "llama3", f"{name}: rope {model.config.rope_scaling}")
    sd = model.state_dict()
    for k, v in load_file(f"{path}/model.safetensors").items():
        check(np.array_equal(sd[k].numpy(), v), f"{name}: {k} differs from the file")
    tok = AutoTokenizer.from_pretrained(path)
    check(isinstance(tok, PreTrainedTokenizerFast), f"{name}: tokenizer class {type(tok).__name__}")
    check(tok.bos_token == "<|begin_of_text|>" and tok.bos_token_id == cfg["bos_token_id"],
          f"{name}: bos {tok.bos_token!r} {tok.bos_token_id}")
    check(tok.eos_token == "<|end_of_text|>" and tok.eos_token_id == cfg["eos_token_id"],
          f"{name}: eos {tok.eos_token!r} {tok.eos_token_id}")
    check(len(tok) == cfg["vocab_size"], f"{name}: {len(tok)} tokens, vocab_size {cfg['vocab_size']}")
    g = GenerationConfig.from_pretrained(path)
    check(g.bos_token_id == cfg["bos_token_id"] and g.eos_token_id == cfg["eos_token_id"],
          f"{name}: generation_config {g.bos_token_id} {g.eos_token_id}")

model = LlamaForCausalLM.from_pretrained(f"{d}/tiny-codes", torch_dtype=torch.float32)
tok = AutoTokenizer.from_pretrained(f"{d}/tiny-codes")
cases = json.load(open(f"{d}/prompts.json"))
for i, c in enumerate(cases):
    ids, labels = c["ids"], c["labels"]
    got = tok(c["text"], add_special_tokens=False)["input_ids"]
    check(got == ids, f"prompt {i}: transformers {got}, ours {ids}")
    check(tok.decode(got) == c["text"], f"prompt {i}: decode differs")
    check(labels == [-100] * (len(ids) - 4) + ids[-4:], f"prompt {i}: labels {labels}")
    # HF shifts the labels: the loss is the mean cross-entropy of the 4
    # target codes, each predicted from the position before it.
    x, y = torch.tensor([ids]), torch.tensor([labels])
    with torch.no_grad():
        out = model(input_ids=x, labels=y)
    t = torch.arange(len(ids) - 4, len(ids))
    want = F.cross_entropy(out.logits[0, t - 1], x[0, t])
    check(torch.isfinite(out.loss) and abs(out.loss.item() - want.item()) < 1e-5,
          f"prompt {i}: loss {out.loss.item()} vs target-code cross-entropy {want.item()}")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
