/* single: single evolving LoRA, (A_t, B_t) <- (A_{t-1}, B_{t-1}), then
 * plain cross-entropy on D_t. The smallest method: every callback NULL,
 * so the stage inherits v_{t-1} and adds nothing to the loss. */
#include "method/method.h"

const peso_method peso_method_single = {
    .name = "single",
};
