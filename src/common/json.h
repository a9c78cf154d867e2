/* JSON through cJSON, the library's one JSON parser (chosen by measurement,
 * tools/bench/json_libs.c), with what the model and data files need on top:
 *
 *   - whole files and buffers parsed with messages naming the line and
 *     column of the first error; text after the value, NUL bytes and a
 *     UTF-8 byte order mark are errors (Python's json refuses them too);
 *   - a key given twice keeps its last value at its first position, as
 *     json-c did and as Python's json and serde_json maps keep the last, so
 *     lookups and iteration see each key once;
 *   - exact numbers: every number node parsed or made here keeps its JSON
 *     spelling in valuestring (cJSON frees it with the node and ignores it
 *     for numbers), so integers are read exactly from the text, 1 and 1.0
 *     are told apart, and a loaded file writes back with its numbers as they
 *     were written. Change a number by replacing its node, not with
 *     cJSON_SetNumberValue, which would leave the spelling stale;
 *   - one writer with the layout the project's JSON files have: 2-space
 *     indent, "key": value, an empty container as "[\n<indent>]", '/' and
 *     non-ASCII verbatim, control characters escaped.
 *
 * Keys are looked up case-sensitively. The constructors abort on allocation
 * failure, as peso_malloc does, so a member is never dropped silently. */
#ifndef PESO_COMMON_JSON_H
#define PESO_COMMON_JSON_H

#include <cJSON.h>
#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

/* Parses text[0..len), which must be followed by a NUL at text[len]. With
 * end NULL the value must fill the text (whitespace aside); otherwise
 * parsing stops after the value and *end is its length. On failure returns
 * NULL with the reason in err, e.g. "line 3, column 7: unexpected ']'"
 * (callers add the file). */
cJSON *peso_json_parse(const char *text, size_t len, size_t *end, peso_err *err);
/* Reads and parses a whole file; messages name it and what it should be:
 * "<path>: cannot read <what>: line 1, column 16: unexpected end of input". */
cJSON *peso_json_load(const char *path, const char *what, peso_err *err);

/* The member key of object o; NULL when o is not an object, the key is
 * absent or its value is null. */
cJSON *peso_json_get(const cJSON *o, const char *key);
/* 0 with *out set when v is a number written as an integer (no fraction or
 * exponent) within int64; -1 otherwise. */
int peso_json_int64(const cJSON *v, int64_t *out);
/* v as compact JSON for messages, cut to fit buf (ending in "..."). */
const char *peso_json_brief(const cJSON *v, char *buf, size_t n);

/* Node constructors (the node belongs to the caller until added). */
cJSON *peso_json_object(void);
cJSON *peso_json_array(void);
cJSON *peso_json_string(const char *s);
cJSON *peso_json_bool(int b);
cJSON *peso_json_null(void);
cJSON *peso_json_int(int64_t v);
/* A float spelled as Python's repr spells it: the shortest decimal that
 * reads back as d (0.1, 500000.0, 1e-05, 1e+16); NaN and +-Infinity as
 * Python's json writes them, which is not JSON. */
cJSON *peso_json_float(double d);
/* Appends v under key (keys of one object must be distinct). */
void peso_json_add(cJSON *o, const char *key, cJSON *v);
/* Replaces the member key in place (freeing the old value), or appends. */
void peso_json_set(cJSON *o, const char *key, cJSON *v);
void peso_json_push(cJSON *a, cJSON *v);

/* The text of v in the layout above, malloc'd, without a final newline. */
char *peso_json_print(const cJSON *v);
/* The same text with a final newline, as a file holds it. */
char *peso_json_print_line(const cJSON *v);
/* v on one line with no spaces (a JSON Lines record), malloc'd, without a
 * final newline. */
char *peso_json_print_compact(const cJSON *v);
/* Writes the indented text to path atomically (temporary name, then rename). */
int peso_json_write_file(const char *path, const cJSON *v, peso_err *err);

#endif
