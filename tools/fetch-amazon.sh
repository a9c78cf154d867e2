#!/usr/bin/env bash
# Fetches one category of Amazon Reviews 2023 (McAuley lab, UCSD) as
# published: the reviews and the item metadata, both gzipped JSON lines.
# Transfers go to a .part name and resume where they broke off; a file gets
# its real name only after gzip -t has read it whole.
set -euo pipefail

BASE_DEFAULT=https://datarepo.eng.ucsd.edu/mcauley_group/data/amazon_2023
BASE=${PESO_AMAZON_BASE:-$BASE_DEFAULT}

# The categories of the 2023 release, as spelled in its file names.
CATEGORIES=(
    All_Beauty Amazon_Fashion Appliances Arts_Crafts_and_Sewing Automotive
    Baby_Products Beauty_and_Personal_Care Books CDs_and_Vinyl
    Cell_Phones_and_Accessories Clothing_Shoes_and_Jewelry Digital_Music
    Electronics Gift_Cards Grocery_and_Gourmet_Food Handmade_Products
    Health_and_Household Health_and_Personal_Care Home_and_Kitchen
    Industrial_and_Scientific Kindle_Store Magazine_Subscriptions Movies_and_TV
    Musical_Instruments Office_Products Patio_Lawn_and_Garden Pet_Supplies
    Software Sports_and_Outdoors Subscription_Boxes Tools_and_Home_Improvement
    Toys_and_Games Unknown Video_Games
)

prog=$(basename "$0")

usage() {
    cat <<EOF
usage: $prog [--dry-run] CATEGORY DIR

Downloads Amazon Reviews 2023 for CATEGORY into DIR:
  DIR/CATEGORY.jsonl.gz        reviews   ($BASE_DEFAULT/raw/review_categories/)
  DIR/meta_CATEGORY.jsonl.gz   metadata  ($BASE_DEFAULT/raw/meta_categories/)
An interrupted download resumes when run again (it is kept as FILE.part);
each file is checked with gzip -t before it gets its final name. Files
already present are checked and not fetched again.

The paper's settings (conf/instruments.yaml, conf/movies.yaml,
conf/books.yaml) read DIR = data/amazon2023:
  $prog Musical_Instruments data/amazon2023

options:
  --dry-run   print the URLs and destination files, fetch nothing
  -h, --help  this text

environment:
  PESO_AMAZON_BASE   another base URL (a mirror) instead of $BASE_DEFAULT
  PESO_FETCH_TOOL    curl or wget (default: curl if installed, else wget)

categories:
EOF
    printf '  %s\n' "${CATEGORIES[@]}"
}

die() {
    echo "$prog: $*" >&2
    exit 1
}

usage_error() {
    echo "$prog: $*" >&2
    echo "usage: $prog [--dry-run] CATEGORY DIR  (--help lists the categories)" >&2
    exit 2
}

known_category() {
    local c
    for c in "${CATEGORIES[@]}"; do
        [[ $c == "$1" ]] && return 0
    done
    return 1
}

pick_tool() {
    local tool=${PESO_FETCH_TOOL:-}
    if [[ -z $tool ]]; then
        if command -v curl >/dev/null; then
            tool=curl
        elif command -v wget >/dev/null; then
            tool=wget
        else
            die "neither curl nor wget is installed (apt-get install curl)"
        fi
    fi
    case $tool in
    curl | wget) command -v "$tool" >/dev/null || die "PESO_FETCH_TOOL=$tool is not installed" ;;
    *) die "PESO_FETCH_TOOL must be curl or wget, not '$tool'" ;;
    esac
    echo "$tool"
}

# Appends the rest of URL to PART (resuming); the tool's exit status is
# returned, not fatal: a complete .part can make a server refuse the range.
transfer() {
    local tool=$1 url=$2 part=$3
    if [[ $tool == curl ]]; then
        curl --fail --location --retry 5 --retry-delay 10 --continue-at - --output "$part" "$url"
    else
        wget --continue --tries=5 --waitretry=10 --output-document="$part" "$url"
    fi
}

fetch_one() {
    local tool=$1 url=$2 dest=$3 part=$3.part rc=0
    if [[ -e $dest ]]; then
        gzip -t "$dest" 2>/dev/null ||
            die "$dest exists but fails gzip -t (corrupt or truncated): delete it and run again"
        echo "$dest: already present, gzip -t OK"
        return 0
    fi
    if [[ -e $part ]]; then
        echo "$dest: resuming from $(stat -c %s "$part") bytes in $part"
    else
        echo "$dest: fetching $url"
    fi
    transfer "$tool" "$url" "$part" || rc=$?
    if [[ ! -s $part ]]; then
        rm -f "$part"
        die "$url: download failed ($tool exit status $rc): check the category name and the network"
    fi
    if ! gzip -t "$part" 2>/dev/null; then
        if ((rc != 0)); then
            die "$url: transfer broke off ($tool exit status $rc); $part kept: run again to resume"
        fi
        die "$part fails gzip -t although the transfer finished: delete it and run again"
    fi
    mv "$part" "$dest"
    echo "$dest: complete, gzip -t OK ($(stat -c %s "$dest") bytes)"
}

main() {
    local dry=0 args=()
    while (($#)); do
        case $1 in
        -h | --help)
            usage
            exit 0
            ;;
        --dry-run) dry=1 ;;
        --) shift; args+=("$@"); break ;;
        -*) usage_error "unknown option '$1'" ;;
        *) args+=("$1") ;;
        esac
        shift
    done
    ((${#args[@]} == 2)) || usage_error "expected CATEGORY and DIR, got ${#args[@]} argument(s)"
    local cat=${args[0]} dir=${args[1]}
    known_category "$cat" || usage_error "unknown category '$cat' (names are case-sensitive, e.g. Musical_Instruments)"

    local names=("$cat.jsonl.gz" "meta_$cat.jsonl.gz")
    local urls=("$BASE/raw/review_categories/$cat.jsonl.gz" "$BASE/raw/meta_categories/meta_$cat.jsonl.gz")
    if ((dry)); then
        local i
        for i in 0 1; do
            echo "${urls[i]} -> $dir/${names[i]}"
        done
        return 0
    fi
    local tool
    tool=$(pick_tool)
    mkdir -p "$dir" || die "cannot create $dir"
    local i
    for i in 0 1; do
        fetch_one "$tool" "${urls[i]}" "$dir/${names[i]}"
    done
    echo "done: reviews $dir/${names[0]}, metadata $dir/${names[1]}"
}

main "$@"
