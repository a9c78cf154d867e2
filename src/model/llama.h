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
 *   the config, grown only when a larger batch arrives.
 *
 * Batches are right-padded: row b holds lens[b] real tokens at positions
 * 0..lens[b]-1 (RoPE positions 0, 1, ...), then padding. Labels follow the
 * Hugging Face convention: labels[b, t] is the token predicted from
 * positions < t (the input ids themselves; the shift happens here), -100
 * where no loss is taken. labels[b, 0] is never used; a label at
 * t > lens[b] would be predicted from padding and is an error. The output
 * head is computed only at label positions. */
#ifndef PESO_MODEL_LLAMA_H
#define PESO_MODEL_LLAMA_H

#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/flat.h"
#include "lora/lora.h"
#include "model/hfconfig.h"

#define PESO_LABEL_IGNORE (-100)
/* Flat view names of the trainable rows appended to the vocabulary. */
#define PESO_LLAMA_EMBED_NEW "model.embed_tokens.weight.new_rows"
#define PESO_LLAMA_HEAD_NEW "lm_head.weight.new_rows"
/* RNG stream of the new rows' init (seeded by peso_llama_opts.seed). */
#define PESO_LLAMA_NEW_ROWS_STREAM 0x4e657752u /* "NewR" */
#define PESO_LLAMA_NEW_ROWS_STD 0.02

typedef struct peso_llama_opts {
    peso_lora_conf lora; /* lora.targets = 0: no LoRA */
    /* Tokens appended to the folder's vocabulary (semantic-ID codes),
     * trainable, initialised from N(0, PESO_LLAMA_NEW_ROWS_STD^2) with the
     * project RNG: embedding rows first, then (untied) head rows. This is
     * not transformers' mean-resizing init. */
    int n_new;
    uint64_t seed; /* LoRA A init and new rows */
} peso_llama_opts;

/* rank 8, alpha 16, all seven projections, no new tokens, seed 42. */
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
    const void *w[PESO_LORA_NPROJ];    /* nn.Linear weights [out, in], in wdt */
} peso_llama_layer;

typedef struct peso_llama_acts peso_llama_acts;

typedef struct peso_llama {
    peso_llama_config cfg; /* vocab_size = base_vocab + n_new */
    char dir[1024];        /* the folder it was loaded from */
    int base_vocab, n_new;
    peso_backend *be; /* not owned */
    peso_dtype wdt;   /* storage of the frozen matrices */
    void *wmem;       /* all frozen weights */
    peso_llama_layer *layers;
    const void *embed, *head; /* [base_vocab, hidden]; head == embed when tied */
    const float *norm;        /* final RMSNorm [hidden] */
    float *inv_freq;          /* [head_dim / 2] */
    peso_lora lora;
    peso_flat flat;
    size_t embed_new_off, head_new_off; /* when n_new > 0; equal when tied */
    float *params, *grads;              /* device [flat.numel] */
    peso_llama_acts *acts;
} peso_llama;

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

/* The loss of a batch (labels required), nothing kept for a backward. */
int peso_llama_forward(peso_llama *m, const peso_llama_batch *b, peso_llama_loss *loss, peso_err *err);
/* Forward and backward: grads += grad_scale * d(loss.sum)/d(params), so
 * grad_scale = 1 / (label tokens of the global batch) gives the gradient
 * of the mean. Only trainable tensors get gradients. */
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

/* PEFT adapter folders (lora/peft.h) into or out of the LoRA views. */
int peso_llama_load_adapter(peso_llama *m, const char *dir, peso_err *err);
int peso_llama_save_adapter(peso_llama *m, const char *dir, const char *base_model, peso_err *err);

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
