/* Dependency-free text hashing encoder: lower-cased alphanumeric word
 * unigrams and bigrams hashed (signed feature hashing) into `dim` buckets,
 * log(1 + tf) weights, L2-normalised. Items whose text shares words get
 * nearby vectors, which is what the RQ-VAE needs to give them shared code
 * prefixes. Empty text gives the zero vector. */
#ifndef PESO_SEMID_TEXTENC_H
#define PESO_SEMID_TEXTENC_H

#include <stddef.h>

void peso_textenc(const char *text, size_t len, float *out, int dim);

#endif
