/* pretrain: no training after stage 1; every stage is evaluated with the
 * stage-1 model (the paper's "Pretrain" row). */
#include "method/method.h"

const peso_method peso_method_pretrain = {
    .name = "pretrain",
    .flags = PESO_METHOD_FROZEN,
};
