#!/usr/bin/env bash
# Resume equality (issue 4): a run stopped by SIGTERM mid-stage exits 75
# after writing a checkpoint, refuses to restart without --resume, and with
# --resume ends with the same adapter, bit for bit, as an uninterrupted
# run (same thread count). Checkpoints made for another config are
# refused with the differing keys named.
set -euo pipefail
bin=${PESO_BIN_DIR:?}
src=${PESO_SOURCE_DIR:?}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
conf=$src/tests/train/small.yaml
set_common=(--config "$conf" --set method.name=peso --set eval.after_stage=0 --set ckpt.every_steps=4
            --set train.epochs=2)

fail() { echo "FAIL: $*"; exit 1; }

# the uninterrupted reference
"$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/a" --stages 1-2 >"$tmp/a.log" 2>&1 ||
    { cat "$tmp/a.log"; fail "uninterrupted run"; }
grep -q 'stage 2: done' "$tmp/a.log" || fail "no stage 2 in the reference run"

# the dataset and model of run b are made first, so that the signal lands in training
"$bin/peso-prep" --config "$conf" --set out_dir="$tmp/b" >/dev/null
"$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/b" --stages 1-2 >"$tmp/b1.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    grep -q '^stage 1 epoch 1/2 step 2/' "$tmp/b1.log" 2>/dev/null && break
    sleep 0.05
done
kill -TERM "$pid"
set +e
wait "$pid"
rc=$?
set -e
[ "$rc" = 75 ] || { cat "$tmp/b1.log"; fail "exit status $rc after SIGTERM, expected 75"; }
grep -q 'stopped by signal 15' "$tmp/b1.log" || fail "no stop message"
ls "$tmp"/b/stage-1-step-*.h5 >/dev/null 2>&1 || fail "no partial checkpoint after SIGTERM"
h5dump -H "$(ls "$tmp"/b/stage-1-step-*.h5 | head -1)" >"$tmp/dump.txt"
grep -q 'GROUP "adapter"' "$tmp/dump.txt" || fail "h5dump shows no /adapter"

# without --resume the partial checkpoint is not silently ignored
if "$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/b" --stages 1-2 >"$tmp/b2.log" 2>&1; then
    fail "restart without --resume succeeded"
fi
grep -q 'pass --resume' "$tmp/b2.log" || { cat "$tmp/b2.log"; fail "no --resume hint"; }

"$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/b" --stages 1-2 --resume >"$tmp/b3.log" 2>&1 ||
    { cat "$tmp/b3.log"; fail "resumed run"; }
grep -q 'resuming from' "$tmp/b3.log" || fail "the resumed run did not resume"
for t in 1 2; do
    d=$([ $t = 1 ] && echo "" || echo "/peso-lambda2")
    for g in /adapter /new_rows; do
        h5diff "$tmp/a$d/stage-$t.h5" "$tmp/b$d/stage-$t.h5" $g $g >"$tmp/diff.txt" ||
            { head -20 "$tmp/diff.txt"; fail "stage $t $g differs after resume"; }
    done
done
ls "$tmp"/b/stage-1-step-*.h5 >/dev/null 2>&1 && fail "partial checkpoints left after the stage ended"

# a checkpoint made for another config is refused, naming the keys
if "$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/a" --set method.name=single --set train.lr=0.002 --stages 2-2 \
    --set model.lora_rank=4 >"$tmp/c.log" 2>&1; then
    fail "a mismatched checkpoint was accepted"
fi
grep -q 'lora rank 8 vs 4' "$tmp/c.log" || { cat "$tmp/c.log"; fail "no shape mismatch message"; }
if "$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/a" --set method.name=single --set train.lr=0.002 --stages 2-2 \
    >"$tmp/d.log" 2>&1; then
    fail "a checkpoint of another learning rate was accepted"
fi
grep -q 'train.lr: 0.0050000000000000001 vs 0.002' "$tmp/d.log" || { cat "$tmp/d.log"; fail "no config diff"; }
echo "resume equality and mismatch refusal: ok"
