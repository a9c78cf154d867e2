/* Linked into every Criterion program (see tests/skip.h): the SKIP lines,
 * exit status 77 when every test was skipped, and strict mode. main is
 * Criterion's default main (Criterion 2.4 "Providing your own main") plus
 * that exit status. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "skip.h"

/* exit status CTest reads as "skipped" (SKIP_RETURN_CODE in CMakeLists.txt) */
enum { PESO_TEST_SKIPPED = 77 };

static int all_skipped;

static int strict(void)
{
    const char *s = getenv("PESO_TEST_STRICT");
    return s && *s && strcmp(s, "0") != 0;
}

void peso_test_missing(const char *fmt, ...)
{
    char why[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (strict())
        cr_assert_fail("%s (PESO_TEST_STRICT=%s: a missing set-up is an error)", why,
                       getenv("PESO_TEST_STRICT"));
    criterion_skip_test("%s", why);
}

/* Runs in the runner process, after each test's worker has ended. */
ReportHook(POST_TEST)(struct criterion_test_stats *st)
{
    if (st->test_status == CR_STATUS_SKIPPED)
        fprintf(stderr, "SKIP: %s::%s: %s\n", st->test->category, st->test->name,
                st->message && *st->message ? st->message : "(no reason given)");
}

ReportHook(POST_ALL)(struct criterion_global_stats *st)
{
    all_skipped = st->nb_tests > 0 && st->tests_skipped == st->nb_tests;
}

int main(int argc, char *argv[])
{
    struct criterion_test_set *tests = criterion_initialize();
    int failed = 0;
    if (criterion_handle_args(argc, argv, true))
        failed = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    if (failed)
        return 1;
    return all_skipped ? PESO_TEST_SKIPPED : 0;
}
