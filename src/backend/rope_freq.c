/* transformers' _compute_default_rope_parameters and
 * _compute_llama3_parameters, each tensor operation done once in float32
 * in the same order, so the frequencies round as HF's do. */
#include "backend/rope_freq.h"

#include <math.h>

static const double two_pi = 6.283185307179586476925;

static int conf_check(const peso_rope_conf *rc, peso_err *err)
{
    if (rc->head_dim < 2 || rc->head_dim % 2 != 0)
        return peso_errf(err, "rope: head_dim=%d, expected an even number >= 2", rc->head_dim);
    if (!(rc->theta > 1.0))
        return peso_errf(err, "rope: rope_theta=%g, expected > 1", rc->theta);
    if (rc->type == PESO_ROPE_DEFAULT)
        return 0;
    if (rc->type != PESO_ROPE_LLAMA3)
        return peso_errf(err, "rope: unknown rope type %d", (int)rc->type);
    if (!(rc->factor >= 1.0))
        return peso_errf(err, "rope_scaling.factor=%g, expected >= 1", rc->factor);
    if (!(rc->high_freq_factor > rc->low_freq_factor) || !(rc->low_freq_factor > 0.0))
        return peso_errf(err,
                         "rope_scaling: low_freq_factor=%g high_freq_factor=%g, expected "
                         "0 < low < high",
                         rc->low_freq_factor, rc->high_freq_factor);
    if (rc->original_max_pos < 1)
        return peso_errf(err, "rope_scaling.original_max_position_embeddings=%d, expected >= 1",
                         rc->original_max_pos);
    return 0;
}

/* Frequencies with wavelength below original/high are kept, above
 * original/low divided by factor, and blended smoothly in between. PyTorch
 * evaluates `scalar / tensor` as reciprocal(tensor) * scalar, in float32. */
static void llama3_scale(const peso_rope_conf *rc, float *inv, int half)
{
    float factor = (float)rc->factor, low = (float)rc->low_freq_factor;
    float old_len = (float)rc->original_max_pos;
    float low_wavelen = (float)(rc->original_max_pos / rc->low_freq_factor);
    float high_wavelen = (float)(rc->original_max_pos / rc->high_freq_factor);
    for (int i = 0; i < half; i++) {
        float wavelen = (1.0f / inv[i]) * (float)two_pi;
        float f = wavelen > low_wavelen ? inv[i] / factor : inv[i];
        if (!(wavelen < high_wavelen) && !(wavelen > low_wavelen)) {
            float smooth = ((1.0f / wavelen) * old_len - low) / (float)(rc->high_freq_factor -
                                                                         rc->low_freq_factor);
            f = (1.0f - smooth) * f / factor + smooth * f;
        }
        inv[i] = f;
    }
}

int peso_rope_inv_freq(const peso_rope_conf *rc, float *inv_freq, peso_err *err)
{
    if (conf_check(rc, err) < 0)
        return -1;
    int half = rc->head_dim / 2;
    float base = (float)rc->theta;
    for (int i = 0; i < half; i++) {
        float expo = (float)(2 * i) / (float)rc->head_dim;
        inv_freq[i] = 1.0f / powf(base, expo);
    }
    if (rc->type == PESO_ROPE_LLAMA3)
        llama3_scale(rc, inv_freq, half);
    return 0;
}
