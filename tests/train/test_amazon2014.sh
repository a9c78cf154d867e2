#!/usr/bin/env bash
# The real Amazon 2014 Musical Instruments 5-core file through every stage
# (issue 4): peso-train prepares the dataset itself, trains stage 1 and
# PESO on D2..D5 (windows capped so the test stays short) and writes
# finite metrics for every stage.
set -euo pipefail
bin=${PESO_BIN_DIR:?}
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "${PESO_SOURCE_DIR:?}/tests/skip.sh"
data=${PESO_SHARED_DATA:?}/amazon-instruments-2014/reviews_Musical_Instruments_5.json.gz
[ -f "$data" ] || skip_missing "$data is not there (the shared data folder)"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$bin/peso-train" --set data.format=amazon2014 --set data.reviews="$data" --set out_dir="$tmp/run" \
    --set split.min_user_interactions=3 --set semid.codebook=32 --set semid.epochs=10 \
    --set train.max_windows=200 --set train.lr=5e-3 --set eval.max_users=40 --set eval.stages=[2,3,4,5] \
    --set method.name=peso >"$tmp/log.txt" 2>&1 || { tail -30 "$tmp/log.txt"; echo "FAIL: peso-train"; exit 1; }
grep -q 'preparing it' "$tmp/log.txt" || { echo "FAIL: the dataset was not prepared by peso-train"; exit 1; }
python3 - "$tmp/run/metrics.jsonl" <<'PY'
import json, math, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
stages = sorted(r["stage"] for r in rows if r["method"] == "peso" and r["split"] == "test")
assert stages == [2, 3, 4, 5], stages
for r in rows:
    assert r["users"] > 0, r
    for k in ("hit@5", "hit@10", "ndcg@5", "ndcg@10"):
        assert math.isfinite(r[k]) and 0 <= r[k] <= 1, r
print("amazon 2014: stages", stages, "hit@10", [round(r["hit@10"], 4) for r in rows])
PY
