/* Tiny Llama models made from nothing, for tests and the CPU demo: a
 * complete Hugging Face folder (config.json, model.safetensors,
 * tokenizer.json, tokenizer_config.json, special_tokens_map.json,
 * generation_config.json) that transformers' LlamaForCausalLM and
 * AutoTokenizer load, with random weights drawn from a seed.
 *
 * The architecture is Llama 3.2's (llama3 rope scaling, theta 500000,
 * grouped-query attention, RMSNorm eps 1e-5, float32 weights); only the
 * sizes shrink:
 *   tiny:  hidden 64, 2 layers, 4 heads, 2 kv heads, intermediate 192,
 *          tied output head (as Llama-3.2-1B);
 *   small: hidden 512, 8 layers, 8 heads, 4 kv heads, intermediate 1408,
 *          untied output head (so the untied path is exercised too),
 *          about 24M parameters.
 * Weights as transformers' _init_weights: normal(0, 0.02) for every linear
 * and embedding weight, ones for RMSNorm weights. Each tensor draws from
 * its own stream (seed, hash of its name), so tensors that two folders
 * share by name and shape are identical, and an embedding's first rows do
 * not change when code tokens are added after them.
 *
 * The tokenizer is a byte-level BPE over the 256 bytes with merges learned
 * from the prompt's fixed text (model/prompt.h), the Llama 3 pre-tokenizer,
 * and the special tokens <|begin_of_text|> and <|end_of_text|> (bos and
 * eos). With codes, the semantic-ID tokens <a_0>.. follow them; by default
 * the trainer adds them. The tokenizer adds no BOS by itself (no
 * post-processor): prompts are assembled from ids, BOS included. */
#ifndef PESO_MODEL_INIT_H
#define PESO_MODEL_INIT_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "hf/config.h"
#include "hf/tokenizer.h"

/* Cap on learned merges; the prompt text yields fewer (pairs seen once
 * are not merged). */
#define PESO_INIT_MAX_MERGES 1024
#define PESO_INIT_STD 0.02

typedef struct peso_init_opts {
    const char *preset; /* "tiny" or "small" */
    uint64_t seed;
    int with_codes;
    int levels, codebook; /* code tokens when with_codes */
    int force;            /* write into a non-empty folder */
} peso_init_opts;

/* What peso_init_write wrote. */
typedef struct peso_init_report {
    peso_llama_config config;
    size_t n_params;
    size_t n_learned; /* tokens learned by merges, beyond the 256 bytes */
} peso_init_report;

/* Shapes and rope of a preset; vocab_size, bos and eos are left for the
 * tokenizer to fill. */
int peso_init_preset(peso_llama_config *c, const char *preset, peso_err *err);
/* The tokenizer init writes: with_codes adds levels x codebook code
 * tokens after the two special tokens. */
int peso_init_tokenizer(peso_tok **out, int with_codes, int levels, int codebook, peso_err *err);
/* Writes the model folder dir (created when absent). A non-empty dir is
 * refused unless o->force; every file goes to a temporary name and is
 * renamed into place. rep may be NULL. */
int peso_init_write(const char *dir, const peso_init_opts *o, peso_init_report *rep, peso_err *err);

/* `peso-model init ...`; argv[0] is "init". Returns the exit status. */
int peso_model_init_main(int argc, char **argv);

#endif
