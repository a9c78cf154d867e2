/* The config.json of a Hugging Face Llama model folder: every field that
 * changes the math of LlamaForCausalLM. Absent fields take the defaults of
 * transformers' LlamaConfig. Both the transformers 4 layout (rope_theta and
 * rope_scaling at the top level, torch_dtype) and the transformers 5 layout
 * (rope_parameters holding rope_theta and the scaling, dtype) are read.
 * Anything that would silently change the model (another architecture or
 * model_type, a rope scaling other than llama3, biases, an activation other
 * than silu) is an error naming the file and key. */
#ifndef PESO_HF_CONFIG_H
#define PESO_HF_CONFIG_H

#include "common/err.h"

#define PESO_MAX_EOS 8
#define PESO_DTYPE_NAME 16

typedef struct peso_rope_scaling {
    int llama3; /* 0: plain RoPE; 1: llama3 frequency scaling */
    double factor;
    double low_freq_factor;
    double high_freq_factor;
    int original_max_position_embeddings;
} peso_rope_scaling;

typedef struct peso_llama_config {
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads; /* defaults to num_attention_heads */
    int head_dim;            /* defaults to hidden_size / num_attention_heads */
    double rms_norm_eps;
    double rope_theta;
    peso_rope_scaling rope_scaling;
    int tie_word_embeddings;
    int max_position_embeddings;
    int bos_token_id; /* -1 when null */
    int eos_token_ids[PESO_MAX_EOS];
    int n_eos;                   /* config.json holds an int, a list or null (0) */
    char dtype[PESO_DTYPE_NAME]; /* torch_dtype / dtype: "bfloat16", ...; "" if absent */
} peso_llama_config;

/* transformers' LlamaConfig defaults (Llama-2-7B shapes). */
void peso_llama_config_defaults(peso_llama_config *c);
int peso_llama_config_load(peso_llama_config *c, const char *path, peso_err *err);
/* Checks the relations the model relies on (positive sizes, heads divisible
 * by kv heads, ...); `where` names the source in messages. */
int peso_llama_config_check(const peso_llama_config *c, const char *where, peso_err *err);
/* Writes config.json (keys sorted, 2-space indent, as transformers saves
 * it) atomically; loadable by transformers' LlamaConfig. */
int peso_llama_config_write(const peso_llama_config *c, const char *path, peso_err *err);

#endif
