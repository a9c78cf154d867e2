/* What a Criterion test does when something it needs is not on this
 * machine: the same rule as tests/skip.sh for the script tests.
 *
 * peso_test_missing(reason) skips the calling test, or fails it when
 * PESO_TEST_STRICT is set (to anything but 0; .ci/run sets it), because CI
 * has every set-up a test may need (shared data, h5dump, python3) except
 * a GPU. tests/skip.c, linked into every Criterion program, prints
 * "SKIP: suite::test: reason" for each skipped test and makes a program
 * whose tests were all skipped exit 77, which CTest (SKIP_RETURN_CODE 77)
 * lists as skipped rather than passed. */
#ifndef PESO_TESTS_SKIP_H
#define PESO_TESTS_SKIP_H

__attribute__((format(printf, 1, 2), noreturn)) void peso_test_missing(const char *fmt, ...);

#endif
