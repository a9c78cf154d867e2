#!/bin/bash
# `peso-model init` as a user runs it: the folder, the parameter count it
# prints (checked against the Llama formula over config.json), the same
# files for the same seed, other weights for another seed, and no
# overwriting without --force.
set -euo pipefail
bin=${PESO_BIN_DIR:?}
pm=$bin/peso-model
if ! [ -x "$pm" ]; then
    echo "FAIL: $pm is not built"
    exit 1
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
passed=0 failed=0
check() { if eval "$1"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAIL: $2"; fi; }

out=$("$pm" init --preset tiny --out "$dir/a" --seed 3)
"$pm" init --preset tiny --out "$dir/b" --seed 3 >/dev/null
"$pm" init --preset tiny --out "$dir/c" --seed 4 >/dev/null
printed=$(sed -n 's/^parameters: \([0-9]*\) .*/\1/p' <<<"$out")
formula=$(python3 - "$dir/a/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
h, hd = c["hidden_size"], c["head_dim"]
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
layer = 2 * h + 2 * h * q + 2 * h * kv + 3 * h * c["intermediate_size"]
print((1 if c["tie_word_embeddings"] else 2) * c["vocab_size"] * h + c["num_hidden_layers"] * layer + h)
PY
)
check '[ -n "$printed" ] && [ "$printed" = "$formula" ]' "printed '$printed' parameters, formula $formula"
for f in config.json generation_config.json model.safetensors special_tokens_map.json tokenizer.json \
    tokenizer_config.json; do
    check 'cmp -s "$dir/a/$f" "$dir/b/$f"' "$f differs for the same seed"
done
check '! cmp -s "$dir/a/model.safetensors" "$dir/c/model.safetensors"' "another seed gave the same weights"
check 'cmp -s "$dir/a/tokenizer.json" "$dir/c/tokenizer.json"' "the tokenizer depends on the seed"

rc=0
err=$("$pm" init --preset tiny --out "$dir/a" 2>&1 >/dev/null) || rc=$?
check '[ "$rc" -ne 0 ] && grep -q -- "--force" <<<"$err"' "a second init into $dir/a: rc $rc, '$err'"
check '"$pm" init --preset tiny --out "$dir/a" --seed 4 --force >/dev/null' "--force failed"
check 'cmp -s "$dir/a/model.safetensors" "$dir/c/model.safetensors"' "--force did not rewrite the weights"
rc=0
"$pm" init --preset tiny --out "$dir/d" --levels 3 >/dev/null 2>&1 || rc=$?
check '[ "$rc" -eq 2 ] && ! [ -e "$dir/d" ]' "--levels without --with-codes: rc $rc"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
