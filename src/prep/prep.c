#include "prep/prep.h"

#include <stdlib.h>
#include <string.h>
#include <omp.h>

#include "common/atomic.h"
#include "common/clock.h"
#include "data/dataset.h"
#include "data/raw.h"
#include "data/stats.h"
#include "semid/semid.h"

/* semid's codes go into the dataset file as they are, and the evaluator
 * builds its trie over the file's codes with semid's limit. */
_Static_assert(PESO_SEMID_MAX_LEVELS == PESO_DATASET_MAX_LEVELS,
               "semid and the dataset file disagree on levels");

void peso_prep_dataset_path(const peso_conf *c, char *out, size_t n)
{
    snprintf(out, n, "%s/dataset.h5", c->out_dir);
}

void peso_prep_semid_items(peso_semid_items *it, const peso_raw *raw, const peso_split *split)
{
    size_t n = split->n_items;
    const char **id = peso_malloc((n ? n : 1) * sizeof *id), **text = peso_malloc((n ? n : 1) * sizeof *text);
    size_t *len = peso_malloc((n ? n : 1) * sizeof *len);
    for (size_t i = 0; i < n; i++) {
        int32_t r = split->item_raw[i];
        int has = raw->item_text && (size_t)r < raw->text_cap && raw->item_text[r];
        id[i] = peso_strtab_str(raw->items, r);
        text[i] = has ? raw->item_text[r] : NULL;
        len[i] = has ? raw->item_text_len[r] : 0;
    }
    *it = (peso_semid_items){n, id, text, len, split->item_first_block};
}

void peso_prep_semid_items_free(peso_semid_items *it)
{
    free(it->id);
    free(it->text);
    free((size_t *)it->text_len);
    memset(it, 0, sizeof *it);
}

/* The codes of s as the dataset file takes them. */
static peso_dataset_codes dataset_codes(const peso_semid *s)
{
    peso_dataset_codes d = {s->n_items, s->n_levels, s->codes, {0}, s->imported};
    memcpy(d.level_size, s->level_size, sizeof d.level_size);
    return d;
}

static void report_semid(FILE *log, const peso_semid *s)
{
    if (!log)
        return;
    if (s->imported) {
        fprintf(log, "semantic IDs: imported, %zu items, %d levels, %zu distinct tuples\n", s->n_items,
                s->n_levels, s->distinct_tuples);
        return;
    }
    fprintf(log, "semantic IDs: RQ-VAE, %zu items, %d levels + collision level\n", s->n_items,
            s->n_levels - 1);
    fprintf(log, "  reconstruction MSE: D1 items %.5f, all items %.5f\n", s->fit_report.recon_mse,
            s->all_report.recon_mse);
    for (int l = 0; l < s->n_levels - 1; l++)
        fprintf(log, "  level %d: perplexity %.1f of %d codes, %d used\n", l + 1, s->all_report.perplexity[l],
                s->level_size[l], s->all_report.used_codes[l]);
    fprintf(log, "  collision level: %.2f%% of items needed it (max %d), %zu distinct tuples\n",
            100.0 * s->collision_share, s->level_size[s->n_levels - 1] - 1, s->distinct_tuples);
}

int peso_prep_run(const peso_conf *c, FILE *log, peso_prep_timing *t, peso_err *err)
{
    peso_prep_timing tm = {0};
    peso_raw raw;
    peso_split split = {0};
    peso_semid ids = {0};
    peso_semid_items items = {0};
    char *yaml = NULL;
    int rc = -1;
    double t0 = peso_now();

    if (c->threads > 0)
        omp_set_num_threads((int)c->threads);
    peso_raw_init(&raw);
    if (log)
        fprintf(log, "loading %s data%s%s\n", c->data.format, c->data.reviews[0] ? " from " : "",
                c->data.reviews);
    if (peso_raw_load(&raw, c, err))
        goto out;
    tm.interactions = raw.n;
    tm.bad_lines = raw.n_bad;
    double t1 = peso_now();
    tm.load_s = t1 - t0;
    if (log) {
        fprintf(log, "loaded %zu interactions, %zu users, %zu items in %.2f s\n", raw.n,
                peso_strtab_count(raw.users), peso_strtab_count(raw.items), tm.load_s);
        if (raw.n_bad) {
            fprintf(log, "skipped %zu bad lines (data.skip_bad_lines = %lld):\n", raw.n_bad,
                    (long long)c->data.skip_bad_lines);
            for (size_t i = 0; i < raw.n_bad; i++)
                fprintf(log, "  %s\n", raw.bad_lines[i]);
        }
    }

    peso_split_opts o;
    peso_split_opts_from_conf(&o, c);
    if (peso_split_run(&raw, &o, &split, err))
        goto out;
    double t2 = peso_now();
    tm.split_s = t2 - t1;
    if (log)
        fprintf(log, "split into %d blocks (%s): %zu users, %zu items kept in %.2f s\n", split.n_blocks,
                c->split.mode, split.n_users, split.n_items, tm.split_s);

    if (peso_mkdir_p(c->out_dir, err))
        goto out;
    if (log)
        fflush(log); /* the RQ-VAE's progress lines follow in order */
    peso_prep_semid_items(&items, &raw, &split);
    if (peso_semid_build(&ids, &items, c, log != NULL, err))
        goto out;
    double t3 = peso_now();
    tm.semid_s = t3 - t2;
    report_semid(log, &ids);

    char path[PESO_PATH_MAX], fp[17];
    peso_prep_dataset_path(c, path, sizeof path);
    peso_conf_data_fingerprint(c, fp);
    yaml = peso_conf_dump(c);
    peso_dataset_codes codes = dataset_codes(&ids);
    if (peso_dataset_write(path, &raw, &split, &codes, (int)c->split.window, yaml, fp, err))
        goto out;
    if (peso_stats_write(c->out_dir, &split, err))
        goto out;
    tm.write_s = peso_now() - t3;
    if (log) {
        fprintf(log, "wrote %s and %s/stats.json in %.2f s\n\n", path, c->out_dir, tm.write_s);
        peso_stats_print(log, &split);
    }
    rc = 0;
out:
    free(yaml);
    peso_prep_semid_items_free(&items);
    peso_semid_free(&ids);
    peso_split_free(&split);
    peso_raw_free(&raw);
    if (t)
        *t = tm;
    return rc;
}
