#include "bt.h"

struct ctx {
    peso_backend *be;
    int vocab, dim, n_tok, n_pos, lo, hi;
    float scale;
    float *base, *train, *h, *losses;
    int32_t *pos, *target;
    float *base_, *train_, *h_, *losses_;
    int32_t *pos_, *target_;
    peso_table t;
};

static void setup(struct ctx *c, int vocab, int dim, int n_tok, int n_pos, int lo, int hi,
                  uint64_t seed)
{
    peso_rng r;
    peso_rng_seed(&r, seed, 0);
    *c = (struct ctx){.vocab = vocab, .dim = dim, .n_tok = n_tok, .n_pos = n_pos, .lo = lo,
                      .hi = hi, .scale = 0.25f};
    c->be = bt_backend();
    c->base = bt_rand(&r, (size_t)vocab * dim, -1, 1);
    /* the base rows of the trainable range must never be read */
    for (int v = lo; v < hi; v++)
        for (int j = 0; j < dim; j++)
            c->base[(size_t)v * dim + j] = NAN;
    c->train = bt_rand(&r, (size_t)(hi - lo) * dim, -1, 1);
    c->h = bt_rand(&r, (size_t)n_tok * dim, -2, 2);
    c->losses = malloc((size_t)n_pos * 4);
    c->pos = malloc((size_t)n_pos * 4);
    c->target = malloc((size_t)n_pos * 4);
    for (int p = 0; p < n_pos; p++) {
        c->pos[p] = (int32_t)peso_rng_below(&r, (uint64_t)n_tok);
        c->target[p] = (int32_t)peso_rng_below(&r, (uint64_t)vocab);
    }
    c->base_ = bt_dev(c->be, c->base, (size_t)vocab * dim * 4);
    c->train_ = bt_dev(c->be, c->train, (size_t)(hi - lo) * dim * 4);
    c->h_ = bt_dev(c->be, c->h, (size_t)n_tok * dim * 4);
    c->losses_ = bt_dev(c->be, NULL, (size_t)n_pos * 4);
    c->pos_ = bt_dev(c->be, c->pos, (size_t)n_pos * 4);
    c->target_ = bt_dev(c->be, c->target, (size_t)n_pos * 4);
    c->t = (peso_table){.base = c->base_, .base_dtype = PESO_F32, .train = c->train_,
                        .train_lo = lo, .train_hi = hi, .n_rows = vocab, .dim = dim};
}

static void teardown(struct ctx *c)
{
    peso_backend *be = c->be;
    be->free(be, c->base_), be->free(be, c->train_), be->free(be, c->h_);
    be->free(be, c->losses_), be->free(be, c->pos_), be->free(be, c->target_);
    free(c->base), free(c->train), free(c->h), free(c->losses), free(c->pos), free(c->target);
    peso_backend_destroy(be);
}

static void run(struct ctx *c, float *dh, float *dhead)
{
    peso_err err = {{0}};
    cr_assert_eq(c->be->xent(c->be, &c->t, c->h_, c->n_tok, c->pos_, c->target_, c->n_pos,
                             c->scale, c->losses_, dh, dhead, &err),
                 0, "%s", err.msg);
    bt_get(c->be, c->losses, c->losses_, (size_t)c->n_pos * 4);
}

/* scale * sum of losses: the function whose gradient the backward gives */
static double loss(void *p)
{
    struct ctx *c = p;
    bt_put(c->be, c->h_, c->h, (size_t)c->n_tok * c->dim * 4);
    bt_put(c->be, c->train_, c->train, (size_t)(c->hi - c->lo) * c->dim * 4);
    run(c, NULL, NULL);
    double s = 0;
    for (int i = 0; i < c->n_pos; i++)
        s += c->losses[i];
    return c->scale * s;
}

static const float *head_row(const struct ctx *c, int v)
{
    return v >= c->lo && v < c->hi ? c->train + (size_t)(v - c->lo) * c->dim
                                   : c->base + (size_t)v * c->dim;
}

/* Losses and gradients in double from the definition of softmax
 * cross-entropy: d logits = scale * (softmax - onehot). */
static void naive(const struct ctx *c, double *losses, double *dh, double *dhead)
{
    int V = c->vocab, C = c->dim;
    double *lg = malloc((size_t)V * sizeof *lg);
    for (int p = 0; p < c->n_pos; p++) {
        const float *h = c->h + (size_t)c->pos[p] * C;
        double mx = -INFINITY, sum = 0;
        for (int v = 0; v < V; v++) {
            const float *w = head_row(c, v);
            lg[v] = 0;
            for (int j = 0; j < C; j++)
                lg[v] += (double)h[j] * w[j];
            mx = lg[v] > mx ? lg[v] : mx;
        }
        for (int v = 0; v < V; v++)
            sum += exp(lg[v] - mx);
        double lse = mx + log(sum);
        losses[p] = lse - lg[c->target[p]];
        for (int v = 0; v < V; v++) {
            double d = c->scale * (exp(lg[v] - lse) - (v == c->target[p]));
            const float *w = head_row(c, v);
            for (int j = 0; j < C; j++) {
                dh[(size_t)c->pos[p] * C + j] += d * w[j];
                if (v >= c->lo && v < c->hi)
                    dhead[(size_t)(v - c->lo) * C + j] += d * h[j];
            }
        }
    }
    free(lg);
}

static void check(struct ctx *c, int fd)
{
    size_t nh = (size_t)c->n_tok * c->dim, nt = (size_t)(c->hi - c->lo) * c->dim;
    float *dh_ = bt_dev(c->be, NULL, nh * 4), *dt_ = bt_dev(c->be, NULL, (nt ? nt : 1) * 4);
    run(c, dh_, c->hi > c->lo ? dt_ : NULL);
    float *gh = malloc(nh * 4), *gt = malloc((nt ? nt : 1) * 4);
    bt_get(c->be, gh, dh_, nh * 4);
    bt_get(c->be, gt, dt_, nt * 4);
    double *wl = calloc((size_t)c->n_pos, sizeof *wl), *wh = calloc(nh, sizeof *wh);
    double *wt = calloc(nt ? nt : 1, sizeof *wt);
    naive(c, wl, wh, wt);
    bt_close(c->losses, wl, (size_t)c->n_pos, 1e-5, 1e-5, "losses");
    bt_close(gh, wh, nh, 1e-6, 1e-4, "dh");
    bt_close(gt, wt, nt, 1e-6, 1e-4, "dhead");
    if (fd) {
        bt_fd(c->h, nh, gh, loss, c, 1e-2f, "dh");
        bt_fd(c->train, nt, gt, loss, c, 1e-2f, "dhead");
    }
    c->be->free(c->be, dh_), c->be->free(c->be, dt_);
    free(gh), free(gt), free(wl), free(wh), free(wt);
}

Test(xent, trainable_rows_at_the_end)
{
    struct ctx c;
    setup(&c, 11, 6, 5, 4, 8, 11, 61);
    /* a position chosen twice and tokens never chosen */
    int32_t pos[4] = {4, 0, 2, 4}, target[4] = {3, 10, 8, 9};
    memcpy(c.pos, pos, sizeof pos), memcpy(c.target, target, sizeof target);
    bt_put(c.be, c.pos_, pos, sizeof pos), bt_put(c.be, c.target_, target, sizeof target);
    check(&c, 1);
    teardown(&c);
}

Test(xent, trainable_rows_in_the_middle)
{
    struct ctx c;
    setup(&c, 9, 5, 4, 3, 3, 6, 62);
    check(&c, 1);
    teardown(&c);
}

Test(xent, frozen_head)
{
    struct ctx c;
    setup(&c, 7, 4, 3, 3, 0, 0, 63);
    check(&c, 1);
    teardown(&c);
}

/* more positions than one block and a vocabulary large enough for the
 * threaded path */
Test(xent, several_blocks_large_vocabulary)
{
    struct ctx c;
    setup(&c, 1100, 8, 50, 70, 1000, 1100, 64);
    check(&c, 0);
    teardown(&c);
}

Test(xent, uniform_logits_by_hand)
{
    /* h = 0: every logit 0, loss = log V for any target; dh = 0 */
    struct ctx c;
    setup(&c, 5, 3, 2, 2, 0, 0, 65);
    memset(c.h, 0, 6 * 4);
    bt_put(c.be, c.h_, c.h, 6 * 4);
    run(&c, NULL, NULL);
    cr_assert_float_eq(c.losses[0], logf(5), 1e-6);
    cr_assert_float_eq(c.losses[1], logf(5), 1e-6);
    teardown(&c);
}

Test(xent, rejects_bad_positions_and_targets)
{
    struct ctx c;
    setup(&c, 5, 3, 2, 1, 0, 0, 66);
    peso_err err = {{0}};
    int32_t bad = 2;
    bt_put(c.be, c.pos_, &bad, 4);
    cr_assert_eq(c.be->xent(c.be, &c.t, c.h_, 2, c.pos_, c.target_, 1, 1.0f, c.losses_, NULL,
                            NULL, &err),
                 -1);
    cr_assert(strstr(err.msg, "pos[0]=2"), "%s", err.msg);
    bad = 0;
    bt_put(c.be, c.pos_, &bad, 4);
    bad = 5;
    bt_put(c.be, c.target_, &bad, 4);
    cr_assert_eq(c.be->xent(c.be, &c.t, c.h_, 2, c.pos_, c.target_, 1, 1.0f, c.losses_, NULL,
                            NULL, &err),
                 -1);
    cr_assert(strstr(err.msg, "target[0]=5"), "%s", err.msg);
    teardown(&c);
}
