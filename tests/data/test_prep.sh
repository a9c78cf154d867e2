#!/usr/bin/env bash
# peso-prep end to end, as a user runs it: outputs, config round trip,
# errors with exit codes, nothing left behind on failure.
set -euo pipefail
bin=${PESO_BIN_DIR:?}/peso-prep
data=${PESO_SHARED_DATA:-}
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "${PESO_SOURCE_DIR:?}/tests/skip.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. the built-in default: dataset.h5 + stats.json + the table
"$bin" --set out_dir="$tmp/demo" > "$tmp/out.txt"
[ -s "$tmp/demo/dataset.h5" ] || fail "no dataset.h5"
[ -s "$tmp/demo/stats.json" ] || fail "no stats.json"
grep -q '^D1:5 ' "$tmp/out.txt" || fail "no statistics table"
ls "$tmp/demo" | grep -q tmp && fail "temporary files left behind"
python3 - "$tmp/demo/stats.json" "$tmp/out.txt" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
rows = {l.split()[0]: l.split() for l in open(sys.argv[2]) if l[:1] == "D"}
assert len(s["blocks"]) == 5, s
for b in s["blocks"]:
    r = rows["D%d" % b["block"]]
    assert int(r[1]) == b["users"] and int(r[3]) == b["items"] and int(r[5]) == b["interactions"], (r, b)
    assert b["valid_pairs"] == b["users"] == b["test_pairs"]
    assert abs(b["avg_seq_len"] - b["interactions"] / b["users"]) < 1e-12
    assert abs(b["sparsity"] - (1 - b["interactions"] / (b["users"] * b["items"]))) < 1e-12
assert s["total"]["interactions"] == sum(b["interactions"] for b in s["blocks"])
PY
if command -v h5dump > /dev/null; then
    h5dump -H "$tmp/demo/dataset.h5" > "$tmp/h5.txt"
    grep -q 'GROUP "blocks"' "$tmp/h5.txt" || fail "h5dump does not show /blocks"
    h5dump -a /config "$tmp/demo/dataset.h5" > "$tmp/h5c.txt"
    grep -q 'format: synthetic' "$tmp/h5c.txt" || fail "config not stored"
else
    skip_missing_part "h5dump is not installed (hdf5-tools): the layout checks did not run"
fi

# 2. --print-config output is a config that reproduces itself
"$bin" --set split.window=7 --print-config > "$tmp/c.yaml"
"$bin" --config "$tmp/c.yaml" --print-config > "$tmp/c2.yaml"
diff <(grep -v '^#' "$tmp/c.yaml") <(grep -v '^#' "$tmp/c2.yaml") || fail "print-config does not round-trip"
grep -q '  window: 7' "$tmp/c.yaml" || fail "--set not applied"

# 3. errors: exit 2 for config mistakes, 1 for data problems, message names the culprit
set +e
"$bin" --set split.windw=3 2> "$tmp/e1"; rc1=$?
"$bin" --set data.format=amazon2014 --set data.reviews="$tmp/none.json.gz" --set out_dir="$tmp/x" 2> "$tmp/e2"; rc2=$?
printf '{"reviewerID": "u", "asin": "i"}\n' > "$tmp/bad.json"
"$bin" --set data.format=amazon2014 --set data.reviews="$tmp/bad.json" --set out_dir="$tmp/y" 2> "$tmp/e3"; rc3=$?
set -e
[ $rc1 -eq 2 ] && grep -q "unknown key 'split.windw'" "$tmp/e1" || fail "unknown key: rc=$rc1 $(cat "$tmp/e1")"
[ $rc2 -eq 1 ] && grep -q "$tmp/none.json.gz" "$tmp/e2" || fail "missing file: rc=$rc2 $(cat "$tmp/e2")"
[ $rc3 -eq 1 ] && grep -q "bad.json:1" "$tmp/e3" && grep -q unixReviewTime "$tmp/e3" \
    || fail "bad line: rc=$rc3 $(cat "$tmp/e3")"
[ -e "$tmp/y/dataset.h5" ] && fail "a failed run left a dataset"

# 4. real data (skipped without ../shared/data)
a14="$data/amazon-instruments-2014/reviews_Musical_Instruments_5.json.gz"
if [ -f "$a14" ]; then
    "$bin" --set data.format=amazon2014 --set data.reviews="$a14" --set out_dir="$tmp/a14" \
        --set semid.epochs=5 > "$tmp/a14.txt"
    grep -q 'loaded 10261 interactions, 1429 users, 900 items' "$tmp/a14.txt" || fail "amazon2014 counts"
else
    skip_missing_part "$a14 is not there (the shared data folder): the Amazon 2014 part did not run"
fi
let="$data/letter-instruments-2018"
if [ -f "$let/Instruments.inter.json" ]; then
    set +e
    "$bin" --set data.format=letter --set data.reviews="$let/Instruments.inter.json" --set semid.source=import \
        --set semid.index="$let/Instruments.index.json" --set out_dir="$tmp/letter" 2> "$tmp/e4"; rc4=$?
    set -e
    [ $rc4 -eq 1 ] && grep -q 'user-disjoint' "$tmp/e4" || fail "letter chronological must be refused: $(cat "$tmp/e4")"
    "$bin" --set data.format=letter --set data.reviews="$let/Instruments.inter.json" --set semid.source=import \
        --set semid.index="$let/Instruments.index.json" --set split.mode=user-disjoint \
        --set semid.export_index="$tmp/letter/out.index.json" --set out_dir="$tmp/letter" > "$tmp/l.txt"
    grep -q '9922 items, 4 levels, 9897 distinct tuples' "$tmp/l.txt" || fail "letter import: $(cat "$tmp/l.txt")"
    python3 - "$let/Instruments.index.json" "$tmp/letter/out.index.json" <<'PY'
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
assert a == b, "exported index differs from the imported one"
PY
else
    skip_missing_part "$let/Instruments.inter.json is not there (the shared data folder): the LETTER part did not run"
fi
echo "peso-prep end to end: ok"
