/* sdlora: the cumulative family (cumulative.h) with learnable magnitudes
 * alpha_i, one per later stage in the model's flat
 * (PESO_METHOD_MAGNITUDES), each starting at 1.0 when its adapter joins
 * the past list. */
#include "method/cumulative.h"

const peso_method peso_method_sdlora = {
    .name = "sdlora",
    .flags = PESO_METHOD_VARIANT | PESO_METHOD_MAGNITUDES,
    .load = peso_cumulative_load,
    .begin = peso_cumulative_start,
    .install = peso_cumulative_install,
    .save = peso_cumulative_save,
};
