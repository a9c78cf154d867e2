/* LoRA adapters in Hugging Face PEFT's folder format, so that an adapter
 * trained here loads with PeftModel.from_pretrained for serving and one
 * trained there loads here:
 *
 *   DIR/adapter_config.json        LoraConfig: peft_type "LORA", r,
 *                                  lora_alpha, target_modules, ...
 *   DIR/adapter_model.safetensors  base_model.model.model.layers.{i}.
 *                                  {self_attn,mlp}.{q,...,down}_proj.
 *                                  lora_{A,B}.weight, A [r, in], B [out, r]
 *
 * Reading accepts only what this implementation computes exactly: plain
 * LoRA on Llama projections with scaling alpha / r. rsLoRA, DoRA, per-
 * module rank or alpha patterns, fan_in_fan_out, biases, layer subsets
 * and modules_to_save are errors naming the file and key, never ignored. */
#ifndef PESO_LORA_PEFT_H
#define PESO_LORA_PEFT_H

#include <stddef.h>

#include "common/err.h"
#include "lora/lora.h"

#define PESO_PEFT_CONFIG "adapter_config.json"
#define PESO_PEFT_WEIGHTS "adapter_model.safetensors"

/* Writes both files into dir (created if needed), each atomically; the
 * weights (float32) come from params, a host buffer with the flat layout
 * of l. base_model is written as base_model_name_or_path (may be NULL:
 * null). */
int peso_peft_write(const char *dir, const peso_lora *l, const float *params, const char *base_model,
                    peso_err *err);

/* Writes the A and B views of buf (host, flat layout of l: parameters,
 * or their gradients) to one F32 safetensors file under their PEFT keys,
 * with __metadata__ {"format": "pt"} as PEFT writes; atomically. */
int peso_peft_write_weights(const char *path, const peso_lora *l, const float *buf, peso_err *err);

/* Reads dir/adapter_config.json into c (rank, alpha, targets), and its
 * base_model_name_or_path into base_model (size n; "" when null) if
 * base_model is not NULL. */
int peso_peft_read_conf(const char *dir, peso_lora_conf *c, char *base_model, size_t n, peso_err *err);

/* Reads the adapter in dir into params (host, flat layout of l): its
 * config must match l->conf (rank, alpha, targets), and the weights file
 * must hold exactly l's keys with their shapes (F32, BF16 or F16). */
int peso_peft_read(const char *dir, const peso_lora *l, float *params, peso_err *err);

#endif
