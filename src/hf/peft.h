/* Hugging Face PEFT's LoRA adapter folder for Llama models, so that an
 * adapter trained here loads with PeftModel.from_pretrained for serving
 * and one trained there loads here:
 *
 *   DIR/adapter_config.json        LoraConfig: peft_type "LORA", r,
 *                                  lora_alpha, target_modules, ...
 *   DIR/adapter_model.safetensors  base_model.model.model.layers.{i}.
 *                                  {self_attn,mlp}.{q,...,down}_proj.
 *                                  lora_{A,B}.weight, A [r, in], B [out, r]
 *
 * Reading accepts only plain LoRA on the Llama projections with scaling
 * alpha / r. rsLoRA, DoRA, per-module rank or alpha patterns,
 * fan_in_fan_out, biases, layer subsets and modules_to_save are errors
 * naming the file and key, never ignored.
 *
 * The format knows projections by number (0 .. PESO_PEFT_NPROJ - 1, the
 * order below) and an adapter's tensors by where they lie in a host
 * float buffer (peso_peft_layout); whoever owns the buffer (lora/) says
 * where. */
#ifndef PESO_HF_PEFT_H
#define PESO_HF_PEFT_H

#include <stddef.h>

#include "common/err.h"

#define PESO_PEFT_CONFIG "adapter_config.json"
#define PESO_PEFT_WEIGHTS "adapter_model.safetensors"

/* The linear projections of a transformers LlamaDecoderLayer, in the
 * order of their numbers and of the bits of a target mask: q_proj,
 * k_proj, v_proj, o_proj (under self_attn), gate_proj, up_proj,
 * down_proj (under mlp). */
#define PESO_PEFT_NPROJ 7
#define PESO_PEFT_ALL ((1u << PESO_PEFT_NPROJ) - 1u)
/* Longest tensor key, with room for a large layer index. */
#define PESO_PEFT_KEY_MAX 96

/* "q_proj" ... "down_proj"; "?" for a number out of range. */
const char *peso_peft_proj_name(int proj);
/* The submodule that holds the projection: "self_attn" or "mlp". */
const char *peso_peft_proj_parent(int proj);
/* The number of a projection name ("q_proj"), or -1. */
int peso_peft_proj_from_name(const char *name);
/* The key of a module's A (which = 'A') or B (which = 'B') matrix:
 * base_model.model.model.layers.{layer}.{parent}.{proj}.lora_{which}.weight */
void peso_peft_key(char *buf, size_t n, int layer, int proj, char which);

/* What adapter_config.json says that changes the math. */
typedef struct peso_peft_conf {
    int rank;         /* r */
    double alpha;     /* lora_alpha */
    unsigned targets; /* bit (1u << proj) per targeted projection */
} peso_peft_conf;

/* One adapted projection; offsets are in floats from the start of the
 * buffer passed with the layout. */
typedef struct peso_peft_module {
    int layer;
    int proj;
    int in, out;         /* nn.Linear in_features, out_features */
    size_t a_off, b_off; /* A [rank, in], B [out, rank] */
} peso_peft_module;

/* An adapter's config and its modules. */
typedef struct peso_peft_layout {
    peso_peft_conf conf;
    int n_layers; /* of the model, named in messages */
    int n_modules;
    const peso_peft_module *mods;
} peso_peft_layout;

/* Writes both files into dir (created if needed), each atomically: the
 * weights first, so a config on disk implies complete weights. The
 * weights (float32) come from params; base_model is written as
 * base_model_name_or_path (may be NULL: null). */
int peso_peft_write(const char *dir, const peso_peft_layout *a, const float *params, const char *base_model,
                    peso_err *err);

/* Writes the A and B matrices of a (taken from buf: parameters, or their
 * gradients) to one F32 safetensors file under their keys, with
 * __metadata__ {"format": "pt"} as PEFT writes; atomically. */
int peso_peft_write_weights(const char *path, const peso_peft_layout *a, const float *buf, peso_err *err);

/* Reads dir/adapter_config.json into c, and its base_model_name_or_path
 * into base_model (size n; "" when null) if base_model is not NULL. */
int peso_peft_read_conf(const char *dir, peso_peft_conf *c, char *base_model, size_t n, peso_err *err);

/* Reads the adapter in dir into params: its config must equal a->conf
 * (rank, alpha, targets), and the weights file must hold exactly a's keys
 * with their shapes (F32, BF16 or F16). */
int peso_peft_read(const char *dir, const peso_peft_layout *a, float *params, peso_err *err);

#endif
