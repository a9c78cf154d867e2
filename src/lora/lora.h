/* LoRA adapters on the projections of a Llama model, as Hugging Face PEFT
 * defines them: for a targeted nn.Linear with weight W [out, in],
 *
 *     y = x W^T + scaling * (x A^T) B^T,   A [r, in], B [out, r],
 *     scaling = alpha / r   (no dropout, no rsLoRA, no DoRA),
 *
 * with PEFT's default init: A by kaiming_uniform_(a = sqrt(5)), which is
 * U(-1/sqrt(in), 1/sqrt(in)), and B = 0, so a fresh adapter leaves the
 * model unchanged. The A and B matrices of every module are views in one
 * peso_flat named by their PEFT keys
 * (base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight), so
 * the parameters, their gradients and the optimizer moments are each one
 * buffer, and a file written under those names is an adapter PEFT loads
 * (lora/adapter.h). */
#ifndef PESO_LORA_LORA_H
#define PESO_LORA_LORA_H

#include <stddef.h>
#include <stdint.h>

#include "common/flat.h"
#include "common/err.h"
#include "hf/config.h"
#include "hf/peft.h"

/* The seven linear projections of a Llama decoder layer, in the order the
 * flat lays them out within a layer: hf/peft.h's projection numbers. */
typedef enum peso_lora_proj {
    PESO_LORA_Q = 0,
    PESO_LORA_K,
    PESO_LORA_V,
    PESO_LORA_O,
    PESO_LORA_GATE,
    PESO_LORA_UP,
    PESO_LORA_DOWN,
    PESO_LORA_NPROJ
} peso_lora_proj;

#define PESO_LORA_ALL ((1u << PESO_LORA_NPROJ) - 1u)
/* Longest PEFT key, with room for a large layer index. */
#define PESO_LORA_KEY_MAX PESO_PEFT_KEY_MAX

typedef struct peso_lora_conf {
    int rank;         /* r >= 1 */
    double alpha;     /* lora_alpha */
    unsigned targets; /* bit (1u << proj) per adapted projection; 0 = no LoRA */
} peso_lora_conf;

/* One adapted projection. Offsets are in floats from the start of a
 * buffer with the flat's layout. */
typedef struct peso_lora_module {
    int layer;
    peso_lora_proj proj;
    int in, out;         /* nn.Linear in_features, out_features */
    size_t a_off, b_off; /* A [rank, in], B [out, rank] */
} peso_lora_module;

typedef struct peso_lora {
    peso_lora_conf conf;
    float scaling; /* alpha / rank, rounded once to float32 as PyTorch does */
    int n_layers;
    int n_modules;
    peso_lora_module *mods; /* layer-major, projections in enum order */
    int *index;             /* [n_layers * PESO_LORA_NPROJ]: module index or -1 */
} peso_lora;

/* PEFT / transformers names: "q_proj" ... "down_proj", and the submodule
 * that holds each: "self_attn" or "mlp". */
const char *peso_lora_proj_name(peso_lora_proj p);
const char *peso_lora_proj_parent(peso_lora_proj p);
/* Accepts the short ("q", "gate") or the PEFT ("q_proj") name; -1 if
 * neither. */
int peso_lora_proj_from_name(const char *s, peso_lora_proj *p);
/* A comma-separated list of projection names ("q,k,v,o,gate,up,down" or
 * "q_proj,v_proj"; "all" for all seven) into a target mask. */
int peso_lora_targets_parse(const char *list, unsigned *mask, peso_err *err);
/* The in and out features of projection p in the model c. */
void peso_lora_proj_dims(const peso_llama_config *c, peso_lora_proj p, int *in, int *out);

/* PEFT's scaling: alpha / rank. */
double peso_lora_scaling(const peso_lora_conf *c);
/* rank >= 1, alpha finite and > 0, targets within PESO_LORA_ALL; `where`
 * names the source in messages. */
int peso_lora_conf_check(const peso_lora_conf *c, const char *where, peso_err *err);
/* A and B entries of all modules (no alignment padding). */
size_t peso_lora_numel(const peso_lora_conf *c, const peso_llama_config *mc);

/* Adds the A and B views of every targeted projection of every layer of
 * mc to flat (named by their PEFT keys) and fills l. */
int peso_lora_layout(peso_lora *l, const peso_lora_conf *c, const peso_llama_config *mc, peso_flat *flat,
                     peso_err *err);
void peso_lora_free(peso_lora *l);
/* The module adapting projection p of layer, or NULL when not targeted. */
const peso_lora_module *peso_lora_find(const peso_lora *l, int layer, peso_lora_proj p);

/* PEFT's init on a host buffer with the flat's layout: every A from
 * U(-1/sqrt(in), 1/sqrt(in)) drawn from the project RNG (seed, stream
 * PESO_LORA_RNG_STREAM), in module order and row-major within A; every B
 * zero. */
#define PESO_LORA_RNG_STREAM 0x4c6f5241u /* "LoRA" */
void peso_lora_init(const peso_lora *l, float *params, uint64_t seed);
/* Overwrites every B with N(0, std^2) draws from the project RNG (seed,
 * stream PESO_LORA_B_RNG_STREAM), in module order and row-major within B;
 * A is left alone. An adapter that changes the model's outputs from the
 * start, as PEFT's init_lora_weights=False gives (there B keeps
 * nn.Linear's uniform init; here it is normal with a chosen std). */
#define PESO_LORA_B_RNG_STREAM 0x4c6f5242u /* "LoRB" */
void peso_lora_init_b_normal(const peso_lora *l, float *params, uint64_t seed, double std);

/* The PEFT key of a module's A (which = 'A') or B (which = 'B') matrix:
 * base_model.model.model.layers.{layer}.{parent}.{proj}.lora_{which}.weight */
void peso_lora_key(char *buf, size_t n, int layer, peso_lora_proj p, char which);

#endif
