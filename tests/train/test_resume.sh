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
            --set train.epochs=2 --set train.epochs_continual=2 --set eval.select_epoch=1)

fail() { echo "FAIL: $*"; exit 1; }

# the uninterrupted reference
"$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/a" --stages 1-2 >"$tmp/a.log" 2>&1 ||
    { cat "$tmp/a.log"; fail "uninterrupted run"; }
grep -q 'stage 2: done' "$tmp/a.log" || fail "no stage 2 in the reference run"
[ "$(grep -c '^stage 2 epoch [12]: valid ndcg@10' "$tmp/a.log")" = 2 ] || fail "no validation after each epoch"
# eval.select_epoch kept the epoch with the best validation NDCG@10: decoding
# the final checkpoint's validation pairs again gives the best logged score
best=$(sed -n 's/^stage 2 epoch [12]: valid ndcg@10 \([0-9.]*\) .*/\1/p' "$tmp/a.log" | sort -g | tail -1)
"$bin/peso-eval" "${set_common[@]}" --set out_dir="$tmp/a" --set eval.valid=1 \
    --checkpoint "$tmp/a/peso-lambda2/stage-2.h5" --stage 2 >"$tmp/e.log" 2>&1 || { cat "$tmp/e.log"; fail "peso-eval"; }
grep -q "^eval stage 2 valid (peso): .* ndcg@10 $best " "$tmp/e.log" ||
    { grep 'valid' "$tmp/a.log" "$tmp/e.log"; fail "the kept epoch's validation NDCG@10 is not the best ($best)"; }

# the dataset and model of run b are made first, so that the signal lands in training
"$bin/peso-prep" --config "$conf" --set out_dir="$tmp/b" >/dev/null
"$bin/peso-train" "${set_common[@]}" --set out_dir="$tmp/b" --stages 1-2 >"$tmp/b1.log" 2>&1 &
pid=$!
for _ in $(seq 1 600); do
    # in epoch 2, so that the partial checkpoint carries epoch 1's selection state
    grep -q '^stage 1 epoch 2/2 step' "$tmp/b1.log" 2>/dev/null && break
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
h5dump -H "$(ls -v "$tmp"/b/stage-1-step-*.h5 | tail -1)" >"$tmp/dump.txt"
grep -q 'GROUP "adapter"' "$tmp/dump.txt" || fail "h5dump shows no /adapter"
grep -q 'GROUP "best"' "$tmp/dump.txt" || fail "the epoch-2 checkpoint lacks epoch 1's selection state"

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
