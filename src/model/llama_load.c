/* Loading a Hugging Face Llama folder onto a backend, and the trainable
 * flat (LoRA + new vocabulary rows + past-adapter magnitudes) that goes
 * with it. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/rope_freq.h"
#include "common/rng.h"
#include "lora/adapter.h"
#include "model/llama_internal.h"
#include "hf/safetensors.h"

void peso_llama_opts_defaults(peso_llama_opts *o)
{
    memset(o, 0, sizeof *o);
    o->lora.rank = 8;
    o->lora.alpha = 16.0;
    o->lora.targets = PESO_LORA_ALL;
    o->seed = 42;
}

static size_t layer_numel(const peso_llama_config *c)
{
    size_t n = 2 * (size_t)c->hidden_size;
    for (int p = 0; p < PESO_LORA_NPROJ; p++) {
        int in, out;
        peso_lora_proj_dims(c, (peso_lora_proj)p, &in, &out);
        n += (size_t)in * (size_t)out;
    }
    return n;
}

size_t peso_llama_base_numel(const peso_llama_config *c)
{
    size_t table = (size_t)c->vocab_size * (size_t)c->hidden_size;
    return table * (c->tie_word_embeddings ? 1 : 2) + (size_t)c->num_hidden_layers * layer_numel(c) +
           (size_t)c->hidden_size;
}

/* ---- frozen weights: one allocation, every tensor 64-byte aligned ---- */

static size_t up64(size_t bytes)
{
    return (bytes + 63) & ~(size_t)63;
}

static void *carve(char *base, size_t *off, size_t numel, peso_dtype dt)
{
    void *p = base ? base + *off : NULL;
    *off += up64(numel * peso_dtype_size(dt));
    return p;
}

/* Sizes (base NULL) or assigns the weight pointers of m, whose dtypes
 * are set (storage_dtypes); returns bytes. */
static size_t weights_layout(peso_llama *m, char *base)
{
    const peso_llama_config *c = &m->cfg;
    size_t off = 0, C = (size_t)c->hidden_size, table = (size_t)m->base_vocab * C;
    m->embed = carve(base, &off, table, m->embed_dt);
    m->head = c->tie_word_embeddings ? m->embed : carve(base, &off, table, m->head_dt);
    m->norm = carve(base, &off, C, PESO_F32);
    for (int l = 0; l < c->num_hidden_layers; l++) {
        peso_llama_layer *ly = &m->layers[l];
        ly->attn_norm = carve(base, &off, C, PESO_F32);
        ly->mlp_norm = carve(base, &off, C, PESO_F32);
        for (int p = 0; p < PESO_LORA_NPROJ; p++) {
            int in, out;
            peso_lora_proj_dims(c, (peso_lora_proj)p, &in, &out);
            ly->w[p] = carve(base, &off, (size_t)in * (size_t)out, ly->wdt[p]);
        }
    }
    return off;
}

static void proj_name(char *name, size_t size, int l, int p)
{
    snprintf(name, size, "model.layers.%d.%s.%s.weight", l, peso_lora_proj_parent((peso_lora_proj)p),
             peso_lora_proj_name((peso_lora_proj)p));
}

/* A frozen matrix stays bf16 when its file stores bf16 and the backend
 * keeps bf16 weights (cuda); anything else is converted to float32. A
 * missing tensor is reported when it is loaded. */
static peso_dtype storage_dtype(const peso_llama *m, const peso_st *st, const char *name)
{
    const peso_st_tensor *t = peso_st_find(st, name);
    return t && !strcmp(t->dtype, "BF16") && peso_backend_supports(m->be, PESO_BF16) ? PESO_BF16 : PESO_F32;
}

static void storage_dtypes(peso_llama *m, const peso_st *st)
{
    const peso_llama_config *c = &m->cfg;
    char name[128];
    m->embed_dt = storage_dtype(m, st, "model.embed_tokens.weight");
    m->head_dt = c->tie_word_embeddings ? m->embed_dt : storage_dtype(m, st, "lm_head.weight");
    for (int l = 0; l < c->num_hidden_layers; l++)
        for (int p = 0; p < PESO_LORA_NPROJ; p++) {
            proj_name(name, sizeof name, l, p);
            m->layers[l].wdt[p] = storage_dtype(m, st, name);
        }
}

struct loader {
    peso_llama *m;
    const peso_st *st;
    void *stage; /* host, the largest tensor in float32 */
};

static int load_tensor(struct loader *ld, const char *name, int ndim, int64_t d0, int64_t d1, peso_dtype dt,
                       const void *dst, peso_err *err)
{
    int64_t dims[2] = {d0, d1};
    size_t n = (size_t)d0 * (size_t)(ndim == 2 ? d1 : 1);
    const peso_st_tensor *t;
    if (peso_st_get(ld->st, name, &t, err) < 0 || peso_st_expect(t, ndim, dims, err) < 0)
        return -1;
    if ((dt == PESO_BF16 ? peso_st_to_bf16(t, ld->stage, err) : peso_st_to_f32(t, ld->stage, err)) < 0)
        return -1;
    return ld->m->be->upload(ld->m->be, (void *)dst, ld->stage, n * peso_dtype_size(dt), err);
}

static int load_layer(struct loader *ld, int l, peso_err *err)
{
    const peso_llama_config *c = &ld->m->cfg;
    peso_llama_layer *ly = &ld->m->layers[l];
    char name[128];
    snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", l);
    if (load_tensor(ld, name, 1, c->hidden_size, 0, PESO_F32, ly->attn_norm, err) < 0)
        return -1;
    snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", l);
    if (load_tensor(ld, name, 1, c->hidden_size, 0, PESO_F32, ly->mlp_norm, err) < 0)
        return -1;
    for (int p = 0; p < PESO_LORA_NPROJ; p++) {
        int in, out;
        peso_lora_proj_dims(c, (peso_lora_proj)p, &in, &out);
        proj_name(name, sizeof name, l, p);
        if (load_tensor(ld, name, 2, out, in, ly->wdt[p], ly->w[p], err) < 0)
            return -1;
    }
    return 0;
}

static int load_weights(peso_llama *m, peso_err *err)
{
    const peso_llama_config *c = &m->cfg;
    peso_st *st;
    if (peso_st_open_dir(&st, m->dir, err) < 0)
        return -1;
    storage_dtypes(m, st);
    size_t wbytes = weights_layout(m, NULL);
    if (m->be->alloc(m->be, &m->wmem, wbytes, err) < 0) {
        peso_st_close(st);
        return peso_err_prefix(err, "%s: frozen weights (%zu bytes)", m->dir, wbytes);
    }
    weights_layout(m, m->wmem);
    size_t biggest = (size_t)m->base_vocab * (size_t)c->hidden_size;
    for (int p = 0; p < PESO_LORA_NPROJ; p++) {
        int in, out;
        peso_lora_proj_dims(c, (peso_lora_proj)p, &in, &out);
        if ((size_t)in * (size_t)out > biggest)
            biggest = (size_t)in * (size_t)out;
    }
    struct loader ld = {m, st, peso_malloc(biggest * sizeof(float))};
    int rc = load_tensor(&ld, "model.embed_tokens.weight", 2, m->base_vocab, c->hidden_size, m->embed_dt,
                         m->embed, err);
    for (int l = 0; l < c->num_hidden_layers && rc == 0; l++)
        rc = load_layer(&ld, l, err);
    if (rc == 0)
        rc = load_tensor(&ld, "model.norm.weight", 1, c->hidden_size, 0, PESO_F32, m->norm, err);
    if (rc == 0 && !c->tie_word_embeddings)
        rc = load_tensor(&ld, "lm_head.weight", 2, m->base_vocab, c->hidden_size, m->head_dt, m->head, err);
    free(ld.stage);
    peso_st_close(st);
    return rc;
}

static int load_rope(peso_llama *m, peso_err *err)
{
    const peso_llama_config *c = &m->cfg;
    const peso_rope_scaling *s = &c->rope_scaling;
    peso_rope_conf rc = {
        .type = s->llama3 ? PESO_ROPE_LLAMA3 : PESO_ROPE_DEFAULT,
        .theta = c->rope_theta,
        .head_dim = c->head_dim,
        .factor = s->factor,
        .low_freq_factor = s->low_freq_factor,
        .high_freq_factor = s->high_freq_factor,
        .original_max_pos = s->original_max_position_embeddings,
    };
    size_t n = (size_t)c->head_dim / 2;
    float *host = peso_malloc(n * sizeof(float));
    int r = peso_rope_inv_freq(&rc, host, err);
    if (r == 0)
        r = m->be->alloc(m->be, (void **)&m->inv_freq, n * sizeof(float), err);
    if (r == 0)
        r = m->be->upload(m->be, m->inv_freq, host, n * sizeof(float), err);
    free(host);
    return r;
}

/* ---- the trainable flat ---- */

static void init_rows(float *rows, size_t n, peso_rng *rng)
{
    for (size_t i = 0; i < n; i++)
        rows[i] = (float)(PESO_LLAMA_NEW_ROWS_STD * peso_rng_normal(rng));
}

static int build_flat(peso_llama *m, const peso_llama_opts *o, peso_err *err)
{
    peso_flat_init(&m->flat);
    if (peso_lora_layout(&m->lora, &o->lora, &m->cfg, &m->flat, err) < 0)
        return -1;
    m->lora_span = m->flat.numel;
    if (m->n_new > 0) {
        int shape[2] = {m->n_new, m->cfg.hidden_size};
        if (peso_flat_add(&m->flat, PESO_LLAMA_EMBED_NEW, 2, shape, &m->embed_new_off, err) < 0)
            return -1;
        m->head_new_off = m->embed_new_off;
        if (!m->cfg.tie_word_embeddings &&
            peso_flat_add(&m->flat, PESO_LLAMA_HEAD_NEW, 2, shape, &m->head_new_off, err) < 0)
            return -1;
    }
    m->n_magnitudes = o->n_magnitudes;
    if (m->n_magnitudes > 0 &&
        peso_flat_add(&m->flat, PESO_LLAMA_MAGNITUDES, 1, &m->n_magnitudes, &m->mag_off, err) < 0)
        return -1;
    size_t bytes = (m->flat.numel ? m->flat.numel : 1) * sizeof(float);
    if (m->be->alloc(m->be, (void **)&m->params, bytes, err) < 0 ||
        m->be->alloc(m->be, (void **)&m->grads, bytes, err) < 0)
        return peso_err_prefix(err, "trainable parameters (%zu floats)", m->flat.numel);
    float *host = peso_calloc(m->flat.numel ? m->flat.numel : 1, sizeof(float));
    peso_lora_init(&m->lora, host, o->seed);
    if (m->n_new > 0) {
        peso_rng rng;
        size_t rows = (size_t)m->n_new * (size_t)m->cfg.hidden_size;
        peso_rng_seed(&rng, o->seed, PESO_LLAMA_NEW_ROWS_STREAM);
        init_rows(host + m->embed_new_off, rows, &rng);
        if (m->head_new_off != m->embed_new_off)
            init_rows(host + m->head_new_off, rows, &rng);
    }
    for (int i = 0; i < m->n_magnitudes; i++)
        host[m->mag_off + i] = 1.0f;
    int rc = m->be->upload(m->be, m->params, host, m->flat.numel * sizeof(float), err);
    free(host);
    return rc;
}

static int check_opts(const peso_llama_opts *o, const char *dir, peso_err *err)
{
    if (o->n_new < 0)
        return peso_errf(err, "%s: %d new tokens, expected >= 0", dir, o->n_new);
    if (o->n_magnitudes < 0)
        return peso_errf(err, "%s: %d past-adapter magnitudes, expected >= 0", dir, o->n_magnitudes);
    if (o->lora.targets)
        return peso_lora_conf_check(&o->lora, dir, err);
    return 0;
}

int peso_llama_load(peso_llama **out, const char *dir, peso_backend *be, const peso_llama_opts *o,
                    peso_err *err)
{
    char path[1100];
    *out = NULL;
    if (strlen(dir) >= sizeof((peso_llama *)0)->dir)
        return peso_errf(err, "model folder path too long: %s", dir);
    if (!peso_backend_supports(be, PESO_F32))
        return peso_errf(err, "%s: backend '%s' does not store f32 weights, which this loader uploads", dir,
                         be->name);
    if (check_opts(o, dir, err) < 0)
        return -1;
    peso_llama *m = peso_calloc(1, sizeof *m);
    snprintf(m->dir, sizeof m->dir, "%s", dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    m->be = be;
    if (peso_llama_config_load(&m->cfg, path, err) < 0 || peso_llama_config_check(&m->cfg, path, err) < 0) {
        free(m);
        return -1;
    }
    if ((long)m->cfg.vocab_size + o->n_new > INT32_MAX / 2) {
        peso_errf(err, "%s: vocabulary %d + %d new tokens is too large", path, m->cfg.vocab_size, o->n_new);
        free(m);
        return -1;
    }
    m->base_vocab = m->cfg.vocab_size;
    m->n_new = o->n_new;
    m->layers = peso_calloc((size_t)m->cfg.num_hidden_layers, sizeof *m->layers);
    if (load_weights(m, err) < 0 || load_rope(m, err) < 0) {
        peso_llama_free(m);
        return -1;
    }
    m->cfg.vocab_size = m->base_vocab + m->n_new;
    if (build_flat(m, o, err) < 0) {
        peso_llama_free(m);
        return -1;
    }
    *out = m;
    return 0;
}

void peso_llama_free(peso_llama *m)
{
    if (!m)
        return;
    peso_llama_acts_free(m);
    peso_llama_scratch_free(m);
    peso_llama_past_free(m);
    m->be->free(m->be, m->wmem);
    m->be->free(m->be, m->inv_freq);
    m->be->free(m->be, m->params);
    m->be->free(m->be, m->grads);
    peso_lora_free(&m->lora);
    peso_flat_free(&m->flat);
    free(m->layers);
    free(m);
}

/* ---- host access to the trainable state ---- */

int peso_llama_get_params(peso_llama *m, float *host, peso_err *err)
{
    return m->be->download(m->be, host, m->params, m->flat.numel * sizeof(float), err);
}

int peso_llama_set_params(peso_llama *m, const float *host, peso_err *err)
{
    return m->be->upload(m->be, m->params, host, m->flat.numel * sizeof(float), err);
}

int peso_llama_get_grads(peso_llama *m, float *host, peso_err *err)
{
    return m->be->download(m->be, host, m->grads, m->flat.numel * sizeof(float), err);
}

int peso_llama_zero_grads(peso_llama *m, peso_err *err)
{
    return m->be->zero(m->be, m->grads, m->flat.numel * sizeof(float), err);
}

int peso_llama_load_adapter(peso_llama *m, const char *dir, peso_err *err)
{
    float *host = peso_malloc((m->flat.numel ? m->flat.numel : 1) * sizeof(float));
    int rc = peso_llama_get_params(m, host, err);
    if (rc == 0)
        rc = peso_lora_adapter_read(dir, &m->lora, host, err);
    if (rc == 0)
        rc = peso_llama_set_params(m, host, err);
    free(host);
    return rc;
}

int peso_llama_save_adapter(peso_llama *m, const char *dir, const char *base_model, peso_err *err)
{
    float *host = peso_malloc((m->flat.numel ? m->flat.numel : 1) * sizeof(float));
    int rc = peso_llama_get_params(m, host, err);
    if (rc == 0)
        rc = peso_lora_adapter_write(dir, &m->lora, host, base_model, err);
    free(host);
    return rc;
}
