/* Raw interaction loaders (src/data/raw.c, load_*.c) on small hand-written
 * fixtures (tests/fixtures/loaders), plain and gzip, with every expected id,
 * millisecond timestamp and item text worked out by hand from the fixture
 * text; plus the real files in ../shared/data when present. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "data/raw.h"
#include "skip.h"

#define FIX(name) PESO_FIXTURES "/loaders/" name

typedef struct expect {
    const char *user, *item;
    int64_t ts;
} expect;

static peso_conf conf_for(const char *format, const char *reviews, const char *meta)
{
    peso_conf c;
    peso_conf_defaults(&c);
    snprintf(c.data.format, sizeof c.data.format, "%s", format);
    snprintf(c.data.reviews, sizeof c.data.reviews, "%s", reviews);
    snprintf(c.data.meta, sizeof c.data.meta, "%s", meta);
    return c;
}

/* Loads through the public dispatch; returns its status, message in err. */
static int load(peso_raw *r, const peso_conf *c, peso_err *err)
{
    peso_raw_init(r);
    err->msg[0] = '\0';
    return peso_raw_load(r, c, err);
}

static void assert_inters(const peso_raw *r, const expect *e, size_t n)
{
    cr_assert_eq(r->n, n, "interactions: got %zu, expected %zu", r->n, n);
    for (size_t k = 0; k < n; k++) {
        cr_assert_str_eq(peso_strtab_str(r->users, r->v[k].user), e[k].user, "interaction %zu user", k);
        cr_assert_str_eq(peso_strtab_str(r->items, r->v[k].item), e[k].item, "interaction %zu item", k);
        cr_assert_eq(r->v[k].ts, e[k].ts, "interaction %zu ts: got %lld, expected %lld", k,
                     (long long)r->v[k].ts, (long long)e[k].ts);
    }
}

static const char *text_of(const peso_raw *r, const char *item)
{
    int32_t i = peso_strtab_find(r->items, item, strlen(item));
    cr_assert_geq(i, 0, "item %s not loaded", item);
    cr_assert_lt((size_t)i, r->text_cap, "item_text has no entry for item %s", item);
    return r->item_text[i];
}

static void assert_bad(const peso_raw *r, size_t k, const char *path, const char *rest)
{
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want, "%s%s", path, rest);
    cr_assert_lt(k, r->n_bad, "bad line %zu not recorded (%zu recorded)", k, r->n_bad);
    cr_assert_str_eq(r->bad_lines[k], want);
}

/* ---- peso_raw itself ---- */

Test(raw, add_interns_in_first_seen_order)
{
    peso_raw r;
    peso_raw_init(&r);
    peso_raw_add(&r, "bob", 3, "x", 1, 30);
    peso_raw_add(&r, "al", 2, "y", 1, 10);
    peso_raw_add(&r, "bob", 3, "y", 1, 20);
    cr_assert_eq(r.n, 3);
    cr_assert_eq(r.v[0].user, 0);
    cr_assert_eq(r.v[1].user, 1);
    cr_assert_eq(r.v[2].user, 0);
    cr_assert_eq(r.v[0].item, 0);
    cr_assert_eq(r.v[1].item, 1);
    cr_assert_eq(r.v[2].item, 1);
    cr_assert_eq(r.v[2].ts, 20);
    cr_assert_eq(peso_strtab_count(r.users), 2);
    cr_assert_eq(r.has_time, 1);
    peso_raw_free(&r);
}

Test(raw, add_text_joins_caps_and_keeps_utf8_whole)
{
    peso_raw r;
    peso_raw_init(&r);
    peso_raw_add_text(&r, 2, "ab", 2, 6);
    peso_raw_add_text(&r, 2, "", 0, 6);     /* no separator for nothing */
    peso_raw_add_text(&r, 2, "cdef", 4, 6); /* "ab" + " " + "cde" = 6 bytes */
    peso_raw_add_text(&r, 2, "zz", 2, 6);   /* full: ignored */
    cr_assert_geq(r.text_cap, 3);
    cr_assert_null(r.item_text[0]);
    cr_assert_null(r.item_text[1]);
    cr_assert_str_eq(r.item_text[2], "ab cde");
    cr_assert_eq(r.item_text_len[2], 6);
    /* "h\xc3\xa9llo" = "héllo": a cap of 2 bytes would split the é */
    peso_raw_add_text(&r, 0, "h\xc3\xa9llo", 6, 2);
    cr_assert_str_eq(r.item_text[0], "h");
    peso_raw_add_text(&r, 1, "h\xc3\xa9llo", 6, 3);
    cr_assert_str_eq(r.item_text[1], "h\xc3\xa9");
    cr_assert_eq(r.item_text_len[1], 3);
    peso_raw_free(&r);
}

Test(raw, bad_line_fails_past_the_limit)
{
    peso_raw r;
    peso_raw_init(&r);
    peso_err err;
    cr_assert_eq(peso_raw_bad_line(&r, 2, &err, "f:%d: one", 1), 0);
    cr_assert_eq(peso_raw_bad_line(&r, 2, &err, "f:%d: two", 2), 0);
    cr_assert_eq(peso_raw_bad_line(&r, 2, &err, "f:%d: three", 3), -1);
    cr_assert_str_eq(err.msg, "f:3: three (3 bad lines, more than data.skip_bad_lines = 2)");
    cr_assert_eq(r.n_bad, 3);
    cr_assert_str_eq(r.bad_lines[0], "f:1: one");
    cr_assert_str_eq(r.bad_lines[2], "f:3: three");
    peso_raw_free(&r);
    peso_raw_init(&r);
    cr_assert_eq(peso_raw_bad_line(&r, 0, &err, "g:7: bad"), -1);
    cr_assert_str_eq(err.msg, "g:7: bad (1 bad line, more than data.skip_bad_lines = 0)");
    peso_raw_free(&r);
}

Test(raw, unknown_format_names_the_key_and_the_choices)
{
    peso_conf c = conf_for("parquet", FIX("inter.csv"), "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert_str_eq(err.msg, "data.format: unknown value \"parquet\" (expected amazon2023, amazon2014, "
                              "csv, letter or synthetic)");
    peso_raw_free(&r);
}

Test(raw, missing_reviews_path_is_an_error)
{
    peso_conf c = conf_for("amazon2014", "", "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert_str_eq(err.msg, "data.reviews: not set (the amazon2014 format reads its interactions from it)");
    peso_raw_free(&r);
}

/* ---- amazon2023 ---- */

static const expect a23[] = {
    {"U1", "P1", 1588687728923},
    {"U2", "P2", 1588687730000},
    {"U2", "P1", 1600000000001},
    {"U1", "P3", 1500000000000},
};

static void check_a23(const char *reviews, const char *meta)
{
    peso_conf c = conf_for("amazon2023", reviews, meta);
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    assert_inters(&r, a23, 4);
    cr_assert_eq(peso_strtab_count(r.users), 2);
    cr_assert_eq(peso_strtab_count(r.items), 3, "meta for an unreviewed item must not add it");
    cr_assert_eq(peso_strtab_find(r.items, "P9", 2), -1);
    cr_assert_str_eq(text_of(&r, "P1"), "Pop filter Blocks plosives. Gooseneck. Instruments Microphones");
    cr_assert_null(text_of(&r, "P2"));
    cr_assert_str_eq(text_of(&r, "P3"), "Guitar strings Strings");
    cr_assert_eq(r.lines_read, 7); /* 4 reviews + 3 meta lines */
    cr_assert_eq(r.n_bad, 0);
    cr_assert_eq(r.has_time, 1);
    peso_raw_free(&r);
}

Test(amazon2023, plain)
{
    check_a23(FIX("a23_reviews.jsonl"), FIX("a23_meta.jsonl"));
}
Test(amazon2023, gzip)
{
    check_a23(FIX("a23_reviews.jsonl.gz"), FIX("a23_meta.jsonl.gz"));
}

Test(amazon2023, no_meta_means_no_text)
{
    peso_conf c = conf_for("amazon2023", FIX("a23_reviews.jsonl"), "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    assert_inters(&r, a23, 4);
    cr_assert_null(text_of(&r, "P1"));
    cr_assert_null(text_of(&r, "P3"));
    peso_raw_free(&r);
}

Test(amazon2023, text_is_capped_at_max_text)
{
    peso_conf c = conf_for("amazon2023", FIX("a23_reviews.jsonl"), FIX("a23_meta.jsonl"));
    c.data.max_text = 20;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    /* "Pop filter" (10) + " " + 9 bytes of "Blocks plosives." = 20 */
    cr_assert_str_eq(text_of(&r, "P1"), "Pop filter Blocks pl");
    cr_assert_str_eq(text_of(&r, "P3"), "Guitar strings Strin");
    peso_raw_free(&r);
}

Test(amazon2023, first_bad_line_fails_by_default)
{
    peso_conf c = conf_for("amazon2023", FIX("a23_bad.jsonl"), "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert_str_eq(err.msg,
                     FIX("a23_bad.jsonl") ":2: malformed JSON at column 61 (expected one JSON "
                                          "object per line) (1 bad line, more than data.skip_bad_lines = 0)");
    peso_raw_free(&r);
}

/* a23_bad.jsonl has 7 bad lines (2..8) between two good ones. */
Test(amazon2023, skip_bad_lines_tolerates_and_lists_them)
{
    const char *p = FIX("a23_bad.jsonl");
    peso_conf c = conf_for("amazon2023", p, "");
    c.data.skip_bad_lines = 7;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect good[] = {{"U1", "P1", 1588687728923}, {"U6", "P1", 1588687731000}};
    assert_inters(&r, good, 2);
    cr_assert_eq(r.lines_read, 9);
    cr_assert_eq(r.n_bad, 7);
    /* line 2 is 60 characters, cut inside a number: column 61 is its end */
    assert_bad(&r, 0, p, ":2: malformed JSON at column 61 (expected one JSON object per line)");
    assert_bad(&r, 1, p, ":3: missing field \"user_id\" (expected a non-empty string)");
    assert_bad(&r, 2, p,
               ":4: field \"timestamp\": expected an integer (milliseconds since the epoch), "
               "got a string");
    assert_bad(&r, 3, p, ":5: empty line (expected one JSON object per line)");
    assert_bad(&r, 4, p, ":6: field \"rating\": expected a number, got a string");
    assert_bad(&r, 5, p, ":7: expected a JSON object, got an array");
    assert_bad(&r, 6, p,
               ":8: field \"timestamp\": expected an integer (milliseconds since the epoch), "
               "got 1588687730000.5");
    peso_raw_free(&r);
}

Test(amazon2023, one_bad_line_more_than_allowed_fails)
{
    const char *p = FIX("a23_bad.jsonl");
    peso_conf c = conf_for("amazon2023", p, "");
    c.data.skip_bad_lines = 6;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want,
             "%s:8: field \"timestamp\": expected an integer (milliseconds since the "
             "epoch), got 1588687730000.5 (7 bad lines, more than data.skip_bad_lines = 6)",
             p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);
}

Test(amazon2023, mistyped_meta_fields_are_bad_lines)
{
    const char *m = FIX("a23_meta_bad.jsonl");
    peso_conf c = conf_for("amazon2023", FIX("a23_reviews.jsonl"), m);
    c.data.skip_bad_lines = 3;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(r.n_bad, 3);
    assert_bad(&r, 0, m, ":1: field \"description\": expected a list of strings, got a string");
    assert_bad(&r, 1, m, ":2: field \"categories\": element 1: expected a string, got a number");
    assert_bad(&r, 2, m, ":3: field \"title\": expected a string, got a number");
    /* a rejected line adds no text at all */
    cr_assert_null(text_of(&r, "P1"));
    cr_assert_null(text_of(&r, "P3"));
    peso_raw_free(&r);
}

Test(amazon2023, empty_id_fraction_range_and_null)
{
    const char *p = FIX("a23_edge.jsonl");
    peso_conf c = conf_for("amazon2023", p, "");
    c.data.skip_bad_lines = 3;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    /* a negative time is an integer like any other (before 1970) */
    const expect e[] = {{"U1", "P1", -5}};
    assert_inters(&r, e, 1);
    cr_assert_eq(r.n_bad, 3);
    assert_bad(&r, 0, p, ":1: field \"user_id\": expected a non-empty string, got an empty string");
    assert_bad(&r, 1, p,
               ":2: field \"timestamp\": expected an integer (milliseconds since the epoch), got "
               "1.0000000000000001e+300");
    assert_bad(&r, 2, p, ":4: field \"rating\": expected a number, got null");
    peso_raw_free(&r);
}

/* ---- amazon2014 ---- */

static void check_a14(const char *reviews)
{
    peso_conf c = conf_for("amazon2014", reviews, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect e[] = {
        {"A2IBPI20UZIR0U", "1384719342", 1393545600000},
        {"A14VAT5EAX3D9S", "1384719342", 1363392000000},
        {"A2IBPI20UZIR0U", "B00004Y2UT", 1356048000000},
        {"A195EZSQDW3E21", "B00004Y2UT", 1104537600000},
    };
    assert_inters(&r, e, 4);
    cr_assert_eq(peso_strtab_count(r.users), 3);
    cr_assert_eq(peso_strtab_count(r.items), 2);
    cr_assert_str_eq(text_of(&r, "1384719342"), "good Jake");
    cr_assert_str_eq(text_of(&r, "B00004Y2UT"), "Cable \"works\" caf\xc3\xa9");
    cr_assert_eq(r.lines_read, 4);
    peso_raw_free(&r);
}

Test(amazon2014, plain)
{
    check_a14(FIX("a14_reviews.json"));
}
Test(amazon2014, gzip)
{
    check_a14(FIX("a14_reviews.json.gz"));
}

Test(amazon2014, bad_lines_name_file_line_and_field)
{
    const char *p = FIX("a14_bad.json");
    peso_conf c = conf_for("amazon2014", p, "");
    c.data.skip_bad_lines = 4;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect e[] = {{"A2IBPI20UZIR0U", "1384719342", 1393545600000}};
    assert_inters(&r, e, 1);
    cr_assert_eq(r.n_bad, 4);
    assert_bad(&r, 0, p, ":2: missing field \"asin\" (expected a non-empty string)");
    assert_bad(&r, 1, p, ":3: field \"summary\": expected a string, got a number");
    assert_bad(&r, 2, p, ":4: field \"reviewerID\": expected a non-empty string, got a number");
    /* "trailing" after the object starts at column 86 of line 5 */
    assert_bad(&r, 3, p, ":5: malformed JSON at column 86 (expected one JSON object per line)");
    peso_raw_free(&r);
}

Test(amazon2014, truncated_gzip_is_an_error_with_file_and_line)
{
    /* a14_truncated.json.gz is the first 300 bytes of a14_reviews.json.gz:
     * they inflate to line 1 and part of line 2 (checked with Python's zlib). */
    const char *p = FIX("a14_truncated.json.gz");
    peso_conf c = conf_for("amazon2014", p, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want, "%s:2: truncated gzip stream (unexpected end of file)", p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);
}

Test(amazon2014, unreadable_path_is_an_error)
{
    const char *p = FIX("no_such_file.json.gz");
    peso_conf c = conf_for("amazon2014", p, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want, "%s: cannot open for reading: No such file or directory", p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);

    /* a directory opens but cannot be read */
    c = conf_for("amazon2014", PESO_FIXTURES "/loaders", "");
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert_str_eq(err.msg, PESO_FIXTURES "/loaders:1: read error: Is a directory");
    peso_raw_free(&r);
}

Test(amazon2014, meta_is_refused)
{
    peso_conf c = conf_for("amazon2014", FIX("a14_reviews.json"), FIX("a23_meta.jsonl"));
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert(strstr(err.msg, "data.meta: set to \""), "%s", err.msg);
    peso_raw_free(&r);
}

/* ---- csv ---- */

static void check_csv(const char *path)
{
    peso_conf c = conf_for("csv", path, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    /* seconds to ms, exactly: .5 -> 500; .0004 rounds down; .9995 rounds up */
    const expect e[] = {
        {"u1", "i1", 1393545600000},
        {"u,2", "i \"quoted\"", 1393545600500},
        {"u1", "i2", 1393545601000},
        {"u3", "i1", 1393545603000},
    };
    assert_inters(&r, e, 4);
    cr_assert_eq(peso_strtab_count(r.users), 3);
    cr_assert_eq(peso_strtab_count(r.items), 3);
    cr_assert_eq(r.lines_read, 4);
    cr_assert_null(text_of(&r, "i1"));
    peso_raw_free(&r);
}

Test(csv, quoted_fields_plain)
{
    check_csv(FIX("inter.csv"));
}
Test(csv, quoted_fields_gzip)
{
    check_csv(FIX("inter.csv.gz"));
}

static void check_tsv(const char *delim)
{
    peso_conf c = conf_for("csv", FIX("inter.tsv"), "");
    strcpy(c.data.csv_delim, delim);
    strcpy(c.data.csv_user, "user");
    strcpy(c.data.csv_item, "item");
    strcpy(c.data.csv_time, "time");
    strcpy(c.data.csv_time_unit, "ms");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    /* ms: .5 rounds half away from zero, both signs */
    const expect e[] = {
        {"alice", "x", 1600000000123},
        {"bob", "y\tz", 1600000000125},
        {"alice", "y", -13},
    };
    assert_inters(&r, e, 3);
    peso_raw_free(&r);
}

Test(csv, tab_written_as_backslash_t)
{
    check_tsv("\\t");
}
Test(csv, tab_as_the_character)
{
    check_tsv("\t");
}

Test(csv, missing_column_names_file_and_column)
{
    const char *p = FIX("inter.csv");
    peso_conf c = conf_for("csv", p, "");
    strcpy(c.data.csv_time, "ts");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want,
             "%s:1: no column \"ts\" (data.csv_time) in the header; its columns are: "
             "\"user_id\", \"item_id\", \"rating\", \"timestamp\"",
             p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);
}

Test(csv, bad_records_are_listed)
{
    const char *p = FIX("csv_bad.csv");
    peso_conf c = conf_for("csv", p, "");
    c.data.skip_bad_lines = 7;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect e[] = {{"u1", "i1", 100000}, {"u9", "i9", 109000}};
    assert_inters(&r, e, 2);
    cr_assert_eq(r.lines_read, 9);
    cr_assert_eq(r.n_bad, 7);
    assert_bad(&r, 0, p, ":3: field 1: quoted field not closed (a field cannot span lines)");
    assert_bad(&r, 1, p,
               ":4: field 2: quote inside an unquoted field (quote the whole field and double "
               "the quote)");
    assert_bad(&r, 2, p, ":5: 2 fields, expected 3 or more (column \"timestamp\" is field 3)");
    assert_bad(&r, 3, p,
               ":6: column \"timestamp\": expected an integer or decimal number of seconds, "
               "got \"1e9\"");
    assert_bad(&r, 4, p, ":7: empty line (expected a record with 3 or more fields)");
    assert_bad(&r, 5, p, ":8: column \"user_id\": empty (expected an id)");
    assert_bad(&r, 6, p, ":9: field 1: 'x' after the closing quote (expected the delimiter)");
    peso_raw_free(&r);

    c.data.skip_bad_lines = 6;
    cr_assert_eq(load(&r, &c, &err), -1);
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want,
             "%s:9: field 1: 'x' after the closing quote (expected the delimiter) "
             "(7 bad lines, more than data.skip_bad_lines = 6)",
             p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);
}

Test(csv, bad_options_are_refused)
{
    peso_conf c = conf_for("csv", FIX("inter.csv"), "");
    strcpy(c.data.csv_delim, ";;");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert_str_eq(err.msg, "data.csv_delim: \";;\" is not a delimiter (expected one character other than "
                              "a quote, or \"\\t\" for tab)");
    peso_raw_free(&r);
    c = conf_for("csv", FIX("inter.csv"), "");
    strcpy(c.data.csv_time_unit, "us");
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert_str_eq(err.msg, "data.csv_time_unit: unknown value \"us\" (expected s or ms)");
    peso_raw_free(&r);
}

Test(csv, byte_order_mark_before_the_header_is_skipped)
{
    peso_conf c = conf_for("csv", FIX("bom.csv"), "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect e[] = {{"u1", "i1", 5000}};
    assert_inters(&r, e, 1);
    peso_raw_free(&r);
}

Test(csv, empty_file_has_no_header)
{
    const char *p = FIX("empty.csv");
    peso_conf c = conf_for("csv", p, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want, "%s:1: empty file (expected a header line naming the columns)", p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);
}

/* ---- letter ---- */

static void check_letter(const char *path)
{
    peso_conf c = conf_for("letter", path, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    /* "0": [5, 1], "1": [1, 7, 0], "2": [], "3": [2]; ts = list position */
    const expect e[] = {
        {"0", "5", 0}, {"0", "1", 1}, {"1", "1", 0}, {"1", "7", 1}, {"1", "0", 2}, {"3", "2", 0},
    };
    assert_inters(&r, e, 6);
    cr_assert_eq(r.has_time, 0);
    cr_assert_eq(r.lines_read, 4);
    cr_assert_eq(peso_strtab_count(r.users), 3, "a user with an empty list has no interactions");
    cr_assert_eq(peso_strtab_count(r.items), 5);
    cr_assert_eq(r.v[4].item, 3, "items are interned in first-seen order, not by their index");
    peso_raw_free(&r);
}

Test(letter, plain)
{
    check_letter(FIX("letter.inter.json"));
}
Test(letter, gzip)
{
    check_letter(FIX("letter.inter.json.gz"));
}

Test(letter, bad_entries)
{
    const char *p = FIX("letter_bad.inter.json");
    peso_conf c = conf_for("letter", p, "");
    c.data.skip_bad_lines = 3;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect e[] = {{"0", "1", 0}, {"0", "2", 1}, {"4", "5", 0}};
    assert_inters(&r, e, 3);
    cr_assert_eq(r.n_bad, 3);
    assert_bad(&r, 0, p, ": entry 2: user \"1\": element 1: expected a non-negative integer item index");
    assert_bad(&r, 1, p, ": entry 3: user \"2\": expected a list of item indices");
    assert_bad(&r, 2, p, ": entry 4: user \"3\": element 0: expected a non-negative integer item index");
    peso_raw_free(&r);

    c.data.skip_bad_lines = 2;
    cr_assert_eq(load(&r, &c, &err), -1);
    cr_assert(strstr(err.msg, ": entry 4: user \"3\"") && strstr(err.msg, "(3 bad lines, more than "
                                                                          "data.skip_bad_lines = 2)"),
              "%s", err.msg);
    peso_raw_free(&r);
}

Test(letter, malformed_json_names_line_and_column)
{
    const char *p = FIX("letter_malformed.inter.json");
    peso_conf c = conf_for("letter", p, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), -1);
    /* line 3 is `    "1": [3 4]`: the 4 at column 13 is where a ',' or ']' belongs */
    char want[PESO_ERR_MSG];
    snprintf(want, sizeof want,
             "%s:3: malformed JSON at column 13 (expected one object {\"<user>\": "
             "[item index, ...], ...})",
             p);
    cr_assert_str_eq(err.msg, want);
    peso_raw_free(&r);
}

Test(letter, empty_and_repeated_user_keys)
{
    const char *p = FIX("letter_dup.inter.json");
    peso_conf c = conf_for("letter", p, "");
    c.data.skip_bad_lines = 2;
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    const expect e[] = {{"0", "1", 0}};
    assert_inters(&r, e, 1);
    cr_assert_eq(r.n_bad, 2);
    assert_bad(&r, 0, p, ": entry 2: empty user key (expected the user index)");
    assert_bad(&r, 1, p, ": entry 3: user \"0\" appears twice (expected each user once)");
    peso_raw_free(&r);
}

/* ---- real data in ../shared/data (skipped when absent, tests/skip.h) ---- */

static int have(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

#define A14_REAL PESO_SHARED_DATA "/amazon-instruments-2014/reviews_Musical_Instruments_5.json.gz"
#define LETTER_REAL PESO_SHARED_DATA "/letter-instruments-2018/Instruments.inter.json"

Test(real, amazon2014_musical_instruments)
{
    if (!have(A14_REAL))
        peso_test_missing("%s absent (shared data not available here)", A14_REAL);
    peso_conf c = conf_for("amazon2014", A14_REAL, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(r.n, 10261);
    cr_assert_eq(peso_strtab_count(r.users), 1429);
    cr_assert_eq(peso_strtab_count(r.items), 900);
    cr_assert_eq(r.n_bad, 0);
    /* Reference values from Python's gzip + json over the same file. */
    int64_t lo = INT64_MAX, hi = INT64_MIN, sum = 0;
    for (size_t k = 0; k < r.n; k++) {
        lo = r.v[k].ts < lo ? r.v[k].ts : lo;
        hi = r.v[k].ts > hi ? r.v[k].ts : hi;
        sum += r.v[k].ts;
    }
    cr_assert_eq(lo, 1095465600000);
    cr_assert_eq(hi, 1405987200000);
    cr_assert_eq(sum, 13961177712000 * 1000);
    const expect last = {"A2WA8TDCTGUADI", "B00JBIVXGC", 1405468800000};
    cr_assert_str_eq(peso_strtab_str(r.users, r.v[r.n - 1].user), last.user);
    cr_assert_str_eq(peso_strtab_str(r.items, r.v[r.n - 1].item), last.item);
    cr_assert_eq(r.v[r.n - 1].ts, last.ts);
    const char *t = text_of(&r, "1384719342");
    const char *head = "good Jake It Does The Job Well GOOD WINDSCREEN FOR THE MONEY";
    cr_assert(strncmp(t, head, strlen(head)) == 0, "%s", t);
    peso_raw_free(&r);
}

Test(real, letter_instruments)
{
    if (!have(LETTER_REAL))
        peso_test_missing("%s absent (shared data not available here)", LETTER_REAL);
    peso_conf c = conf_for("letter", LETTER_REAL, "");
    peso_raw r;
    peso_err err;
    cr_assert_eq(load(&r, &c, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_strtab_count(r.users), 24772);
    cr_assert_eq(r.n, 206153);
    cr_assert_eq(peso_strtab_count(r.items), 9922);
    cr_assert_eq(r.has_time, 0);
    /* Python: the sum of all item indices, and the last user's list. */
    int64_t sum = 0;
    for (size_t k = 0; k < r.n; k++)
        sum += strtoll(peso_strtab_str(r.items, r.v[k].item), NULL, 10);
    cr_assert_eq(sum, 600293029);
    const char *tail[] = {"116", "4262", "1326", "3622", "2865"};
    for (int k = 0; k < 5; k++) {
        const peso_inter *v = &r.v[r.n - 5 + k];
        cr_assert_str_eq(peso_strtab_str(r.users, v->user), "24771");
        cr_assert_str_eq(peso_strtab_str(r.items, v->item), tail[k]);
        cr_assert_eq(v->ts, k);
    }
    peso_raw_free(&r);
}
