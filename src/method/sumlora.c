/* sumlora: the cumulative family with fixed magnitudes alpha_i = 1
 * (cumulative.h), in the variants all, latest, all+inherit and
 * latest+inherit. */
#include "method/cumulative.h"

const peso_method peso_method_sumlora = {
    .name = "sumlora",
    .flags = PESO_METHOD_VARIANT,
    .load = peso_cumulative_load,
    .begin = peso_cumulative_start,
    .install = peso_cumulative_install,
    .save = peso_cumulative_save,
};
