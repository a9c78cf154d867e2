/* The items semantic IDs are made for, in dataset item order: what the
 * caller (prep/) takes from its data and hands to semid, so that semid
 * needs no data/ types. Item i's features come from its text, the RQ-VAE
 * is fitted on the items first kept in block 1, and ids name the items in
 * an imported `.index.json`, an embeddings file's /ids and messages. */
#ifndef PESO_SEMID_ITEMS_H
#define PESO_SEMID_ITEMS_H

#include <stddef.h>
#include <stdint.h>

typedef struct peso_semid_items {
    size_t n;
    const char **id;            /* [n] original item ids, distinct */
    const char **text;          /* [n] item text, NULL where none */
    const size_t *text_len;     /* [n] bytes of text[i] */
    const int32_t *first_block; /* [n] 1-based block the item was first kept in */
} peso_semid_items;

#endif
