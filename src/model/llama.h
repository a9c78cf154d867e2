/* Llama-3 as Hugging Face LlamaForCausalLM computes it, with LoRA, on a
 * peso_backend: loading from a model folder, forward over a right-padded
 * batch, the loss on selected label positions, and the backward pass into
 * the trainable parameters only.
 *
 * State, as in llm.c:
 * - frozen base weights in one backend allocation (float32 on the cpu
 *   backend; BF16/F16 files are converted on load) with no gradient
 *   buffer at all;
 * - ONE peso_flat of trainable tensors: every LoRA A/B (named by its PEFT
 *   key, see lora/lora.h) and, when the vocabulary is extended, the new
 *   embedding rows (PESO_LLAMA_EMBED_NEW) and, for an untied head, the
 *   new output-head rows (PESO_LLAMA_HEAD_NEW). params and grads are each
 *   one device buffer of flat.numel floats;
 * - activations in one arena sized by peso_llama_acts_numel from B, T and
 *   the config (plus peso_llama_past_acts_numel for past adapters),
 *   grown only when a larger batch arrives.
 *
 * Batches are right-padded: row b holds lens[b] real tokens at positions
 * 0..lens[b]-1 (RoPE positions 0, 1, ...), then padding. Labels follow the
 * Hugging Face convention: labels[b, t] is the token predicted from
 * positions < t (the input ids themselves; the shift happens here), -100
 * where no loss is taken. labels[b, 0] is never used; a label at
 * t > lens[b] would be predicted from padding and is an error. The output
 * head is computed only at label positions.
 *
 * Continual methods (DESIGN.md "Continual methods") hook into the same
 * passes without the model knowing them:
 * - cumulative family (peso_llama_set_past): frozen past adapters add
 *   sum_i alpha_i Bhat_i Ahat_i to every adapted projection, in every
 *   forward (training, logits, hidden mean, decode);
 * - peso_llama_set_freeze_a: B trained alone (InfLoRA);
 * - the projection hook (peso_llama_set_hook): a method sees every
 *   adapted projection's input and output in the training and observing
 *   passes and its output gradient in the backward (InfLoRA's input
 *   covariance and the output-KL term are written that way, in
 *   src/method/). */
#ifndef PESO_MODEL_LLAMA_H
#define PESO_MODEL_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "common/flat.h"
#include "lora/lora.h"
#include "hf/config.h"

#define PESO_LABEL_IGNORE (-100)
/* Flat view names of the trainable rows appended to the vocabulary. */
#define PESO_LLAMA_EMBED_NEW "model.embed_tokens.weight.new_rows"
#define PESO_LLAMA_HEAD_NEW "lm_head.weight.new_rows"
/* RNG stream of the new rows' init (seeded by peso_llama_opts.seed). */
#define PESO_LLAMA_NEW_ROWS_STREAM 0x4e657752u /* "NewR" */
#define PESO_LLAMA_NEW_ROWS_STD 0.02
/* Flat view of the learnable magnitudes alpha_i of past adapters (SD-LoRA). */
#define PESO_LLAMA_MAGNITUDES "cumulative.magnitudes"

typedef struct peso_llama_opts {
    peso_lora_conf lora; /* lora.targets = 0: no LoRA */
    /* Tokens appended to the folder's vocabulary (semantic-ID codes),
     * trainable, initialised from N(0, PESO_LLAMA_NEW_ROWS_STD^2) with the
     * project RNG: embedding rows first, then (untied) head rows. This is
     * not transformers' mean-resizing init. */
    int n_new;
    /* Learnable magnitudes of past adapters (SD-LoRA): > 0 adds the flat
     * view PESO_LLAMA_MAGNITUDES of n_magnitudes floats, initialised to
     * 1.0, after the LoRA views and the new rows (whose offsets do not
     * move). */
    int n_magnitudes;
    uint64_t seed; /* LoRA A init and new rows */
} peso_llama_opts;

/* rank 8, alpha 16, all seven projections, no new tokens, no magnitudes,
 * seed 42. */
void peso_llama_opts_defaults(peso_llama_opts *o);

typedef struct peso_llama_batch {
    int B, T;
    const int32_t *ids;    /* host [B*T]; padding ids are not read */
    const int32_t *lens;   /* host [B], 0 <= lens[b] <= T */
    const int32_t *labels; /* host [B*T] or NULL (logits only) */
} peso_llama_batch;

typedef struct peso_llama_loss {
    double sum;  /* sum of the per-token cross-entropies */
    long count;  /* label tokens */
    double mean; /* sum / count; 0 when count is 0 */
} peso_llama_loss;

typedef struct peso_llama_layer {
    const float *attn_norm, *mlp_norm; /* [hidden] */
    const void *w[PESO_LORA_NPROJ];    /* nn.Linear weights [out, in], in wdt[p] */
    peso_dtype wdt[PESO_LORA_NPROJ];
} peso_llama_layer;

typedef struct peso_llama_acts peso_llama_acts;

/* Past adapters of the cumulative family (see peso_llama_set_past). */
typedef struct peso_llama_past {
    int n;               /* past adapters; 0 = none */
    int learnable;       /* alpha_i read from the flat's magnitudes */
    float *mem;          /* device [n * lora_span]: Ahat_i, Bhat_i at the views' offsets */
    unsigned char *live; /* host [n * lora.n_modules]: 0 where a norm is 0 */
    float *alpha;        /* host [n]: fixed magnitudes (1.0 when learnable: the device ones scale) */
    float *tmp;          /* device [tmp_rows, rank]: x Ahat_i^T when not kept */
    size_t tmp_rows;
} peso_llama_past;

typedef struct peso_llama peso_llama;

/* Which pass a projection hook is called from. */
typedef enum peso_llama_pass {
    PESO_LLAMA_PASS_LOSS = 0, /* peso_llama_forward */
    PESO_LLAMA_PASS_TRAIN,    /* peso_llama_forward_backward */
    PESO_LLAMA_PASS_OBSERVE,  /* peso_llama_observe */
} peso_llama_pass;

/* One adapted projection of the staged batch, as a hook sees it. Rows
 * are the B*T positions of the right-padded batch (row b * T + t is a
 * real token when t < lens[b]). */
typedef struct peso_llama_site {
    peso_llama_pass pass;
    int layer;
    peso_lora_proj proj;
    const peso_lora_module *mod; /* its adapter (lora.mods[module]) */
    int module;
    int B, T;
    const int32_t *lens;     /* host [B] */
    const int32_t *dev_lens; /* device [B]: the same lengths, for table entries */
    const float *x;          /* device [B*T, in]: the projection's input */
    const float *lu;         /* device [B*T, rank]: x A^T */
    float *y;                /* device [B*T, out]: where the output was added */
} peso_llama_site;

/* A per-projection hook (peso_llama_set_hook). Either callback may be
 * NULL. forward runs after every adapted projection of the LOSS, TRAIN
 * and OBSERVE passes (not logits, hidden mean or decode); it may read x
 * and lu, add to y, and add to m->grads (the trainable gradient of a term
 * whose input is held constant). backward runs in a TRAIN pass's
 * backward with dy = dL/dy [B*T, out], before it flows into the
 * adapter, the weight and x. A callback's error stops the pass. */
typedef struct peso_llama_hook {
    int (*forward)(void *ctx, peso_llama *m, const peso_llama_site *s, peso_err *err);
    int (*backward)(void *ctx, peso_llama *m, const peso_llama_site *s, const float *dy, peso_err *err);
    void *ctx;
} peso_llama_hook;

/* Scratch of peso_llama_logits (the head's logits at selected
 * positions), grown only when a larger call arrives. */
typedef struct peso_llama_scratch {
    float *logits;     /* device [cap_logits] */
    float *host;       /* host [cap_logits] */
    size_t cap_logits; /* floats */
    float *rows;       /* device [cap_rows, hidden]: hidden states gathered for logits */
    int32_t *idx;      /* device [cap_rows]: their positions */
    size_t cap_rows;
} peso_llama_scratch;

struct peso_llama {
    peso_llama_config cfg; /* vocab_size = base_vocab + n_new */
    char dir[1024];        /* the folder it was loaded from */
    int base_vocab, n_new;
    peso_backend *be; /* not owned */
    /* Frozen matrices keep their file's dtype where the backend stores it
     * (bf16 files on the cuda backend); otherwise, and always for the
     * norms, float32. */
    void *wmem; /* all frozen weights */
    peso_llama_layer *layers;
    const void *embed, *head; /* [base_vocab, hidden]; head == embed when tied */
    peso_dtype embed_dt, head_dt;
    const float *norm;        /* final RMSNorm [hidden] */
    float *inv_freq;          /* [head_dim / 2] */
    peso_lora lora;
    peso_flat flat;
    size_t lora_span;                   /* floats of the flat's LoRA part (its first views) */
    size_t embed_new_off, head_new_off; /* when n_new > 0; equal when tied */
    int n_magnitudes;
    size_t mag_off;        /* PESO_LLAMA_MAGNITUDES, when n_magnitudes > 0 */
    float *params, *grads; /* device [flat.numel] */
    int freeze_a;          /* the backward leaves every A's gradient alone */
    peso_llama_past past;
    peso_llama_hook hook; /* forward and backward NULL: none */
    peso_llama_acts *acts;
    peso_llama_scratch scratch;
};

/* Loads dir (config.json, model.safetensors or model.safetensors.index.json)
 * onto be, lays out the trainable flat and initialises it (PEFT init for
 * LoRA, see peso_llama_opts for new rows); grads start at zero. A tied
 * model needs no lm_head.weight (one present is ignored, as transformers
 * does). Missing tensors, wrong shapes, unsupported dtypes and truncated
 * files fail with a message naming the file and tensor. */
int peso_llama_load(peso_llama **out, const char *dir, peso_backend *be, const peso_llama_opts *o,
                    peso_err *err);
void peso_llama_free(peso_llama *m);

/* Frozen parameters of a folder with config c (embedding, layers, norms,
 * and lm_head when untied). */
size_t peso_llama_base_numel(const peso_llama_config *c);
/* Floats of the activation arena for a [B, T] batch: keep = 1 keeps every
 * layer's activations for a backward pass, keep = 0 reuses one layer's
 * (forward only). */
size_t peso_llama_acts_numel(const peso_llama_config *c, const peso_lora_conf *l, int B, int T, int keep);
/* Floats of the backward scratch (activation gradients) for [B, T]. */
size_t peso_llama_grad_acts_numel(const peso_llama_config *c, const peso_lora_conf *l, int B, int T);
/* Floats past adapters add to the arena of peso_llama_acts_numel:
 * n_past_kept past adapters whose x Ahat_i^T [B*T, rank] is kept per
 * module for the magnitudes' gradient (learnable magnitudes with keep = 1;
 * 0 otherwise: a forward-only pass uses one model-owned [B*T, rank]
 * scratch). */
size_t peso_llama_past_acts_numel(const peso_llama_config *c, const peso_lora_conf *l, int B, int T, int keep,
                                  int n_past_kept);

/* The loss of a batch (labels required), nothing kept for a backward. */
int peso_llama_forward(peso_llama *m, const peso_llama_batch *b, peso_llama_loss *loss, peso_err *err);
/* Forward and backward: grads += grad_scale * d(loss.sum)/d(params), so
 * grad_scale = 1 / (label tokens of the global batch) gives the gradient
 * of the mean (plus what the hook adds). Only trainable tensors get
 * gradients. */
int peso_llama_forward_backward(peso_llama *m, const peso_llama_batch *b, float grad_scale,
                                peso_llama_loss *loss, peso_err *err);
int peso_llama_zero_grads(peso_llama *m, peso_err *err);
/* Label tokens of a batch (labels[b, t] != -100 for 1 <= t <= lens[b]),
 * known before the pass, so that grad_scale can be 1 / the global count. */
long peso_llama_count_labels(const peso_llama_batch *b);

/* Logits over the whole vocabulary at n_pos selected token positions
 * pos[i] = b * T + t (host) into out (host [n_pos, cfg.vocab_size]). */
int peso_llama_logits(peso_llama *m, const peso_llama_batch *b, const int32_t *pos, int n_pos, float *out,
                      peso_err *err);

/* Mean over each row's lens[b] real tokens of the final hidden state
 * (after the final RMSNorm: transformers' LlamaModel last_hidden_state
 * averaged under the attention mask) into out (host [B, hidden]). The
 * LoRA adapters and new rows loaded in m take part, as in the training
 * forward; a model loaded with lora.targets = 0 gives the base model's.
 * Every row needs 1..T tokens. */
int peso_llama_hidden_mean(peso_llama *m, const peso_llama_batch *b, float *out, peso_err *err);

/* Host copies of the trainable state ([flat.numel] floats). */
int peso_llama_get_params(peso_llama *m, float *host, peso_err *err);
int peso_llama_set_params(peso_llama *m, const float *host, peso_err *err);
int peso_llama_get_grads(peso_llama *m, float *host, peso_err *err);

/* PEFT adapter folders (lora/adapter.h) into or out of the LoRA views. */
int peso_llama_load_adapter(peso_llama *m, const char *dir, peso_err *err);
int peso_llama_save_adapter(peso_llama *m, const char *dir, const char *base_model, peso_err *err);

/* ---- continual methods ---- */

/* Cumulative family (paper eq. 5): every adapted projection becomes
 *   y = x W0^T + sum_i alpha_i (x Ahat_i^T) Bhat_i^T + scaling (x A^T) B^T
 * with Ahat_i = A_i / ||A_i||_F and Bhat_i = B_i / ||B_i||_F, each
 * module normalised by its own norms; a module whose A_i or B_i is all
 * zero contributes nothing; no LoRA scaling on past terms. past[i] is a
 * host buffer with m's flat layout, of which only the LoRA views are
 * read; they are normalised on the host (double) and copied to device
 * memory owned by m, frozen: they have no gradient and are not part of
 * the flat. alpha: host [n_past] fixed magnitudes (SumLoRA: 1.0), or NULL
 * for learnable ones, alpha_i = params[mag_off + i], which needs
 * n_past <= n_magnitudes; the backward then ADDS dL/dalpha_i into
 * grads[mag_off + i] (other magnitudes untouched). The products read the
 * magnitudes where they live, on the device (peso_gemm.alpha_dev): no
 * pass downloads them. n_past = 0 removes the past adapters. */
int peso_llama_set_past(peso_llama *m, int n_past, const float *const *past, const float *alpha,
                        peso_err *err);

/* freeze = 1: the backward computes no gradient for any A (grads of the A
 * views stay as they were, for every term); B's as before. */
int peso_llama_set_freeze_a(peso_llama *m, int freeze);

/* The hook of the next passes (copied; NULL or both callbacks NULL:
 * none). */
void peso_llama_set_hook(peso_llama *m, const peso_llama_hook *h);

/* A forward of the decoder layers over b (labels ignored, no head and no
 * loss) that only calls the hook, in PESO_LLAMA_PASS_OBSERVE: for
 * statistics of the modules' inputs. */
int peso_llama_observe(peso_llama *m, const peso_llama_batch *b, peso_err *err);

/* ---- batch files ----
 * HDF5 with int datasets /input_ids [B, T], /attention_mask [B, T]
 * (1 = real token, right padding: ones then zeros) and optionally
 * /labels [B, T]. */
typedef struct peso_llama_batch_file {
    peso_llama_batch batch; /* points into the arrays below */
    int32_t *ids, *mask, *lens, *labels;
} peso_llama_batch_file;

int peso_llama_batch_read(peso_llama_batch_file *f, const char *path, peso_err *err);
void peso_llama_batch_file_free(peso_llama_batch_file *f);
/* Row lengths from a right-padded attention mask; a 0 followed by a 1 or
 * a value other than 0/1 is an error naming `where`, row and column. */
int peso_llama_lens_from_mask(const int32_t *mask, int B, int T, int32_t *lens, const char *where,
                              peso_err *err);

#endif
