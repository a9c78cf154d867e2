/* Deterministic random numbers: xoshiro256** seeded through splitmix64.
 * Every random choice in PESO draws from one of these, seeded from the
 * run seed and a purpose tag, so results depend only on the config. */
#ifndef PESO_COMMON_RNG_H
#define PESO_COMMON_RNG_H

#include <stddef.h>
#include <stdint.h>

typedef struct peso_rng {
    uint64_t s[4];
} peso_rng;

void peso_rng_seed(peso_rng *r, uint64_t seed, uint64_t stream);
uint64_t peso_rng_u64(peso_rng *r);
/* Uniform in [0, 1) with 53 bits. */
double peso_rng_uniform(peso_rng *r);
/* Uniform integer in [0, n), unbiased. */
uint64_t peso_rng_below(peso_rng *r, uint64_t n);
/* Standard normal (Box-Muller, no caching, so the stream is reproducible). */
double peso_rng_normal(peso_rng *r);
/* Fisher-Yates shuffle of n int32 values. */
void peso_rng_shuffle_i32(peso_rng *r, int32_t *v, size_t n);

#endif
