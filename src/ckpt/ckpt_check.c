/* peso_ckpt_check: whether a checkpoint fits the config in hand, with one
 * message that names every field that differs. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ckpt/ckpt.h"

static void targets_text(char *buf, size_t n, unsigned mask)
{
    buf[0] = '\0';
    for (int p = 0; p < PESO_LORA_NPROJ; p++)
        if (mask & (1u << p))
            snprintf(buf + strlen(buf), n - strlen(buf), "%s%s", buf[0] ? "," : "",
                     peso_lora_proj_name((peso_lora_proj)p));
    if (mask & ~PESO_LORA_ALL)
        snprintf(buf + strlen(buf), n - strlen(buf), "%s0x%x", buf[0] ? "," : "", mask & ~PESO_LORA_ALL);
    if (!buf[0])
        snprintf(buf, n, "none");
}

static void add_diff(char *msg, size_t n, int *count, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static void add_diff(char *msg, size_t n, int *count, const char *fmt, ...)
{
    size_t len = strlen(msg);
    if (*count)
        len += (size_t)snprintf(msg + len, len < n ? n - len : 0, "; ");
    va_list ap;
    va_start(ap, fmt);
    if (len < n)
        vsnprintf(msg + len, n - len, fmt, ap);
    va_end(ap);
    (*count)++;
}

static int str_eq(const char *a, const char *b)
{
    return strcmp(a ? a : "", b ? b : "") == 0;
}

int peso_ckpt_check(const peso_ckpt *have, const peso_ckpt_expect *want, peso_err *err)
{
    char msg[PESO_ERR_MSG - 256] = "";
    int n = 0;
    const peso_ckpt_shape *h = &have->shape, *w = &want->shape;
    const struct {
        const char *name;
        int h, w;
    } ints[] = {{"model hidden", h->hidden, w->hidden},       {"model layers", h->layers, w->layers},
                {"model heads", h->heads, w->heads},          {"model kv_heads", h->kv_heads, w->kv_heads},
                {"model head_dim", h->head_dim, w->head_dim}, {"model vocab", h->vocab, w->vocab},
                {"lora rank", h->lora_rank, w->lora_rank}};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++)
        if (ints[i].h != ints[i].w)
            add_diff(msg, sizeof msg, &n, "%s %d vs %d", ints[i].name, ints[i].h, ints[i].w);
    if (h->lora_alpha != w->lora_alpha)
        add_diff(msg, sizeof msg, &n, "lora alpha %.17g vs %.17g", h->lora_alpha, w->lora_alpha);
    if (h->lora_targets != w->lora_targets) {
        char a[128], b[128];
        targets_text(a, sizeof a, h->lora_targets);
        targets_text(b, sizeof b, w->lora_targets);
        add_diff(msg, sizeof msg, &n, "lora targets %s vs %s", a, b);
    }
    if (!str_eq(have->method, want->method))
        add_diff(msg, sizeof msg, &n, "method %s vs %s", have->method ? have->method : "",
                 want->method ? want->method : "");
    if (!str_eq(have->fingerprint, want->fingerprint))
        add_diff(msg, sizeof msg, &n, "data fingerprint %s vs %s", have->fingerprint ? have->fingerprint : "",
                 want->fingerprint ? want->fingerprint : "");
    if (n == 0)
        return 0;
    return peso_errf(err, "%s: checkpoint does not match the config (checkpoint vs config): %s",
                     have->path ? have->path : "checkpoint", msg);
}
