/* k-means for the RQ-VAE codebook initialisation (internal to semid). */
#ifndef PESO_SEMID_KMEANS_H
#define PESO_SEMID_KMEANS_H

#include <stddef.h>
#include <stdint.h>

#include "common/rng.h"

/* Clusters n >= 1 points x [n x d] into k centers [k x d]: greedy
 * k-means++ seeding from rng, then up to iters Lloyd iterations (stops
 * early when no assignment changes). With fewer distinct points than k the
 * surplus centers are deterministically jittered copies of sampled points,
 * so all k centers exist and differ. An empty cluster keeps its center. */
void peso_kmeans(const float *x, size_t n, int d, int k, int iters, peso_rng *rng, float *centers);

/* Index of the center nearest to each point (ties: lowest index), from
 * ||c||^2 - 2 x.c computed with one matrix product per chunk of points. */
void peso_kmeans_assign(const float *x, size_t n, int d, const float *centers, int k, int32_t *assign);

#endif
