#!/bin/bash
# `peso-model adapter` as a user runs it: the two PEFT files, their keys,
# shapes and values read back by a plain Python reader (A inside PEFT's
# Kaiming-uniform bound 1/sqrt(in), B zero or with the asked std), the
# config fields PEFT reads, the same files for the same seed, the base
# model's logits under a zero-B adapter and other logits under a random-B
# one, no overwriting without --force, and exit status 2 for usage errors
# and 1 for failures. (That PEFT itself loads the folder with the same
# logits is tools/reference/hf_llama_check.py, run by test_hf_reference.)
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

# Prints "ok" or what is wrong with adapter folder $1 for model folder $2,
# expected rank $3, alpha $4, comma-separated PEFT targets $5 and B std $6
# (0: B must be exactly zero).
inspect() {
    python3 - "$@" <<'PY'
import json, math, struct, sys
ad, model, r, alpha, targets, bstd = sys.argv[1:7]
r, alpha, bstd, targets = int(r), float(alpha), float(bstd), targets.split(",")
c = json.load(open(f"{model}/config.json"))
a = json.load(open(f"{ad}/adapter_config.json"))
bad = []
for k, want in (("peft_type", "LORA"), ("task_type", "CAUSAL_LM"), ("r", r), ("lora_alpha", alpha),
                ("target_modules", targets), ("use_rslora", False), ("use_dora", False), ("bias", "none")):
    if a.get(k) != want:
        bad.append(f"adapter_config.json {k} = {a.get(k)!r}, expected {want!r}")
raw = open(f"{ad}/adapter_model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
head = json.loads(raw[8:8 + n])
if head.pop("__metadata__", None) != {"format": "pt"}:
    bad.append("__metadata__ is not {'format': 'pt'}")
h, hd, inter = c["hidden_size"], c["head_dim"], c["intermediate_size"]
q, kv = c["num_attention_heads"] * hd, c["num_key_value_heads"] * hd
dims = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h),
        "gate_proj": (h, inter), "up_proj": (h, inter), "down_proj": (inter, h)}
want = {}
for i in range(c["num_hidden_layers"]):
    for t in targets:
        fin, fout = dims[t]
        parent = "self_attn" if t in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        key = f"base_model.model.model.layers.{i}.{parent}.{t}.lora_"
        want[key + "A.weight"] = ([r, fin], fin)
        want[key + "B.weight"] = ([fout, r], fin)
if set(head) != set(want):
    bad.append(f"keys: missing {sorted(set(want) - set(head))[:2]}, unexpected {sorted(set(head) - set(want))[:2]}")
b_vals = []
for key, (shape, fin) in want.items():
    t = head.get(key)
    if t is None:
        continue
    if t["dtype"] != "F32" or t["shape"] != shape:
        bad.append(f"{key}: {t['dtype']} {t['shape']}, expected F32 {shape}")
        continue
    lo, hi = t["data_offsets"]
    v = struct.unpack(f"<{(hi - lo) // 4}f", raw[8 + n + lo:8 + n + hi])
    if key.endswith("lora_A.weight"):
        if max(abs(x) for x in v) > 1 / math.sqrt(fin) or len(set(v)) < len(v) // 2:
            bad.append(f"{key}: not U(-1/sqrt({fin}), 1/sqrt({fin})) draws")
    else:
        b_vals += v
if bstd == 0 and any(x != 0 for x in b_vals):
    bad.append("B is not zero")
if bstd > 0:
    m = sum(b_vals) / len(b_vals)
    s = math.sqrt(sum((x - m) ** 2 for x in b_vals) / len(b_vals))
    if abs(m) > 4 * bstd / math.sqrt(len(b_vals)) or abs(s / bstd - 1) > 0.05:
        bad.append(f"B mean {m:.4g} std {s:.4g} over {len(b_vals)}, expected N(0, {bstd}^2)")
print("; ".join(bad) if bad else "ok")
PY
}
top() { "$pm" logits --model "$dir/m" "$@" --ids 1,40,7,99,3,250 | grep '^top'; }

"$pm" init --preset tiny --out "$dir/m" --seed 3 >/dev/null
all=q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj

check '"$pm" adapter --model "$dir/m" --out "$dir/z" >/dev/null' "adapter with defaults failed"
res=$(inspect "$dir/z" "$dir/m" 8 16 $all 0)
check '[ "$res" = ok ]' "default adapter: $res"
base=$(top)
check '[ "$(wc -l <<<"$base")" -eq 5 ]' "logits of the base model: '$base'"
check '[ "$base" = "$(top --adapter "$dir/z")" ]' "a zero-B adapter changed the logits"

out=$("$pm" adapter --model "$dir/m" --out "$dir/n" --b-init normal --b-std 0.1 --seed 5 --rank 3 --alpha 5 \
    --targets q,k,down)
res=$(inspect "$dir/n" "$dir/m" 3 5 q_proj,k_proj,down_proj 0.1)
check '[ "$res" = ok ]' "--b-init normal --rank 3 --alpha 5 --targets q,k,down: $res"
check 'grep -q "^tensors 12 " <<<"$out"' "printed '$out', expected 2 layers x 3 targets x 2 tensors"
check '[ "$base" != "$(top --adapter "$dir/n")" ]' "a random-B adapter left the logits unchanged"
"$pm" adapter --model "$dir/m" --out "$dir/n2" --b-init normal --b-std 0.1 --seed 5 --rank 3 --alpha 5 \
    --targets q,k,down >/dev/null
for f in adapter_config.json adapter_model.safetensors; do
    check 'cmp -s "$dir/n/$f" "$dir/n2/$f"' "$f differs for the same seed"
done
"$pm" adapter --model "$dir/m" --out "$dir/s6" --b-init normal --seed 6 >/dev/null
res=$(inspect "$dir/s6" "$dir/m" 8 16 $all 0.02)
check '[ "$res" = ok ]' "--b-init normal with the default std 0.02: $res"
check '! cmp -s "$dir/s6/adapter_model.safetensors" "$dir/n/adapter_model.safetensors"' \
    "another seed gave the same weights"

# a non-empty folder: refused (files untouched), then rewritten with --force
touch "$dir/n/README.md"
cp "$dir/n/adapter_model.safetensors" "$dir/before"
rc=0
err=$("$pm" adapter --model "$dir/m" --out "$dir/n" --seed 9 2>&1 >/dev/null) || rc=$?
check '[ "$rc" -eq 1 ] && grep -q -- "$dir/n" <<<"$err" && grep -q -- "--force" <<<"$err"' \
    "adapter into a non-empty folder: rc $rc, '$err'"
check 'cmp -s "$dir/before" "$dir/n/adapter_model.safetensors"' "a refused adapter changed the folder"
check '"$pm" adapter --model "$dir/m" --out "$dir/n" --force >/dev/null' "--force failed"
res=$(inspect "$dir/n" "$dir/m" 8 16 $all 0)
check '[ "$res" = ok ]' "after --force: $res"

# failures: exit 1, the message names the file
rc=0
err=$("$pm" adapter --model "$dir/none" --out "$dir/f1" 2>&1 >/dev/null) || rc=$?
check '[ "$rc" -eq 1 ] && grep -q "$dir/none/config.json" <<<"$err" && ! [ -e "$dir/f1" ]' \
    "missing model folder: rc $rc, '$err'"
rc=0
err=$("$pm" adapter --model "$dir/m" --out "$dir/m/config.json" 2>&1 >/dev/null) || rc=$?
check '[ "$rc" -eq 1 ] && grep -q "$dir/m/config.json" <<<"$err"' "--out naming a file: rc $rc, '$err'"

# usage errors: exit 2, nothing written
usage_case() {
    local rc=0
    "$pm" adapter "$@" >/dev/null 2>&1 || rc=$?
    check '[ "$rc" -eq 2 ] && ! [ -e "$dir/u" ]' "'adapter $*': rc $rc, expected 2 and no folder"
}
usage_case --model "$dir/m"
usage_case --out "$dir/u"
usage_case --model "$dir/m" --out "$dir/u" --b-init uniform
usage_case --model "$dir/m" --out "$dir/u" --b-std 0.1
usage_case --model "$dir/m" --out "$dir/u" --b-init normal --b-std -1
usage_case --model "$dir/m" --out "$dir/u" --b-init normal --b-std inf
usage_case --model "$dir/m" --out "$dir/u" --rank 0
usage_case --model "$dir/m" --out "$dir/u" --targets q,lm_head
usage_case --model "$dir/m" --out "$dir/u" --adapter "$dir/z"
usage_case --model "$dir/m" --out "$dir/u" --b-init
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
