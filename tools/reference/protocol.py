#!/usr/bin/env python3
"""Independent plain-Python reference of the PESO data protocol.

Reads a raw review file, applies the protocol of DESIGN.md "Data protocol"
(dedup keeping the earliest, optional year window, stable time sort, blocks at
floor(n * c_k), per-block user filter, leave-one-out, sliding windows,
block-local or `all` history) and prints the statistics in the stats.json
schema of src/data/stats.h. With --pairs-out it writes every pair as a JSON
line: {"block": k, "split": "train", "user": "<id>", "target": "<id>",
"history": ["<id>", ...]}, in the order the C split stores them (blocks in
order; inside a block train, then valid, then test; users in order of first
appearance in the block; a user's train pairs by position).

Written from the protocol text, not from the C code: the only shared parts are
the definitions. Standard library only.
"""

import argparse
import csv
import datetime
import decimal
import gzip
import io
import json
import math
import sys


def open_text(path):
    if path.endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def read_json_lines(path, user_key, item_key, time_key, to_ms):
    out = []
    with open_text(path) as f:
        for line in f:
            if not line.strip():
                continue
            o = json.loads(line)
            out.append((o[user_key], o[item_key], to_ms(o[time_key])))
    return out


def parse_csv_time(text, unit):
    """Milliseconds, rounding half away from zero like the C loader."""
    scale = 1000 if unit == "s" else 1
    v = decimal.Decimal(text) * scale
    return int(v.quantize(decimal.Decimal(1), rounding=decimal.ROUND_HALF_UP))


def read_csv(path, a):
    delim = "\t" if a.csv_delim == "\\t" else a.csv_delim
    out = []
    with open_text(path) as f:
        rows = csv.reader(f, delimiter=delim)
        header = next(rows)
        if header and header[0].startswith("\ufeff"):
            header[0] = header[0][1:]
        cu, ci, ct = (header.index(a.csv_user), header.index(a.csv_item),
                      header.index(a.csv_time))
        for row in rows:
            out.append((row[cu], row[ci], parse_csv_time(row[ct], a.csv_time_unit)))
    return out


def load(a):
    if a.format == "amazon2014":
        return read_json_lines(a.reviews, "reviewerID", "asin", "unixReviewTime",
                               lambda s: int(s) * 1000)
    if a.format == "amazon2023":
        return read_json_lines(a.reviews, "user_id", "parent_asin", "timestamp", int)
    return read_csv(a.reviews, a)


def dedup(rows):
    """Earliest (smallest ts, then first in input) of each (user, item)."""
    best = {}
    for idx, (u, i, ts) in enumerate(rows):
        key = (u, i)
        if key not in best or ts < rows[best[key]][2]:
            best[key] = idx
    return [rows[idx] for idx in sorted(best.values())]


def utc_year(ms):
    epoch = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)
    return (epoch + datetime.timedelta(milliseconds=ms)).year


def bounds(n, fractions):
    b, c = [0], 0.0
    for f in fractions:
        c += f
        b.append(min(n, math.floor(n * c)))
    b[-1] = n
    return b


def windows(full, pos, window):
    return full[max(0, pos - window):pos]


def split(rows, a):
    rows = dedup(rows)
    if a.year_min or a.year_max:
        rows = [r for r in rows
                if (not a.year_min or utc_year(r[2]) >= a.year_min)
                and (not a.year_max or utc_year(r[2]) <= a.year_max)]
    rows.sort(key=lambda r: r[2])  # stable: ties stay in input order
    b = bounds(len(rows), a.fractions)
    kept_before_users, kept_before_items = set(), set()
    all_users, all_items = set(), set()
    earlier = {}  # user -> kept items of earlier blocks, for --history all
    blocks, pairs = [], []
    for k in range(1, len(a.fractions) + 1):
        part = rows[b[k - 1]:b[k]]
        seqs = {}  # insertion order = first appearance in the block
        for u, i, _ in part:
            seqs.setdefault(u, []).append(i)
        seqs = {u: s for u, s in seqs.items() if len(s) >= a.min_user}
        if not seqs:
            sys.exit("block %d is empty after the per-block user filter" % k)
        items = {i for s in seqs.values() for i in s}
        n_inter = sum(len(s) for s in seqs.values())
        train = valid = test = 0
        for u, s in seqs.items():
            prev = earlier.get(u, []) if a.history == "all" else []
            full = prev + s
            p = len(prev)
            for pos in range(1, len(s) - 2):
                pairs.append((k, "train", u, full[p + pos], windows(full, p + pos, a.window)))
                train += 1
        for u, s in seqs.items():
            prev = earlier.get(u, []) if a.history == "all" else []
            full = prev + s
            pairs.append((k, "valid", u, full[-2], windows(full, len(full) - 2, a.window)))
            valid += 1
        for u, s in seqs.items():
            prev = earlier.get(u, []) if a.history == "all" else []
            full = prev + s
            pairs.append((k, "test", u, full[-1], windows(full, len(full) - 1, a.window)))
            test += 1
        for u, s in seqs.items():
            earlier[u] = earlier.get(u, []) + s
        users = set(seqs)
        blocks.append({
            "block": k,
            "users": len(users),
            "new_users": len(users - kept_before_users),
            "items": len(items),
            "new_items": len(items - kept_before_items),
            "interactions": n_inter,
            "avg_seq_len": n_inter / len(users),
            "sparsity": 1 - n_inter / (len(users) * len(items)),
            "train_pairs": train,
            "valid_pairs": valid,
            "test_pairs": test,
        })
        kept_before_users |= users
        kept_before_items |= items
        all_users |= users
        all_items |= items
    stats = {"blocks": blocks,
             "total": {"users": len(all_users), "items": len(all_items),
                       "interactions": sum(x["interactions"] for x in blocks)}}
    return stats, pairs


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--format", required=True, choices=["amazon2014", "amazon2023", "csv"])
    p.add_argument("--reviews", required=True)
    p.add_argument("--fractions", default="0.6,0.1,0.1,0.1,0.1",
                   help="comma-separated block fractions")
    p.add_argument("--min-user", dest="min_user", type=int, default=5)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--history", choices=["block", "all"], default="block")
    p.add_argument("--year-min", dest="year_min", type=int, default=0)
    p.add_argument("--year-max", dest="year_max", type=int, default=0)
    p.add_argument("--csv-user", dest="csv_user", default="user_id")
    p.add_argument("--csv-item", dest="csv_item", default="item_id")
    p.add_argument("--csv-time", dest="csv_time", default="timestamp")
    p.add_argument("--csv-delim", dest="csv_delim", default=",")
    p.add_argument("--csv-time-unit", dest="csv_time_unit", choices=["s", "ms"], default="s")
    p.add_argument("--stats-out", dest="stats_out", help="write stats.json here (default stdout)")
    p.add_argument("--pairs-out", dest="pairs_out", help="write every pair as JSON lines here")
    a = p.parse_args()
    a.fractions = [float(x) for x in a.fractions.split(",")]

    stats, pairs = split(load(a), a)
    text = json.dumps(stats, indent=2) + "\n"
    if a.stats_out:
        with open(a.stats_out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    if a.pairs_out:
        with open(a.pairs_out, "w") as f:
            for k, name, u, t, h in pairs:
                f.write(json.dumps({"block": k, "split": name, "user": u, "target": t,
                                    "history": h}) + "\n")


if __name__ == "__main__":
    main()
