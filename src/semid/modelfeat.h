/* Item features from a base model (semid.features: model): each item's
 * text, tokenized with the folder's tokenizer.json after a BOS token and
 * cut to max_tokens tokens (BOS included), goes through the model's
 * forward; its feature vector is the mean of the final hidden states over
 * those tokens (peso_llama_hidden_mean). An item without text is the BOS
 * token alone, so such items share one vector and are told apart by the
 * collision level. The base weights only: no LoRA, no added tokens. Runs
 * on the backend the config names (backend.*); items are batched by token
 * length. */
#ifndef PESO_SEMID_MODELFEAT_H
#define PESO_SEMID_MODELFEAT_H

#include "backend/backend.h"
#include "common/err.h"
#include "semid/items.h"

/* Rows x (malloc'd, [items->n, *dim]) in dataset item order, *dim
 * = the model's hidden size. A folder without a BOS token fails on the
 * first item without text, naming it. */
int peso_semid_model_features(const char *dir, int max_tokens, const peso_semid_items *items,
                              const peso_backend_opts *bo, float **x, int *dim, peso_err *err);

#endif
