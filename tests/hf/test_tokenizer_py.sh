#!/bin/bash
# Tokenizers written by the C code (peso_tok_build_small + add_special,
# and a fixture extended with a code token) must load in Hugging Face
# tokenizers and encode exactly as the C encoder did.
# Needs the reference venv (tools/reference/setup-venv.sh).
set -euo pipefail
src=${PESO_SOURCE_DIR:?} bin=${PESO_BIN_DIR:?}
source "$src/tests/model/ref_venv.sh"
need_ref_venv "import tokenizers"
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
PESO_TOK_EXPORT_DIR=$dir "$bin/hf_test_tokenizer" --jobs=1 \
    --filter 'tokenizer/built_and_extended_tokenizers_save_for_python' >/dev/null
"$py" - "$dir" "$src/tests/fixtures/model" <<'PY'
import json, sys
from tokenizers import Tokenizer
d, fix = sys.argv[1], sys.argv[2]
small = Tokenizer.from_file(f"{d}/small_tokenizer.json")
cases = json.load(open(f"{d}/cases.json", encoding="utf-8"))
for c in cases:
    got = small.encode(c["text"], add_special_tokens=False).ids
    assert got == c["ids"], (c["text"], got, c["ids"])
    assert small.decode(got, skip_special_tokens=False) == c["text"], c["text"]
assert small.token_to_id("<a_0>") == small.get_vocab_size(with_added_tokens=False), "code tokens follow the vocabulary"
ext = Tokenizer.from_file(f"{d}/extended_tokenizer.json")
base = Tokenizer.from_file(f"{fix}/tok_llama3.json")
new = ext.token_to_id("<e_7>")
assert new == base.get_vocab_size(with_added_tokens=True), (new, base.get_vocab_size())
enc = lambda tok, s: tok.encode(s, add_special_tokens=False).ids
head, tail = "<|begin_of_text|>items <a_1>", ", next?"
got = enc(ext, head + "<e_7>" + tail)
assert got == enc(base, head) + [new] + enc(base, tail), got
print(f"{len(cases)} passed, 0 failed")
PY
