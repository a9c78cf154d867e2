#!/usr/bin/env bash
# Offline checks of tools/fetch-amazon.sh: usage errors, the URLs it builds,
# and the whole fetch path (.part, resume, gzip -t, rename) against a local
# file:// mirror laid out like the real server.
set -euo pipefail

src=${PESO_SOURCE_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
fetch=$src/tools/fetch-amazon.sh
# shellcheck source=../skip.sh source-path=SCRIPTDIR
. "$src/tests/skip.sh"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0

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

# ---- usage ----
run bash "$fetch"
expect_rc 2 "no arguments"
has "$err" "usage:" "no arguments"

run bash "$fetch" Books
expect_rc 2 "one argument"

run bash "$fetch" --frobnicate Books d
expect_rc 2 "unknown option"
has "$err" "unknown option '--frobnicate'" "unknown option"

run bash "$fetch" musical_instruments d
expect_rc 2 "lower-case category"
has "$err" "unknown category 'musical_instruments'" "lower-case category"

run bash "$fetch" --help
expect_rc 0 "--help"
for c in Musical_Instruments Movies_and_TV Books All_Beauty Video_Games Unknown; do
    has "$out" "  $c" "--help lists $c"
done
n=$(sed -n '/^categories:/,$p' "$tmp/out" | grep -c '^  [A-Z]')
[[ $n == 34 ]] || fail "--help lists $n categories, the 2023 release has 34"

# ---- URLs ----
# shellcheck disable=SC2016 # $1 and $2 belong to the inner shell
run env -u PESO_AMAZON_BASE bash -c 'cd "$1" && bash "$2" --dry-run Musical_Instruments data/amazon2023' _ "$tmp" "$fetch"
expect_rc 0 "--dry-run"
base=https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023/raw
want="$base/review_categories/Musical_Instruments.jsonl.gz -> data/amazon2023/Musical_Instruments.jsonl.gz
$base/meta_categories/meta_Musical_Instruments.jsonl.gz -> data/amazon2023/meta_Musical_Instruments.jsonl.gz"
[[ $out == "$want" ]] || fail "--dry-run printed: $out"
[[ ! -e $tmp/data ]] || fail "--dry-run created a directory"

# ---- fetch from a file:// mirror ----
if ! command -v curl >/dev/null; then
    skip_missing_part "curl is not installed: the fetch checks (file:// URLs) did not run"
else
    mirror=$tmp/mirror
    mkdir -p "$mirror/raw/review_categories" "$mirror/raw/meta_categories"
    seq 1 200000 | sed 's/.*/{"user_id": "U&", "parent_asin": "B&", "timestamp": &000}/' |
        gzip -c >"$mirror/raw/review_categories/Books.jsonl.gz"
    seq 1 5000 | sed 's/.*/{"parent_asin": "B&", "title": "book &"}/' |
        gzip -c >"$mirror/raw/meta_categories/meta_Books.jsonl.gz"
    rev=$mirror/raw/review_categories/Books.jsonl.gz
    meta=$mirror/raw/meta_categories/meta_Books.jsonl.gz
    export PESO_AMAZON_BASE=file://$mirror PESO_FETCH_TOOL=curl

    # a fresh fetch
    run bash "$fetch" Books "$tmp/d1"
    expect_rc 0 "fetch"
    cmp -s "$rev" "$tmp/d1/Books.jsonl.gz" || fail "reviews differ from the mirror"
    cmp -s "$meta" "$tmp/d1/meta_Books.jsonl.gz" || fail "metadata differ from the mirror"
    has "$out" "complete, gzip -t OK" "fetch reports the check"
    [[ -z $(ls "$tmp/d1"/*.part 2>/dev/null) ]] || fail ".part left behind"

    # again: nothing fetched, both files checked
    run bash "$fetch" Books "$tmp/d1"
    expect_rc 0 "second run"
    [[ $(grep -c "already present, gzip -t OK" <<<"$out") == 2 ]] || fail "second run: $out"

    # resume: a broken transfer left the first 100000 bytes
    mkdir -p "$tmp/d2"
    head -c 100000 "$rev" >"$tmp/d2/Books.jsonl.gz.part"
    run bash "$fetch" Books "$tmp/d2"
    expect_rc 0 "resume"
    has "$out" "resuming from 100000 bytes" "resume"
    cmp -s "$rev" "$tmp/d2/Books.jsonl.gz" || fail "resumed file differs from the mirror"

    # a truncated file on the server: refused, kept as .part, no final name
    head -c 50000 "$rev" >"$tmp/trunc.gz"
    cp "$tmp/trunc.gz" "$rev"
    run bash "$fetch" Books "$tmp/d3"
    expect_rc 1 "truncated source"
    has "$err" "fails gzip -t" "truncated source"
    [[ ! -e $tmp/d3/Books.jsonl.gz ]] || fail "truncated file got its final name"

    # a corrupt file already under the final name is reported, not trusted
    cp "$tmp/trunc.gz" "$tmp/d1/meta_Books.jsonl.gz"
    run bash "$fetch" Books "$tmp/d1"
    expect_rc 1 "corrupt final file"
    has "$err" "exists but fails gzip -t" "corrupt final file"

    # a category missing on the server
    run bash "$fetch" Software "$tmp/d4"
    expect_rc 1 "missing file"
    has "$err" "download failed" "missing file"
fi

if ((fails)); then
    echo "$fails check(s) failed" >&2
    exit 1
fi
echo "all fetch-amazon checks passed"
