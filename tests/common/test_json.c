/* JSON on cJSON: the writer's exact layout, numbers kept as written,
 * duplicate keys, messages with line and column, Python's float spelling.
 * Expected texts are written out by hand; the float spellings are what
 * Python's repr() gives for the same doubles. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/json.h"

static cJSON *parse_ok(const char *text)
{
    peso_err err;
    cJSON *v = peso_json_parse(text, strlen(text), NULL, &err);
    cr_assert_not_null(v, "%s: %s", text, err.msg);
    return v;
}

static void expect_print(const char *in, const char *want)
{
    cJSON *v = parse_ok(in);
    char *got = peso_json_print(v);
    cr_expect_str_eq(got, want, "printing %s", in);
    free(got);
    cJSON_Delete(v);
}

static void expect_parse_error(const char *text, size_t len, const char *want)
{
    peso_err err;
    cJSON *v = peso_json_parse(text, len, NULL, &err);
    cr_assert_null(v, "accepted: %s", text);
    cr_expect_str_eq(err.msg, want, "for %s", text);
}

Test(json, writer_layout)
{
    expect_print("{\"a\":[1,{}],\"b\":{},\"c\":[],\"d\":{\"e\":[[]]},\"f\":null,\"g\":true,\"h\":false}",
                 "{\n"
                 "  \"a\": [\n"
                 "    1,\n"
                 "    {\n"
                 "    }\n"
                 "  ],\n"
                 "  \"b\": {\n"
                 "  },\n"
                 "  \"c\": [\n"
                 "  ],\n"
                 "  \"d\": {\n"
                 "    \"e\": [\n"
                 "      [\n"
                 "      ]\n"
                 "    ]\n"
                 "  },\n"
                 "  \"f\": null,\n"
                 "  \"g\": true,\n"
                 "  \"h\": false\n"
                 "}");
    expect_print("{}", "{\n}");
    expect_print("[]", "[\n]");
    expect_print("\"x\"", "\"x\"");
}

Test(json, strings_escape_quotes_backslashes_and_control_characters_only)
{
    /* '/' and non-ASCII (é, U+2028) verbatim, DEL verbatim, control
     * characters by their short escape or \u00xx */
    expect_print("[\"a\\/b/c\", \"\\u00e9\\u2028\", \"\\\"\\\\\", \"\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\"]",
                 "[\n"
                 "  \"a/b/c\",\n"
                 "  \"\xc3\xa9\xe2\x80\xa8\",\n"
                 "  \"\\\"\\\\\",\n"
                 "  \"\\b\\f\\n\\r\\t\\u0001\\u001f\x7f\"\n"
                 "]");
    expect_print("{\"k\\n\\u0002\":1}", "{\n  \"k\\n\\u0002\": 1\n}");
}

Test(json, numbers_keep_their_spelling)
{
    expect_print(
        "[1.0, 0.10, 1E+5, 2.5e-10, -0, 9007199254740993, 12345678901234567890]",
        "[\n  1.0,\n  0.10,\n  1E+5,\n  2.5e-10,\n  -0,\n  9007199254740993,\n  12345678901234567890\n]");
}

Test(json, integers_are_read_exactly)
{
    cJSON *v = parse_ok("[9007199254740993, -9223372036854775808, 9223372036854775807, 9223372036854775808,"
                        " 1.0, 1e5, -7, \"3\", null]");
    int64_t want[] = {9007199254740993LL, INT64_MIN, INT64_MAX};
    const cJSON *e = v->child;
    for (int i = 0; i < 3; i++, e = e->next) {
        int64_t x = 0;
        cr_assert_eq(peso_json_int64(e, &x), 0, "element %d", i);
        cr_expect_eq(x, want[i], "element %d: %lld", i, (long long)x);
    }
    for (int i = 3; i < 6; i++, e = e->next) {
        int64_t x;
        cr_expect_eq(peso_json_int64(e, &x), -1, "element %d is no int64", i);
    }
    int64_t x;
    cr_expect_eq(peso_json_int64(e, &x), 0);
    cr_expect_eq(x, -7);
    cr_expect_eq(peso_json_int64(e->next, &x), -1, "a string is no integer");
    cr_expect_eq(peso_json_int64(e->next->next, &x), -1, "null is no integer");
    cJSON_Delete(v);

    /* a node made by plain cJSON has only its double */
    cJSON *n = cJSON_CreateNumber(5.0), *f = cJSON_CreateNumber(2.5);
    cr_expect_eq(peso_json_int64(n, &x), 0);
    cr_expect_eq(x, 5);
    cr_expect_eq(peso_json_int64(f, &x), -1);
    char *t = peso_json_print(f);
    cr_expect_str_eq(t, "2.5");
    free(t);
    cJSON_Delete(n);
    cJSON_Delete(f);
}

Test(json, duplicate_key_keeps_last_value_at_first_position)
{
    cJSON *v = parse_ok("{\"k\": 1, \"x\": {\"a\": 1, \"a\": [2]}, \"k\": 3, \"y\": 0, \"k\": {\"z\": 4}}");
    cr_expect_eq(cJSON_GetArraySize(v), 3);
    char *t = peso_json_print(v);
    cr_expect_str_eq(t, "{\n"
                        "  \"k\": {\n"
                        "    \"z\": 4\n"
                        "  },\n"
                        "  \"x\": {\n"
                        "    \"a\": [\n"
                        "      2\n"
                        "    ]\n"
                        "  },\n"
                        "  \"y\": 0\n"
                        "}");
    free(t);
    cJSON_Delete(v);
}

Test(json, duplicates_in_a_large_object)
{
    /* 30 keys k0..k29 valued by their index, then k7 and k29 again */
    char text[1024];
    size_t w = (size_t)snprintf(text, sizeof text, "{");
    for (int i = 0; i < 30; i++)
        w += (size_t)snprintf(text + w, sizeof text - w, "\"k%d\": %d, ", i, i);
    snprintf(text + w, sizeof text - w, "\"k7\": 70, \"k29\": 290}");
    cJSON *v = parse_ok(text);
    cr_expect_eq(cJSON_GetArraySize(v), 30);
    int i = 0;
    for (const cJSON *c = v->child; c; c = c->next, i++) {
        char key[16];
        snprintf(key, sizeof key, "k%d", i);
        cr_expect_str_eq(c->string, key, "member %d", i);
        cr_expect_eq(c->valuedouble, i == 7 ? 70 : i == 29 ? 290 : i, "%s", key);
    }
    cJSON_Delete(v);
}

Test(json, errors_name_line_and_column)
{
    expect_parse_error("", 0, "line 1, column 1: unexpected end of input");
    expect_parse_error("{\"a\": 1,", 8, "line 1, column 9: unexpected end of input");
    expect_parse_error("{\n  \"a\": ]}", 11, "line 2, column 8: unexpected ']'");
    expect_parse_error("{} x", 4, "line 1, column 4: unexpected 'x'");
    expect_parse_error("[1,\n 01]", 8, "line 2, column 2: malformed number");
    expect_parse_error("[1.]", 4, "line 1, column 2: malformed number");
    expect_parse_error("[-]", 3, "line 1, column 2: unexpected '-'");
    expect_parse_error("\xef\xbb\xbf{}", 5, "line 1, column 1: UTF-8 byte order mark (not JSON text)");
    expect_parse_error("{}\n\0", 4, "line 2, column 1: NUL byte (not JSON text)");
    expect_parse_error("[\"a\" \x01\xff]", 8, "line 1, column 7: unexpected byte 0xff");
}

Test(json, parse_can_stop_after_the_value)
{
    const char text[] = "{\"a\": [1]}  trailing";
    peso_err err;
    size_t end = 0;
    cJSON *v = peso_json_parse(text, strlen(text), &end, &err);
    cr_assert_not_null(v, "%s", err.msg);
    cr_expect_eq(end, 10);
    cJSON_Delete(v);
}

Test(json, get_is_case_sensitive_and_null_is_absent)
{
    cJSON *v = parse_ok("{\"Key\": 1, \"n\": null, \"s\": \"x\"}");
    cr_expect_null(peso_json_get(v, "key"));
    cr_expect_not_null(peso_json_get(v, "Key"));
    cr_expect_null(peso_json_get(v, "n"));
    cr_expect_null(peso_json_get(v, "absent"));
    cr_expect_str_eq(peso_json_get(v, "s")->valuestring, "x");
    cr_expect_null(peso_json_get(peso_json_get(v, "s"), "s"), "a string has no members");
    cr_expect_null(peso_json_get(NULL, "s"));
    cJSON_Delete(v);
}

static void expect_float(double d, const char *want)
{
    cJSON *v = peso_json_float(d);
    char *got = peso_json_print(v);
    cr_expect_str_eq(got, want, "%.17g", d);
    free(got);
    cr_expect(isnan(d) || v->valuedouble == d);
    cJSON_Delete(v);
}

Test(json, floats_are_spelled_as_python_repr)
{
    expect_float(0.1, "0.1");
    expect_float(500000.0, "500000.0");
    expect_float(1e-05, "1e-05");
    expect_float(1.5e-06, "1.5e-06");
    expect_float(1e16, "1e+16");
    expect_float(1e15, "1000000000000000.0");
    expect_float(20.0, "20.0");
    expect_float(4.0, "4.0");
    expect_float(0.0001, "0.0001");
    expect_float(-0.0, "-0.0");
    expect_float(1.0 / 3.0, "0.3333333333333333");
    expect_float(1.0 - 12.0 / 21.0, "0.4285714285714286");
    expect_float(123456.789, "123456.789");
    expect_float(9999999999999998.0, "9999999999999998.0");
    expect_float(5e-324, "5e-324");
    expect_float(1.7976931348623157e308, "1.7976931348623157e+308");
    expect_float(NAN, "NaN");
    expect_float(INFINITY, "Infinity");
    expect_float(-INFINITY, "-Infinity");
}

Test(json, built_trees_print_and_read_back)
{
    cJSON *o = peso_json_object(), *a = peso_json_array();
    peso_json_push(a, peso_json_int(INT64_MIN));
    peso_json_push(a, peso_json_float(2.5));
    peso_json_push(a, peso_json_string("s\""));
    peso_json_push(a, peso_json_bool(1));
    peso_json_push(a, peso_json_null());
    peso_json_add(o, "a", a);
    peso_json_add(o, "b", peso_json_null());
    peso_json_set(o, "b", peso_json_int(7)); /* replaced where it stands */
    peso_json_set(o, "c", peso_json_bool(0));
    char *t = peso_json_print(o);
    cr_expect_str_eq(t, "{\n"
                        "  \"a\": [\n"
                        "    -9223372036854775808,\n"
                        "    2.5,\n"
                        "    \"s\\\"\",\n"
                        "    true,\n"
                        "    null\n"
                        "  ],\n"
                        "  \"b\": 7,\n"
                        "  \"c\": false\n"
                        "}");
    int64_t x;
    cr_expect_eq(peso_json_int64(a->child, &x), 0);
    cr_expect_eq(x, INT64_MIN);
    cJSON *back = parse_ok(t);
    cr_expect(cJSON_Compare(o, back, 1), "reads back as the same tree");
    cJSON_Delete(back);
    free(t);
    cJSON_Delete(o);
}

Test(json, brief_is_compact_and_cut)
{
    cJSON *v = parse_ok("{\"a\": [1, 2.50, \"x\"], \"b\": {}}");
    char buf[64], small[12];
    cr_expect_str_eq(peso_json_brief(v, buf, sizeof buf), "{\"a\":[1,2.50,\"x\"],\"b\":{}}");
    cr_expect_str_eq(peso_json_brief(v, small, sizeof small), "{\"a\":[1,...");
    cJSON_Delete(v);
}

Test(json, load_names_the_file)
{
    peso_err err;
    cr_expect_null(peso_json_load("/nonexistent-peso/x.json", "index JSON", &err));
    cr_expect_str_eq(err.msg, "/nonexistent-peso/x.json: cannot read index JSON: No such file or directory");

    char dir[] = "/tmp/peso_json_XXXXXX", path[64];
    cr_assert_not_null(mkdtemp(dir));
    snprintf(path, sizeof path, "%s/a.json", dir);
    FILE *f = fopen(path, "w");
    fputs("{\n  \"a\": [1,\n  2,\n}\n", f);
    fclose(f);
    cr_expect_null(peso_json_load(path, "JSON", &err));
    char want[128];
    snprintf(want, sizeof want, "%s: cannot read JSON: line 4, column 1: unexpected '}'", path);
    cr_expect_str_eq(err.msg, want);

    f = fopen(path, "w");
    fputs("{\"big\": 9007199254740993}\n", f);
    fclose(f);
    cJSON *v = peso_json_load(path, "JSON", &err);
    cr_assert_not_null(v, "%s", err.msg);
    int64_t x;
    cr_expect_eq(peso_json_int64(peso_json_get(v, "big"), &x), 0);
    cr_expect_eq(x, 9007199254740993LL);
    cJSON_Delete(v);
    unlink(path);
    rmdir(dir);
}
