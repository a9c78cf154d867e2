/* Byte-level BPE from a Hugging Face tokenizer.json, encoding text exactly
 * as the tokenizers library does for Llama 3 (and GPT-2 style files):
 *
 *   1. added tokens are matched first, leftmost-longest (tokens with
 *      normalized=false, then those with normalized=true, as tokenizers
 *      does), and the text is split around them;
 *   2. each remaining piece goes through the pre-tokenizer: Split with a
 *      regex and behavior Isolated (PCRE2, UTF + UCP), then ByteLevel
 *      (optional prefix space, optional GPT-2 regex), or a single ByteLevel;
 *   3. each pre-token's bytes are merged by merge rank (with ignore_merges, a
 *      pre-token that is itself in the vocabulary is one token).
 *
 * No special tokens are added around the text (add_special_tokens=False):
 * the prompt is assembled from token ids by the caller. Supported: model
 * type BPE without dropout or subword prefixes/suffixes, merges as "a b"
 * strings or [a, b] pairs, normalizer null, decoder ByteLevel. Anything
 * else is refused at load with a message naming the file and key. */
#ifndef PESO_HF_TOKENIZER_H
#define PESO_HF_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct peso_tok peso_tok;

int peso_tok_load(peso_tok **out, const char *path, peso_err *err);
void peso_tok_free(peso_tok *t);

/* Encodes len bytes of UTF-8 text into *ids (allocated, caller frees) and
 * *n. Invalid UTF-8 is an error naming the byte offset. */
int peso_tok_encode(const peso_tok *t, const char *text, size_t len, int32_t **ids, size_t *n, peso_err *err);
/* Decodes ids to UTF-8 (*text allocated and NUL-terminated, caller frees),
 * as tokenizers' ByteLevel decoder does: byte sequences that are not valid
 * UTF-8 become U+FFFD. skip_special drops special added tokens. */
int peso_tok_decode(const peso_tok *t, const int32_t *ids, size_t n, int skip_special, char **text,
                    size_t *len, peso_err *err);

/* One more than the largest id of the vocabulary and the added tokens. */
int32_t peso_tok_vocab_size(const peso_tok *t);
/* The id of an added token's content or a vocabulary token (in its
 * byte-level spelling, e.g. "Ġthe"); -1 when absent. */
int32_t peso_tok_id(const peso_tok *t, const char *token);
/* The token's text (byte-level spelling for vocabulary tokens); NULL for an
 * id no token has. */
const char *peso_tok_token(const peso_tok *t, int32_t id);

/* Adds a special token (special=true, normalized=false), as
 * tokenizers' add_special_tokens does: an existing added token keeps its
 * id, a vocabulary token becomes special with its id, anything else gets
 * id = peso_tok_vocab_size(). The id is stored in *id. */
int peso_tok_add_special(peso_tok *t, const char *content, int32_t *id, peso_err *err);

/* Writes the tokenizer.json (the loaded file with the added tokens
 * appended) atomically. */
int peso_tok_save(const peso_tok *t, const char *path, peso_err *err);

/* Builds a small byte-level BPE for tiny models: the 256 byte tokens (id =
 * byte value) plus up to n_merges merges learned from texts by repeatedly
 * merging the most frequent adjacent pair (ties: smallest left id, then
 * right id; pairs seen once are not merged), over Llama 3 pre-tokens. The
 * result has the Llama 3 pre-tokenizer, ignore_merges and a ByteLevel
 * decoder, and saves as a tokenizer.json that tokenizers loads. */
int peso_tok_build_small(peso_tok **out, const char *const *texts, size_t n, int n_merges, peso_err *err);

/* The Llama 3 pre-tokenizer pattern. */
extern const char *const peso_tok_llama3_pattern;

#endif
