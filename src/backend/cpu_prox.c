/* The proximal terms of the continual methods (backend.h, "proximal
 * terms"): PESO's per-group softmax-KL, L2 and O-LoRA's orthogonality.
 * Each term keeps one double per group (or module) and sums them in
 * group order after the parallel loop, so the value has the same bits
 * for any thread count; each gradient entry has one writer. */
#include <math.h>
#include <stdlib.h>

#include "backend/cpu.h"

static void gather(const peso_prox_group *g, const float *src, double *dst)
{
    for (int s = 0; s < g->n_seg; s++) {
        const peso_prox_seg *sg = &g->seg[s];
        for (size_t i = 0, j = sg->off; i < sg->n; i++, j += sg->stride)
            *dst++ = src[j];
    }
}

static void scatter_add(const peso_prox_group *g, const double *src, double scale, float *dst)
{
    for (int s = 0; s < g->n_seg; s++) {
        const peso_prox_seg *sg = &g->seg[s];
        for (size_t i = 0, j = sg->off; i < sg->n; i++, j += sg->stride)
            dst[j] += (float)(scale * *src++);
    }
}

static double sum_in_order(const double *x, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += x[i];
    return s;
}

int peso_cpu_prox_kl(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                     const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    (void)be;
    if (peso_prox_check("prox_kl", gs, lo, hi, lambda, value, err) < 0)
        return -1;
    size_t max_n = 1, work = 0;
    for (int i = lo; i < hi; i++) {
        max_n = gs->g[i].numel > max_n ? gs->g[i].numel : max_n;
        work += gs->g[i].numel;
    }
    /* per-group values, summed in group order after the loop */
    double *kl = peso_malloc((size_t)(hi - lo) * sizeof *kl);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        double *x = peso_malloc(max_n * sizeof *x), *y = peso_malloc(max_n * sizeof *y);
#pragma omp for schedule(dynamic)
        for (int i = lo; i < hi; i++) {
            const peso_prox_group *g = &gs->g[i];
            gather(g, v, x);
            gather(g, v_prev, y);
            kl[i - lo] = peso_cpu_softmax_kl(x, y, g->numel, grad != NULL);
            if (grad)
                scatter_add(g, x, lambda, grad);
        }
        free(x);
        free(y);
    }
    *value = lambda * sum_in_order(kl, (size_t)(hi - lo));
    free(kl);
    return 0;
}

static double group_l2(const peso_prox_group *g, const float *v, const float *v_prev, double lambda,
                       float *grad)
{
    double s = 0.0;
    for (int k = 0; k < g->n_seg; k++) {
        const peso_prox_seg *sg = &g->seg[k];
        for (size_t i = 0, j = sg->off; i < sg->n; i++, j += sg->stride) {
            double d = (double)v[j] - (double)v_prev[j];
            s += d * d;
            if (grad)
                grad[j] += (float)(lambda * d);
        }
    }
    return 0.5 * s;
}

int peso_cpu_prox_l2(peso_backend *be, const peso_prox_groups *gs, int lo, int hi, const float *v,
                     const float *v_prev, double lambda, float *grad, double *value, peso_err *err)
{
    (void)be;
    if (peso_prox_check("prox_l2", gs, lo, hi, lambda, value, err) < 0)
        return -1;
    size_t work = 0;
    for (int i = lo; i < hi; i++)
        work += gs->g[i].numel;
    double *sq = peso_malloc((size_t)(hi - lo) * sizeof *sq);
#pragma omp parallel for schedule(dynamic) if (work >= PESO_CPU_PAR_MIN)
    for (int i = lo; i < hi; i++)
        sq[i - lo] = group_l2(&gs->g[i], v, v_prev, lambda, grad);
    *value = lambda * sum_in_order(sq, (size_t)(hi - lo));
    free(sq);
    return 0;
}

/* ||A A_prev^T||_F^2 of one module (A [r, in] at a_off), with M = A
 * A_prev^T [r, r] left in mm; with grad set, adds 2 lambda M A_prev to
 * A's gradient. */
static double module_ortho(size_t a_off, size_t in, size_t r, const float *v, const float *v_prev,
                           double lambda, float *grad, double *mm)
{
    const float *a = v + a_off, *ap = v_prev + a_off;
    double s = 0.0;
    for (size_t i = 0; i < r; i++)
        for (size_t j = 0; j < r; j++) {
            double d = 0.0;
            for (size_t c = 0; c < in; c++)
                d += (double)a[i * in + c] * (double)ap[j * in + c];
            mm[i * r + j] = d;
            s += d * d;
        }
    if (!grad)
        return s;
    float *ga = grad + a_off;
    for (size_t i = 0; i < r; i++)
        for (size_t c = 0; c < in; c++) {
            double d = 0.0;
            for (size_t j = 0; j < r; j++)
                d += mm[i * r + j] * (double)ap[j * in + c];
            ga[i * in + c] += (float)(2.0 * lambda * d);
        }
    return s;
}

int peso_cpu_prox_ortho(peso_backend *be, const peso_prox_groups *gs, int rank, int lo, int hi,
                        const float *v, const float *v_prev, double lambda, float *grad, double *value,
                        peso_err *err)
{
    (void)be;
    if (peso_prox_check("prox_ortho", gs, lo, hi, lambda, value, err) < 0)
        return -1;
    if (gs->how != PESO_PROX_MODULE)
        return peso_errf(err, "prox_ortho: gs grouping %d, expected the module groups (%d)", (int)gs->how,
                         (int)PESO_PROX_MODULE);
    if (rank < 1)
        return peso_errf(err, "prox_ortho: rank=%d, expected >= 1", rank);
    size_t r = (size_t)rank, work = 0;
    for (int i = lo; i < hi; i++) {
        const peso_prox_seg *a = &gs->g[i].seg[0];
        if (a->stride != 1 || a->n == 0 || a->n % r != 0)
            return peso_errf(err,
                             "prox_ortho: group %d's A has n=%zu stride=%zu, expected a "
                             "contiguous [rank=%d, in] block",
                             i, a->n, a->stride, rank);
        work += r * r * (a->n / r);
    }
    double *fro = peso_malloc((size_t)(hi - lo) * sizeof *fro);
#pragma omp parallel if (work >= PESO_CPU_PAR_MIN)
    {
        double *mm = peso_malloc(r * r * sizeof *mm);
#pragma omp for schedule(dynamic)
        for (int i = lo; i < hi; i++) {
            const peso_prox_seg *a = &gs->g[i].seg[0];
            fro[i - lo] = module_ortho(a->off, a->n / r, r, v, v_prev, lambda, grad, mm);
        }
        free(mm);
    }
    *value = lambda * sum_in_order(fro, (size_t)(hi - lo));
    free(fro);
    return 0;
}
