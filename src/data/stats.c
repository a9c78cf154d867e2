#include "data/stats.h"

#include <stdlib.h>
#include <string.h>

#include "common/atomic.h"
#include "common/json.h"

static void put_int(cJSON *o, const char *key, int64_t v)
{
    peso_json_add(o, key, peso_json_int(v));
}

static cJSON *block_json(const peso_block *b)
{
    cJSON *o = peso_json_object();
    put_int(o, "block", b->k);
    put_int(o, "users", b->st.users);
    put_int(o, "new_users", b->st.new_users);
    put_int(o, "items", b->st.items);
    put_int(o, "new_items", b->st.new_items);
    put_int(o, "interactions", b->st.interactions);
    peso_json_add(o, "avg_seq_len", peso_json_float(b->st.avg_seq_len));
    peso_json_add(o, "sparsity", peso_json_float(b->st.sparsity));
    put_int(o, "train_pairs", b->st.train_pairs);
    put_int(o, "valid_pairs", (int64_t)b->valid.n);
    put_int(o, "test_pairs", (int64_t)b->test.n);
    return o;
}

char *peso_stats_json(const peso_split *s)
{
    cJSON *root = peso_json_object();
    cJSON *blocks = peso_json_array();
    for (int k = 0; k < s->n_blocks; k++)
        peso_json_push(blocks, block_json(&s->b[k]));
    peso_json_add(root, "blocks", blocks);
    cJSON *tot = peso_json_object();
    put_int(tot, "users", (int64_t)s->n_users);
    put_int(tot, "items", (int64_t)s->n_items);
    put_int(tot, "interactions", s->total_interactions);
    peso_json_add(root, "total", tot);
    char *txt = peso_json_print_line(root);
    cJSON_Delete(root);
    return txt;
}

int peso_stats_write(const char *out_dir, const peso_split *s, peso_err *err)
{
    char path[PESO_PATH_MAX];
    if ((size_t)snprintf(path, sizeof path, "%s/stats.json", out_dir) >= sizeof path)
        return peso_errf(err, "%s: output directory path too long", out_dir);
    char *txt = peso_stats_json(s);
    int rc = peso_write_file_atomic(path, txt, strlen(txt), err);
    free(txt);
    return rc;
}

void peso_stats_print(FILE *f, const peso_split *s)
{
    int64_t train = 0;
    fprintf(f, "%-6s %9s %10s %9s %10s %13s %12s %9s %12s\n", "Block", "Users", "New Users", "Items",
            "New Items", "Interactions", "Avg Seq Len", "Sparsity", "Train pairs");
    for (int k = 0; k < s->n_blocks; k++) {
        const peso_block_stats *st = &s->b[k].st;
        char name[16];
        snprintf(name, sizeof name, "D%d", s->b[k].k);
        fprintf(f, "%-6s %9lld %10lld %9lld %10lld %13lld %12.2f %9.4f %12lld\n", name, (long long)st->users,
                (long long)st->new_users, (long long)st->items, (long long)st->new_items,
                (long long)st->interactions, st->avg_seq_len, st->sparsity, (long long)st->train_pairs);
        train += st->train_pairs;
    }
    char name[16];
    snprintf(name, sizeof name, "D1:%d", s->n_blocks);
    fprintf(f, "%-6s %9zu %10s %9zu %10s %13lld %12s %9s %12lld\n", name, s->n_users, "NA", s->n_items, "NA",
            (long long)s->total_interactions, "NA", "NA", (long long)train);
}
