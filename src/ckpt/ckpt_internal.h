/* What the files of src/ckpt share and no caller of ckpt.h needs. */
#ifndef PESO_CKPT_INTERNAL_H
#define PESO_CKPT_INTERNAL_H

#include "ckpt/ckpt.h"

/* "final" or "partial": the kind attribute's text in the file. */
const char *peso_ckpt_kind_name(peso_ckpt_kind k);

#endif
