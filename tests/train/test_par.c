/* The rank ranges of the parallel design (peso_par_range, train/par.h)
 * for many item counts and group sizes, against what the rule promises:
 * the ranges of ranks 0..size-1 tile [0, n) in rank order, and their
 * sizes differ by at most one (balanced), whatever n and size. */
#include <criterion/criterion.h>

#include "train/internal.h"
#include "train/par.h"

static void expect_tiling(size_t n, int size)
{
    size_t at = 0, smallest = (size_t)-1, largest = 0;
    for (int r = 0; r < size; r++) {
        size_t lo, hi;
        peso_par_range(n, r, size, &lo, &hi);
        cr_assert_eq(lo, at, "n %zu size %d: rank %d starts at %zu, rank %d ended at %zu", n, size, r, lo,
                     r - 1, at);
        cr_assert(hi >= lo, "n %zu size %d: rank %d has [%zu, %zu)", n, size, r, lo, hi);
        smallest = hi - lo < smallest ? hi - lo : smallest;
        largest = hi - lo > largest ? hi - lo : largest;
        at = hi;
    }
    cr_assert_eq(at, n, "n %zu size %d: the ranges end at %zu", n, size, at);
    cr_assert(largest - smallest <= 1, "n %zu size %d: shares of %zu to %zu items", n, size, smallest,
              largest);
    /* the balanced shares are floor(n / size) and ceil(n / size) */
    cr_assert_eq(smallest, n / (size_t)size, "n %zu size %d: smallest share %zu", n, size, smallest);
}

Test(par, ranges_tile_in_rank_order_and_balance)
{
    for (size_t n = 0; n <= 70; n++)
        for (int size = 1; size <= 17; size++)
            expect_tiling(n, size);
    const size_t big[] = {1000, 4096, 99991, (size_t)1 << 31, ((size_t)1 << 40) + 3};
    const int sizes[] = {1, 2, 3, 7, 8, 64, 1000};
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        for (size_t j = 0; j < sizeof sizes / sizeof sizes[0]; j++)
            expect_tiling(big[i], sizes[j]);
}

Test(par, one_rank_takes_everything)
{
    size_t lo, hi;
    peso_par_range(12345, 0, 1, &lo, &hi);
    cr_expect(lo == 0 && hi == 12345, "[%zu, %zu)", lo, hi);
}

/* The window sharding of a step (peso_step_mine): over the ranks of a
 * group the shares are a partition of the step's windows, and rank r
 * holds exactly positions r, r + N, r + 2N, ... of the step, in order, so
 * that the global step does not depend on N. */
Test(par, step_windows_go_to_rank_j_mod_n)
{
    int32_t win[23];
    for (int j = 0; j < 23; j++)
        win[j] = 1000 + 7 * j;
    size_t start[3] = {0, 9, 23};
    peso_steps st = {.n_win = 23, .win = win, .n_steps = 2, .start = start};
    for (size_t i = 0; i < 2; i++)
        for (int size = 1; size <= 12; size++) {
            int hits[23] = {0};
            for (int r = 0; r < size; r++) {
                int32_t out[23];
                size_t k = peso_step_mine(&st, i, r, size, out);
                size_t want = 0;
                for (size_t j = start[i]; j < start[i + 1]; j++)
                    if ((j - start[i]) % (size_t)size == (size_t)r) {
                        cr_assert(want < k, "step %zu size %d rank %d: only %zu windows", i, size, r, k);
                        cr_assert_eq(out[want], win[j], "step %zu size %d rank %d: window %zu", i, size, r, want);
                        want++;
                        hits[j]++;
                    }
                cr_assert_eq(k, want, "step %zu size %d rank %d: %zu windows, expected %zu", i, size, r, k, want);
            }
            for (size_t j = start[i]; j < start[i + 1]; j++)
                cr_assert_eq(hits[j], 1, "step %zu size %d: window %zu taken %d times", i, size, j, hits[j]);
        }
}
