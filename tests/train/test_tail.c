/* The step statistics that ride after the gradients in the one
 * all-reduce (peso_step_tail_pack/unpack, train/internal.h): the packed
 * tails of several simulated train ranks summed element-wise, as
 * MPI_SUM / NCCL's sum do, then unpacked, give the sums of the data and
 * proximal terms and of the tokens, the number of ranks that saw a
 * non-finite loss, and stop = any rank was asked to stop. The expected
 * values are summed here in double and integers. */
#include <criterion/criterion.h>
#include <math.h>

#include "common/rng.h"
#include "train/internal.h"

#define MAX_RANKS 16

/* What the all-reduce gives: the element-wise float sum of the tails. */
static void reduce(const peso_step_tail *ranks, int n, peso_step_tail *out)
{
    float sum[PESO_STEP_TAIL_N] = {0}, one[PESO_STEP_TAIL_N];
    for (int r = 0; r < n; r++) {
        peso_step_tail_pack(&ranks[r], one);
        for (int k = 0; k < PESO_STEP_TAIL_N; k++)
            sum[k] += one[k];
    }
    peso_step_tail_unpack(sum, out);
}

Test(tail, one_rank_round_trips)
{
    peso_step_tail in = {123.25, 0.5, 4096, 1, 1}, out;
    reduce(&in, 1, &out);
    cr_expect_eq(out.data, 123.25);
    cr_expect_eq(out.prox, 0.5);
    cr_expect_eq(out.tokens, 4096);
    cr_expect_eq(out.bad, 1);
    cr_expect_eq(out.stop, 1);
    peso_step_tail none = {0, 0, 0, 0, 0};
    reduce(&none, 1, &out);
    cr_expect(out.bad == 0 && out.stop == 0 && out.tokens == 0);
}

Test(tail, sums_over_ranks)
{
    peso_rng r;
    peso_rng_seed(&r, 31, 0);
    for (int trial = 0; trial < 200; trial++) {
        int n = 1 + (int)peso_rng_below(&r, MAX_RANKS);
        peso_step_tail ranks[MAX_RANKS], got;
        double data = 0, prox = 0;
        long tokens = 0;
        int bad = 0, stop = 0;
        for (int i = 0; i < n; i++) {
            /* a rank's loss sum over up to a few thousand labels; tokens
             * below 2^24 / MAX_RANKS so that their float sum is exact */
            ranks[i].data = 5000.0 * peso_rng_uniform(&r);
            ranks[i].prox = trial % 3 ? 0.01 * peso_rng_uniform(&r) : 0.0;
            ranks[i].tokens = (long)peso_rng_below(&r, 1u << 20);
            ranks[i].bad = peso_rng_below(&r, 4) == 0;
            ranks[i].stop = peso_rng_below(&r, 5) == 0;
            data += ranks[i].data;
            prox += ranks[i].prox;
            tokens += ranks[i].tokens;
            bad += ranks[i].bad;
            stop |= ranks[i].stop;
        }
        reduce(ranks, n, &got);
        cr_assert(fabs(got.data - data) <= 1e-6 * data + 1e-3, "trial %d, %d ranks: data %.9g, sum %.9g",
                  trial, n, got.data, data);
        cr_assert(fabs(got.prox - prox) <= 1e-6 * prox + 1e-9, "trial %d: prox %.9g, sum %.9g", trial,
                  got.prox, prox);
        cr_assert_eq(got.tokens, tokens, "trial %d, %d ranks: %ld tokens, sum %ld", trial, n, got.tokens,
                     tokens);
        cr_assert_eq(got.bad, bad, "trial %d, %d ranks: %d bad ranks, counted %d", trial, n, got.bad, bad);
        cr_assert_eq(got.stop, stop, "trial %d, %d ranks: stop %d, any %d", trial, n, got.stop, stop);
    }
}

/* Every rank stopping gives stop = 1, not the count. */
Test(tail, stop_is_a_flag)
{
    peso_step_tail ranks[MAX_RANKS], got;
    for (int i = 0; i < MAX_RANKS; i++)
        ranks[i] = (peso_step_tail){1.0, 0.0, 10, 0, 1};
    reduce(ranks, MAX_RANKS, &got);
    cr_expect_eq(got.stop, 1);
    cr_expect_eq(got.bad, 0);
    cr_expect_eq(got.tokens, 10 * MAX_RANKS);
}
