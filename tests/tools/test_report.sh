#!/usr/bin/env bash
# Checks of tools/report on hand-made metrics.jsonl fixtures
# (tests/tools/report_fixtures/): the means, bold/underline placement and
# gains below are worked out by hand from the per-stage values in the
# fixtures; the plots, the lambda sweep over two run dirs, and the errors.
set -euo pipefail

src=${PESO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
report=$src/tools/report
fix=$src/tests/tools/report_fixtures
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "$src/tests/skip.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
have_gnuplot=0
if command -v gnuplot >/dev/null; then
    have_gnuplot=1
else
    skip_missing_part "gnuplot is not installed: the PNG checks do not run"
fi

fail() {
    echo "FAIL: $*" >&2
    fails=$((fails + 1))
}

# run CMD...: sets rc, out (stdout) and err (stderr)
run() {
    rc=0
    "$@" >"$tmp/out" 2>"$tmp/err" || rc=$?
    out=$(cat "$tmp/out")
    err=$(cat "$tmp/err")
}

expect_rc() {
    [[ $rc == "$1" ]] || fail "$2: exit status $rc, expected $1 (stderr: $err)"
}

has() { # has TEXT NEEDLE WHAT
    [[ $1 == *"$2"* ]] || fail "$3: '$2' not in: $1"
}

lacks() { # lacks TEXT NEEDLE WHAT
    [[ $1 != *"$2"* ]] || fail "$3: '$2' should not be in the output"
}

line() { # line FILE EXACT_LINE WHAT
    grep -Fxq -- "$2" "$1" || fail "$3: line '$2' not in $1"
}

is_png() { # is_png FILE
    if [[ ! -s $1 ]]; then
        fail "$1 missing"
        return
    fi
    [[ $(head -c 8 "$1" | od -An -tx1 | tr -d ' \n') == 89504e470d0a1a0a ]] ||
        fail "$1 does not start with the PNG signature"
}

# csv_row FILE FIRST_FIELDS EXPECTED...: the row whose leading fields are
# FIRST_FIELDS (comma-joined) ends in numbers within 1e-9 of EXPECTED
csv_row() {
    local file=$1 key=$2
    shift 2
    awk -F, -v key="$key" -v want="$*" '
        BEGIN { n = split(want, w, " ") }
        index($0, key ",") == 1 {
            found = 1
            for (i = 1; i <= n; i++) {
                d = $(NF - n + i) - w[i]
                if (d < -1e-9 || d > 1e-9) {
                    printf "field %d is %s, expected %s\n", NF - n + i,
                        $(NF - n + i), w[i]
                    bad = 1
                }
            }
        }
        END { if (!found) print "no row"; exit !found || bad }
    ' "$file" >"$tmp/awk" || fail "$file row '$key': $(cat "$tmp/awk")"
}

# ---- Table 2 from one run dir (test split) ----
# Per-stage values in main/metrics.jsonl (H@5, H@10, N@5, N@10 at stages
# 2, 3, 4; eval_stages [2, 3, 4]) and their means:
#   pretrain  every stage .01 .02 .005 .008           -> .0100 .0200 .0050 .0080
#   single    H@5 .03 .04 .05 -> .04, H@10 .05 .06 .07 -> .06, N@5 .02,
#             N@10 .024 .025 .026 -> .025              -> .0400 .0600 .0200 .0250
#   sumlora latest+inherit  H@5 .040 .045 .050, H@10 .060 .066 .072,
#             N@5 .018 .019 .020, N@10 .02 .03 .04     -> .0450 .0660 .0190 .0300
#   sdlora all  H@5 .01 .02 .03, H@10 .03, N@5 .005 .01 .015, N@10 .015
#                                                      -> .0200 .0300 .0100 .0150
#   l2        H@5 .042, H@10 .070 .072 .074, N@5 .021, N@10 .022 .024 .026
#                                                      -> .0420 .0720 .0210 .0240
#   ortho     stages 2 and 4 only (stage 3 missing): H@5 .001 .003,
#             H@10 .002 .004, N@5 .001, N@10 .0015 .0025
#                                                      -> .0020 .0030 .0010 .0020
#   peso      H@5 .04 .05 .06, H@10 .068 .069 .070, N@5 .02 .025 .03,
#             N@10 .025 .0275 .03                      -> .0500 .0690 .0250 .0275
#             plus a stage-5 line of .9 everywhere, outside eval_stages: were
#             it averaged, PESO would be best in every column.
# Best / second best per column:
#   H@5 PESO .05 / SumLoRA .045     H@10 L2 .072 / PESO .069
#   N@5 PESO .025 / L2 .021         N@10 SumLoRA .030 / PESO .0275
# Ortho averages 2 stages, the others 3: the Stages column appears.
run "$report" "$fix/main" --out "$tmp/main"
expect_rc 0 "main"
md=$tmp/main/table.md
for l in \
    "| Methods | H@5 | H@10 | N@5 | N@10 | Stages |" \
    "| Pretrain | 0.0100 | 0.0200 | 0.0050 | 0.0080 | 3 |" \
    "| Single evolving LoRA | 0.0400 | 0.0600 | 0.0200 | 0.0250 | 3 |" \
    "| SumLoRA latest+inherit | <u>0.0450</u> | 0.0660 | 0.0190 | **0.0300** | 3 |" \
    "| SD-LoRA all | 0.0200 | 0.0300 | 0.0100 | 0.0150 | 3 |" \
    "| L2 | 0.0420 | **0.0720** | <u>0.0210</u> | 0.0240 | 3 |" \
    "| Ortho | 0.0020 | 0.0030 | 0.0010 | 0.0020 | 2 |" \
    "| PESO | **0.0500** | <u>0.0690</u> | **0.0250** | <u>0.0275</u> | 3 |"; do
    line "$md" "$l" "main table"
done
# Paper order: Pretrain, Single, the cumulative family (SumLoRA before
# SD-LoRA), then the regularizers, PESO last.
order=$(awk -F' [|] ' '/^[|] / { print substr($1, 3) }' "$md" | sed -n '2,9p' | paste -sd ';')
[[ $order == "Pretrain;Single evolving LoRA;*Cumulative LoRA family*;SumLoRA latest+inherit;SD-LoRA all;L2;Ortho;PESO" ]] ||
    fail "row order: $order"
# Gains vs single, 100 * (mean / single - 1):
#   pretrain  .01/.04 .02/.06 .005/.02 .008/.025 -> -75.00 -66.67 -75.00 -68.00
#   sumlora   .045/.04 .066/.06 .019/.02 .03/.025 -> 12.50 10.00 -5.00 20.00
#   sdlora    .02/.04 .03/.06 .01/.02 .015/.025  -> -50.00 -50.00 -50.00 -40.00
#   l2        .042/.04 .072/.06 .021/.02 .024/.025 -> 5.00 20.00 5.00 -4.00
#   ortho     .002/.04 .003/.06 .001/.02 .002/.025 -> -95.00 -95.00 -95.00 -92.00
#   peso      .05/.04 .069/.06 .025/.02 .0275/.025 -> 25.00 15.00 25.00 10.00
line "$md" "Performance gain (%) vs. Single evolving LoRA" "gain heading"
for l in \
    "| Pretrain | -75.00% | -66.67% | -75.00% | -68.00% |" \
    "| SumLoRA latest+inherit | 12.50% | 10.00% | -5.00% | 20.00% |" \
    "| SD-LoRA all | -50.00% | -50.00% | -50.00% | -40.00% |" \
    "| L2 | 5.00% | 20.00% | 5.00% | -4.00% |" \
    "| Ortho | -95.00% | -95.00% | -95.00% | -92.00% |" \
    "| PESO | 25.00% | 15.00% | 25.00% | 10.00% |"; do
    line "$md" "$l" "gains"
done
[[ $(grep -c '^| Single evolving LoRA |' "$md") == 1 ]] ||
    fail "the reference row should not get a gain row of its own"
lacks "$out" "stage1" "the shared D1 model is not a table row"
has "$err" "warning: Ortho: stage 3 missing from the test split" "missing stage warning"
line "$md" "- Ortho: stage 3 missing from the test split; mean over stages 2, 4" "warning in table.md"
cmp -s "$tmp/out" "$md" || fail "stdout differs from table.md"
# CSV: full precision, same numbers
csv=$tmp/main/table.csv
line "$csv" "table,row,method,lambda,stages,hit@5,hit@10,ndcg@5,ndcg@10" "csv header"
csv_row "$csv" "mean,PESO,peso,2.0,3" 0.05 0.069 0.025 0.0275
csv_row "$csv" "mean,Ortho,ortho,2.0,2" 0.002 0.003 0.001 0.002
# pretrain, single and the cumulative family have no proximal term: the
# lambda the trainer records for them is dropped
csv_row "$csv" "mean,Single evolving LoRA,single,,3" 0.04 0.06 0.02 0.025
csv_row "$csv" "gain_vs_single_pct,Pretrain,pretrain,,3" -75 -66.666666667 -75 -68
csv_row "$csv" "gain_vs_single_pct,PESO,peso,2.0,3" 25 15 25 10
# the per-stage data keeps stage 5 (plotted, not averaged)
csv_row "$tmp/main/stages.csv" "PESO,peso,2.0,5" 0.9 0.9 0.9 0.9
csv_row "$tmp/main/stages.csv" "Ortho,ortho,2.0,4" 0.003 0.004 0.001 0.0025
if grep -q '^Ortho,ortho,2.0,3,' "$tmp/main/stages.csv"; then
    fail "stages.csv invents Ortho's stage 3"
fi
leftover=$(find "$tmp/main" -name '*.tmp.*')
[[ -z $leftover ]] || fail "temporary files left: $leftover"
if ((have_gnuplot)); then
    for m in hit@5 hit@10 ndcg@5 ndcg@10; do
        is_png "$tmp/main/stage-$m.png"
    done
fi

# ---- validation split, markdown only ----
# valid lines: single .10 .20 .05 .08 and peso .11 .22 .06 .08 at every
# stage. PESO best in each column, single second, except N@10 where the
# two tie at .08 and both are bold with no second place. Gains:
# .11/.10 .22/.20 .06/.05 .08/.08 -> 10.00 10.00 20.00 0.00.
run "$report" "$fix/main" --out "$tmp/valid" --split valid --format md
expect_rc 0 "valid"
md=$tmp/valid/table.md
line "$md" "| Methods | H@5 | H@10 | N@5 | N@10 |" "valid: no Stages column"
line "$md" "| Single evolving LoRA | <u>0.1000</u> | <u>0.2000</u> | <u>0.0500</u> | **0.0800** |" "valid single"
line "$md" "| PESO | **0.1100** | **0.2200** | **0.0600** | **0.0800** |" "valid peso"
line "$md" "| PESO | 10.00% | 10.00% | 20.00% | 0.00% |" "valid gains"
lacks "$out" "Cumulative" "valid: no cumulative rows"
[[ ! -e $tmp/valid/table.csv ]] || fail "--format md wrote table.csv"

# ---- lambda sweep over two run dirs ----
# sweep-a: single (lambda 0) and peso lambda 0.5; sweep-b: peso lambda 5 and
# peso group=rank lambda 5; stages 2 and 3, no eval_stages (so both averaged).
# SumLoRA latest+inherit has stage 2 in sweep-a (recorded lambda 0.5) and
# stage 3 in sweep-b (lambda 5): one row, lambda ignored.
#   single  .02 .04 .01 .02 at both stages
#   sumlora H@5 .004 .006 -> .005, H@10 .01, N@5 .002 .004 -> .003, N@10 .006
#   peso λ=0.5  H@5 .02 .04 -> .03, H@10 .05, N@5 .015, N@10 .02 .03 -> .025
#   peso λ=5    H@5 .025 .035 -> .03, H@10 .06 .07 -> .065, N@5 .02, N@10 .03
#   group=rank  .01 .02 .005 .01
# H@5: the two PESO rows tie at .03 (both bold), single .02 second.
# PESO has two lambdas, so its rows carry them; group=rank has one: no λ.
run "$report" "$fix/sweep-a" "$fix/sweep-b" --out "$tmp/sweep"
expect_rc 0 "sweep"
md=$tmp/sweep/table.md
line "$md" "| Single evolving LoRA | <u>0.0200</u> | 0.0400 | 0.0100 | 0.0200 |" "sweep single"
line "$md" "| PESO (λ=0.5) | **0.0300** | <u>0.0500</u> | <u>0.0150</u> | <u>0.0250</u> |" "sweep λ=0.5"
line "$md" "| PESO (λ=5) | **0.0300** | **0.0650** | **0.0200** | **0.0300** |" "sweep λ=5"
line "$md" "| PESO (group=rank) | 0.0100 | 0.0200 | 0.0050 | 0.0100 |" "sweep group=rank"
line "$md" "| SumLoRA latest+inherit | 0.0050 | 0.0100 | 0.0030 | 0.0060 |" "sweep lambda-free row"
# .065/.04 = 1.625 and .02/.01 = 2 -> 62.50% and 100.00%;
# sumlora .005/.02 .01/.04 .003/.01 .006/.02 -> -75 -75 -70 -70
line "$md" "| PESO (λ=5) | 50.00% | 62.50% | 100.00% | 50.00% |" "sweep gains"
line "$md" "| SumLoRA latest+inherit | -75.00% | -75.00% | -70.00% | -70.00% |" "sweep lambda-free gains"
has "$out" "mean over stages 2, 3 (runs: $fix/sweep-a, $fix/sweep-b)" "sweep heading"
# Figure 3 data: lambda 0 is the single evolving LoRA
lcsv=$tmp/sweep/lambda-peso.csv
csv_row "$lcsv" "0.0" 0.02 0.04 0.01 0.02
csv_row "$lcsv" "0.5" 0.03 0.05 0.015 0.025
csv_row "$lcsv" "5.0" 0.03 0.065 0.02 0.03
[[ $(wc -l <"$lcsv") == 4 ]] || fail "lambda-peso.csv should hold a header and 3 lambdas"
[[ -z $(find "$tmp/sweep" -name 'lambda-peso-group*') ]] ||
    fail "a method with one lambda got a lambda sweep"
if ((have_gnuplot)); then
    is_png "$tmp/sweep/lambda-peso.png"
fi

# ---- default output folder: <first RUN_DIR>/report ----
cp -r "$fix/sweep-a" "$tmp/run"
run "$report" "$tmp/run" --format csv
expect_rc 0 "default --out"
[[ -s $tmp/run/report/table.csv ]] || fail "default --out: no $tmp/run/report/table.csv"
has "$out" "| Methods |" "--format csv still prints the Markdown"

# ---- without gnuplot: tables written, plots skipped and said so ----
py=$(python3 -c 'import os, sys; print(os.path.realpath(sys.executable))')
mkdir "$tmp/nobin"
run env PATH="$tmp/nobin" "$py" "$report" "$fix/sweep-a" "$fix/sweep-b" --out "$tmp/noplot"
expect_rc 0 "no gnuplot"
has "$err" "plots skipped: gnuplot is not on PATH" "no gnuplot"
has "$(cat "$tmp/noplot/table.md")" "plots skipped" "no gnuplot note in table.md"
[[ -s $tmp/noplot/lambda-peso.csv ]] || fail "no gnuplot: sweep data not written"
[[ -z $(find "$tmp/noplot" -name '*.png') ]] || fail "no gnuplot but PNGs written"

# ---- errors ----
run "$report" "$fix/bad-json" --out "$tmp/e1"
expect_rc 1 "malformed line"
has "$err" "bad-json/metrics.jsonl:3: not valid JSON" "malformed line"
[[ ! -e $tmp/e1 ]] || fail "malformed input still created the output folder"

run "$report" "$fix/missing-field" --out "$tmp/e2"
expect_rc 1 "missing field"
has "$err" "missing-field/metrics.jsonl:2: missing field 'ndcg@10'" "missing field"

mkdir "$tmp/empty"
run "$report" "$fix/main" "$tmp/empty" --out "$tmp/e3"
expect_rc 1 "missing metrics.jsonl"
has "$err" "$tmp/empty/metrics.jsonl: cannot read: No such file" "missing metrics.jsonl"

mkdir "$tmp/types"
printf '{"method": "peso", "stage": "2", "split": "test", "hit@5": 0.1, "hit@10": 0.1, "ndcg@5": 0.1, "ndcg@10": 0.1}\n' \
    >"$tmp/types/metrics.jsonl"
run "$report" "$tmp/types" --out "$tmp/e4"
expect_rc 1 "string stage"
has "$err" "types/metrics.jsonl:1: field 'stage' is \"2\", expected a stage number >= 1" "string stage"

printf '[1, 2]\n' >"$tmp/types/metrics.jsonl"
run "$report" "$tmp/types" --out "$tmp/e5"
expect_rc 1 "not an object"
has "$err" "types/metrics.jsonl:1: expected a JSON object" "not an object"

run "$report" "$fix/sweep-a" --split valid --out "$tmp/e6"
expect_rc 1 "no lines of the split"
has "$err" "no valid-split results" "no lines of the split"

run "$report" "$fix/main" --format html --out "$tmp/e7"
expect_rc 2 "bad --format"
has "$err" "--format" "bad --format"

run "$report"
expect_rc 2 "no run dir"
has "$err" "usage:" "no run dir"

# ---- a stage given twice: warned, the later line counts ----
mkdir "$tmp/dup"
for v in 0.1 0.3; do
    printf '{"method": "single", "stage": 2, "split": "test", "hit@5": %s, "hit@10": %s, "ndcg@5": %s, "ndcg@10": %s}\n' \
        "$v" "$v" "$v" "$v"
done >"$tmp/dup/metrics.jsonl"
run "$report" "$tmp/dup" --out "$tmp/dup/r"
expect_rc 0 "duplicate stage"
has "$err" "dup/metrics.jsonl:1 and $tmp/dup/metrics.jsonl:2: both give method 'single'" "duplicate stage"
line "$tmp/dup/r/table.md" "| Single evolving LoRA | **0.3000** | **0.3000** | **0.3000** | **0.3000** |" "duplicate stage"

if ((fails)); then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "all report checks passed"
