/* A peso_lora's A and B matrices as a Hugging Face PEFT adapter folder
 * (the format: hf/peft.h). These calls describe l's modules and the flat
 * layout of its buffer to the format; every file name, key, refusal and
 * error message is the format's. */
#ifndef PESO_LORA_ADAPTER_H
#define PESO_LORA_ADAPTER_H

#include <stddef.h>

#include "common/err.h"
#include "lora/lora.h"

/* Writes adapter_config.json and adapter_model.safetensors into dir
 * (created if needed); the weights come from params, a host buffer with
 * the flat layout of l. base_model is written as base_model_name_or_path
 * (may be NULL: null). */
int peso_lora_adapter_write(const char *dir, const peso_lora *l, const float *params, const char *base_model,
                            peso_err *err);

/* Writes the A and B views of buf (host, flat layout of l: parameters,
 * or their gradients) to one safetensors file under their PEFT keys. */
int peso_lora_adapter_write_weights(const char *path, const peso_lora *l, const float *buf, peso_err *err);

/* Reads dir/adapter_config.json into c (rank, alpha, targets), and its
 * base_model_name_or_path into base_model (size n; "" when null) if
 * base_model is not NULL. */
int peso_lora_adapter_read_conf(const char *dir, peso_lora_conf *c, char *base_model, size_t n,
                                peso_err *err);

/* Reads the adapter in dir into params (host, flat layout of l): its
 * config must match l->conf, and its weights l's modules and shapes. */
int peso_lora_adapter_read(const char *dir, const peso_lora *l, float *params, peso_err *err);

#endif
