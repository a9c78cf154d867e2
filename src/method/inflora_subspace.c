#include "method/inflora_subspace.h"

#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

/* LAPACK's symmetric eigensolver (relatively robust representations),
 * from OpenBLAS, which ships no LAPACK header: the Fortran interface, with
 * the lengths of the three character arguments that gfortran appends. */
extern void dsyevr_(const char *jobz, const char *range, const char *uplo, const int *n, double *a,
                    const int *lda, const double *vl, const double *vu, const int *il, const int *iu,
                    const double *abstol, int *m, double *w, double *z, const int *ldz, int *isuppz,
                    double *work, const int *lwork, int *iwork, const int *liwork, int *info, size_t jobz_len,
                    size_t range_len, size_t uplo_len);

/* How far a stored basis may be from orthonormal before it is refused:
 * far above float rounding (1e-7), far below a wrong buffer. */
#define BASIS_TOL 1e-3
/* Relative asymmetry of a covariance that is still rounding. */
#define COV_SYM_TOL 1e-6

static int check_cov(const double *cov, int in, peso_err *err)
{
    double dmax = 0.0;
    for (int i = 0; i < in; i++) {
        double d = cov[(size_t)i * in + i];
        if (!(d >= 0.0) || !isfinite(d))
            return peso_errf(err, "inflora: covariance diagonal (%d,%d) = %g, expected finite and >= 0", i, i,
                             d);
        dmax = fmax(dmax, d);
    }
    for (int i = 0; i < in; i++)
        for (int j = i + 1; j < in; j++) {
            double x = cov[(size_t)i * in + j], y = cov[(size_t)j * in + i];
            if (!isfinite(x) || !isfinite(y) || fabs(x - y) > COV_SYM_TOL * dmax)
                return peso_errf(err,
                                 "inflora: covariance entries (%d,%d) = %g and (%d,%d) = %g, expected finite "
                                 "and symmetric",
                                 i, j, x, j, i, y);
        }
    return 0;
}

/* Removes from v its components along the n unit rows of q (modified
 * Gram-Schmidt: each projection uses the already reduced v). */
static void mgs_reduce(double *v, const double *q, int n, int in)
{
    for (int j = 0; j < n; j++) {
        const double *qj = q + (size_t)j * in;
        double p = cblas_ddot(in, v, 1, qj, 1);
        cblas_daxpy(in, -p, qj, 1, v, 1);
    }
}

/* q [k, in] = the float basis in double, re-orthonormalised; refuses rows
 * that were not orthonormal to begin with. */
static int load_basis(const float *basis, int k, int in, double *q, peso_err *err)
{
    for (int i = 0; i < k; i++) {
        double *v = q + (size_t)i * in;
        for (int c = 0; c < in; c++)
            v[c] = basis[(size_t)i * in + c];
        for (int j = 0; j < i; j++) {
            double p = cblas_ddot(in, v, 1, q + (size_t)j * in, 1);
            if (fabs(p) > BASIS_TOL)
                return peso_errf(
                    err, "inflora: basis rows %d and %d have dot product %g, expected orthogonal", j, i, p);
            cblas_daxpy(in, -p, q + (size_t)j * in, 1, v, 1);
        }
        double norm = cblas_dnrm2(in, v, 1);
        if (!(fabs(norm - 1.0) <= BASIS_TOL))
            return peso_errf(err, "inflora: basis row %d has norm %g, expected 1", i, norm);
        cblas_dscal(in, 1.0 / norm, v, 1);
    }
    return 0;
}

static double cov_trace(const double *cov, int in)
{
    double t = 0.0;
    for (int i = 0; i < in; i++)
        t += cov[(size_t)i * in + i];
    return t;
}

/* The shift that sends span(q) below the complement's spectrum: at least
 * the largest eigenvalue of P C P, and of the same scale, so that the gap
 * costs no accuracy. */
static double shift_of(const double *cov, int in)
{
    double t = cov_trace(cov, in);
    return t > 0.0 ? t : 1.0;
}

/* s [in, in] = P C P - c q^T q with P = I - q^T q; returns trace(P C P). */
static double projected_cov(const double *cov, int in, const double *q, int k, double c, double *s)
{
    memcpy(s, cov, (size_t)in * in * sizeof(double));
    if (k == 0)
        return cov_trace(s, in);
    double *w = peso_malloc((size_t)k * in * sizeof(double));
    /* P C = C - q^T (q C) */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, k, in, in, 1.0, q, in, cov, in, 0.0, w, in);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, in, k, -1.0, q, in, w, in, 1.0, s, in);
    /* (P C) P = P C - ((P C) q^T) q */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, in, k, in, 1.0, s, in, q, in, 0.0, w, k);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, in, in, k, -1.0, w, k, q, in, 1.0, s, in);
    double tr = cov_trace(s, in);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, in, in, k, -c, q, in, q, in, 1.0, s, in);
    free(w);
    return tr;
}

/* The top m eigenvalues of the symmetric s [n, n] (destroyed) into w in
 * descending order and, when z is not NULL, their unit eigenvectors into
 * the rows of z [m, n], same order. */
static int eig_top(double *s, int n, int m, double *w, double *z, peso_err *err)
{
    const char *jobz = z ? "V" : "N";
    int il = n - m + 1, iu = n, found = 0, info = 0, lwork = -1, liwork = -1, iwq = 0;
    int ldz = z ? n : 1;
    double vl = 0.0, vu = 0.0, abstol = 0.0, wq = 0.0, zdummy = 0.0;
    double *zz = z ? z : &zdummy;
    /* dsyevr needs room for all n eigenvalues, whatever m */
    double *wall = peso_malloc((size_t)n * sizeof(double));
    int *isuppz = peso_malloc(2 * (size_t)m * sizeof(int));
    dsyevr_(jobz, "I", "L", &n, s, &n, &vl, &vu, &il, &iu, &abstol, &found, wall, zz, &ldz, isuppz, &wq,
            &lwork, &iwq, &liwork, &info, 1, 1, 1);
    lwork = (int)wq;
    liwork = iwq;
    double *work = peso_malloc((size_t)lwork * sizeof(double));
    int *iwork = peso_malloc((size_t)liwork * sizeof(int));
    dsyevr_(jobz, "I", "L", &n, s, &n, &vl, &vu, &il, &iu, &abstol, &found, wall, zz, &ldz, isuppz, work,
            &lwork, iwork, &liwork, &info, 1, 1, 1);
    free(work);
    free(iwork);
    free(isuppz);
    int rc = 0;
    if (info != 0 || found != m)
        rc = peso_errf(err,
                       "inflora: LAPACK dsyevr on a %dx%d matrix returned info %d and %d of %d eigenpairs", n,
                       n, info, found, m);
    /* LAPACK orders ascending */
    for (int i = 0; rc == 0 && i < m; i++) {
        w[i] = wall[m - 1 - i];
        if (z && i < m - 1 - i)
            cblas_dswap(n, z + (size_t)i * n, 1, z + (size_t)(m - 1 - i) * n, 1);
    }
    free(wall);
    return rc;
}

/* The header's sign convention: the largest-magnitude entry (first on a
 * tie) positive. */
static void fix_sign(double *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (fabs(v[i]) > fabs(v[best]))
            best = i;
    if (v[best] < 0.0)
        cblas_dscal(n, -1.0, v, 1);
}

static int check_basis_dims(int in, int k, peso_err *err)
{
    if (in < 1)
        return peso_errf(err, "inflora: input width %d, expected >= 1", in);
    if (k < 0 || k > in)
        return peso_errf(err, "inflora: basis of %d rows for input width %d, expected 0..%d", k, in, in);
    return 0;
}

/* q = the checked basis in double, s = P C P - c q^T q; returns
 * trace(P C P) in *tr. The caller frees q and s, also on failure. */
static int prepare(const double *cov, int in, const float *basis, int k, double **q, double **s, double *tr,
                   peso_err *err)
{
    *q = peso_malloc(((size_t)k * in + 1) * sizeof(double));
    *s = NULL;
    if (check_cov(cov, in, err) != 0 || load_basis(basis, k, in, *q, err) != 0)
        return -1;
    *s = peso_malloc((size_t)in * in * sizeof(double));
    *tr = projected_cov(cov, in, *q, k, shift_of(cov, in), *s);
    return 0;
}

int peso_inflora_design(const double *cov, int in, const float *basis, int k, int r, float *a, peso_err *err)
{
    if (check_basis_dims(in, k, err) != 0)
        return -1;
    if (r < 1 || r > in - k)
        return peso_errf(err,
                         "inflora: rank %d needs %d free input directions, but width %d minus %d basis rows "
                         "leaves %d",
                         r, r, in, k, in - k);
    double *q, *s, tr;
    int rc = prepare(cov, in, basis, k, &q, &s, &tr, err);
    double *w = peso_malloc((size_t)r * sizeof(double));
    double *z = peso_malloc((size_t)r * in * sizeof(double));
    if (rc == 0)
        rc = eig_top(s, in, r, w, z, err);
    if (rc == 0)
        for (int i = 0; i < r; i++) {
            double *v = z + (size_t)i * in;
            fix_sign(v, in);
            for (int c = 0; c < in; c++)
                a[(size_t)i * in + c] = (float)v[c];
        }
    free(q);
    free(s);
    free(w);
    free(z);
    return rc;
}

/* How many of the descending eigenvalues w[0..room) reach threshold * tr;
 * tol is the precision at which two sums are equal, so that a threshold
 * met exactly is met, and threshold 1 stops before the zero eigenvalues. */
static int count_directions(const double *w, int room, double threshold, double tr, double tol)
{
    double sum = 0.0;
    int n = 0;
    while (n < room && sum < threshold * tr - tol)
        sum += w[n++];
    return n;
}

/* Appends the n unit rows of z to the basis (rows from k on), each
 * re-orthonormalised against q's k rows and the rows added before it. */
static int append_rows(double *z, int n, const double *q, int k, int in, float *basis, peso_err *err)
{
    for (int i = 0; i < n; i++) {
        double *v = z + (size_t)i * in;
        mgs_reduce(v, q, k, in);
        mgs_reduce(v, z, i, in);
        double norm = cblas_dnrm2(in, v, 1);
        /* an eigenvector of the complement keeps norm 1 up to rounding */
        if (!(norm > 0.5))
            return peso_errf(err,
                             "inflora: new direction %d kept norm %g after orthogonalisation, expected 1",
                             k + i, norm);
        cblas_dscal(in, 1.0 / norm, v, 1);
        fix_sign(v, in);
    }
    for (size_t e = 0; e < (size_t)n * in; e++)
        basis[(size_t)k * in + e] = (float)z[e];
    return 0;
}

int peso_inflora_extend(const double *cov, int in, float *basis, int *k, int max_k, double threshold,
                        peso_err *err)
{
    if (check_basis_dims(in, *k, err) != 0)
        return -1;
    if (max_k < *k || max_k > in)
        return peso_errf(err, "inflora: basis capacity %d rows, expected between the current %d and width %d",
                         max_k, *k, in);
    if (!(threshold > 0.0 && threshold <= 1.0))
        return peso_errf(err, "inflora: energy threshold %g, expected in (0, 1]", threshold);
    int room = max_k - *k;
    if (room == 0)
        return 0;
    double *q, *s, tr;
    int rc = prepare(cov, in, basis, *k, &q, &s, &tr, err);
    double *w = peso_malloc((size_t)room * sizeof(double));
    double *s2 = NULL, *z = NULL;
    int n = 0;
    if (rc == 0) {
        /* dsyevr destroys its matrix: the vectors need a second copy */
        s2 = peso_malloc((size_t)in * in * sizeof(double));
        memcpy(s2, s, (size_t)in * in * sizeof(double));
        rc = eig_top(s, in, room, w, NULL, err);
    }
    if (rc == 0) {
        double tol = (double)in * DBL_EPSILON * shift_of(cov, in);
        n = count_directions(w, room, threshold, tr, tol);
    }
    if (rc == 0 && n > 0) {
        z = peso_malloc((size_t)n * in * sizeof(double));
        rc = eig_top(s2, in, n, w, z, err);
        if (rc == 0)
            rc = append_rows(z, n, q, *k, in, basis, err);
    }
    if (rc == 0)
        *k += n;
    free(q);
    free(s);
    free(s2);
    free(w);
    free(z);
    return rc;
}
