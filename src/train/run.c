/* Opening a run: the method of the config (method/method.h), the dataset (prepared when
 * needed), the model folder (generated when model.path is ""), the
 * semantic-ID tokens added to its tokenizer and the model loaded with
 * them as trainable new rows. */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "common/atomic.h"
#include "common/file.h"
#include "prep/prep.h"
#include "model/init.h"
#include "train/train.h"

/* The dataset of c, made by peso-prep's code when missing or stale. */
static int open_dataset(peso_run *r, peso_err *err)
{
    const peso_conf *c = r->c;
    char path[PESO_CONF_PATH + 32], have[64], want[17];
    peso_prep_dataset_path(c, path, sizeof path);
    peso_conf_data_fingerprint(c, want);
    int fresh = peso_file_exists(path) && peso_dataset_read_fingerprint(path, have, sizeof have, err) == 0 &&
                strcmp(have, want) == 0;
    if (!fresh) {
        if (r->log)
            fprintf(r->log, "peso-train: %s %s; preparing it\n", path,
                    peso_file_exists(path) ? "was made from another data config" : "does not exist");
        peso_prep_timing t;
        if (peso_prep_run(c, r->log, &t, err) < 0)
            return -1;
    }
    if (peso_dataset_read(path, &r->d, err) < 0)
        return -1;
    r->n_blocks = r->d.split.n_blocks;
    return 0;
}

/* model.path, or the built-in model generated once under out_dir. */
static int model_folder(peso_run *r, peso_err *err)
{
    const peso_conf *c = r->c;
    if (c->model.path[0]) {
        snprintf(r->model_dir, sizeof r->model_dir, "%s", c->model.path);
        return 0;
    }
    snprintf(r->model_dir, sizeof r->model_dir, "%s/model-%s-%llu", c->out_dir, c->model.preset,
             (unsigned long long)c->seed);
    char cfg[sizeof r->model_dir + 16];
    snprintf(cfg, sizeof cfg, "%s/config.json", r->model_dir);
    if (peso_file_exists(cfg))
        return 0;
    peso_init_opts o = {.preset = c->model.preset, .seed = c->seed, .force = 1};
    peso_init_report rep;
    if (peso_init_write(r->model_dir, &o, &rep, err) < 0)
        return peso_err_prefix(err, "generating the built-in model");
    if (r->log)
        fprintf(r->log, "peso-train: generated the %s model (%zu parameters) in %s\n", c->model.preset,
                rep.n_params, r->model_dir);
    return 0;
}

/* Adds <a_0>.. for every level and code of the dataset; *n_new = how many
 * were not in the tokenizer. They must all be new (trainable rows after
 * the folder's vocabulary) or all be there already. */
static int add_code_tokens(peso_run *r, int vocab, int *n_new, peso_err *err)
{
    int total = 0, added = 0;
    if (peso_tok_vocab_size(r->tok) != vocab)
        return peso_errf(err, "%s: tokenizer.json has %d tokens but config.json's vocab_size is %d; the code "
                              "tokens would not get the rows after the vocabulary",
                         r->model_dir, (int)peso_tok_vocab_size(r->tok), vocab);
    for (int l = 0; l < r->d.n_levels; l++)
        for (int k = 0; k < r->d.level_size[l]; k++) {
            char name[32];
            int32_t id;
            peso_prompt_code_token(name, sizeof name, l, k);
            int present = peso_tok_id(r->tok, name) >= 0;
            if (peso_tok_add_special(r->tok, name, &id, err) < 0)
                return -1;
            total++;
            added += !present;
            if (!present && id != vocab + added - 1)
                return peso_errf(err, "%s: code token %s got id %d, expected %d", r->model_dir, name, (int)id,
                                 vocab + added - 1);
        }
    if (added && added != total)
        return peso_errf(err, "%s: the tokenizer already has %d of the %d semantic-ID tokens; expected all "
                              "or none",
                         r->model_dir, total - added, total);
    if (!added && r->log)
        fprintf(r->log, "peso-train: %s already has the %d code tokens: their rows stay frozen\n",
                r->model_dir, total);
    *n_new = added;
    return 0;
}

static int open_model(peso_run *r, peso_err *err)
{
    const peso_conf *c = r->c;
    char path[sizeof r->model_dir + 32];
    peso_llama_config mc;
    snprintf(path, sizeof path, "%s/config.json", r->model_dir);
    if (peso_llama_config_load(&mc, path, err) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/tokenizer.json", r->model_dir);
    int n_new = 0;
    if (peso_tok_load(&r->tok, path, err) < 0 || add_code_tokens(r, mc.vocab_size, &n_new, err) < 0 ||
        peso_prompt_init(&r->prompt, r->tok, r->d.n_levels, r->d.level_size, err) < 0)
        return -1;
    peso_llama_opts o;
    peso_llama_opts_defaults(&o);
    o.lora.rank = (int)c->model.lora_rank;
    o.lora.alpha = c->model.lora_alpha;
    if (peso_lora_targets_parse(c->model.lora_targets, &o.lora.targets, err) < 0)
        return peso_err_prefix(err, "%s: key 'model.lora_targets'", c->source);
    o.n_new = n_new;
    o.seed = c->seed;
    o.n_magnitudes = r->meth->flags & PESO_METHOD_MAGNITUDES ? r->n_blocks - 1 : 0;
    peso_backend_opts bo;
    peso_conf_backend_opts(c, &bo);
    r->be = peso_backend_open(&bo, err);
    if (!r->be || peso_llama_load(&r->m, r->model_dir, r->be, &o, err) < 0)
        return -1;
    return 0;
}

int peso_run_open(peso_run *r, const peso_conf *c, const peso_par *par, FILE *log, peso_err *err)
{
    memset(r, 0, sizeof *r);
    r->c = c;
    r->par = par;
    r->log = log;
    if (c->threads > 0)
        omp_set_num_threads((int)c->threads);
    if (peso_method_of_conf(c, &r->meth, r->label, sizeof r->label, r->run, sizeof r->run, err) < 0)
        return -1;
    snprintf(r->run_dir, sizeof r->run_dir, "%s/%s", c->out_dir, r->run);
    /* world rank 0 makes the shared files; the others wait and read them */
    int maker = par->rank == 0;
    if (maker && (peso_mkdir_p(c->out_dir, err) < 0 || open_dataset(r, err) < 0))
        return -1;
    if (peso_par_world_barrier(err) < 0 || (!maker && open_dataset(r, err) < 0))
        return -1;
    for (int i = 0; i < c->eval.n_stages; i++)
        if (c->eval.stages[i] > r->n_blocks)
            return peso_errf(err, "%s: eval.stages lists stage %lld but the dataset has %d blocks", c->source,
                             (long long)c->eval.stages[i], r->n_blocks);
    if ((maker && model_folder(r, err) < 0) || peso_par_world_barrier(err) < 0 ||
        (!maker && model_folder(r, err) < 0) || open_model(r, err) < 0)
        return -1;
    return 0;
}

void peso_run_close(peso_run *r)
{
    peso_llama_free(r->m);
    if (r->be)
        peso_backend_destroy(r->be);
    peso_prompt_free(&r->prompt);
    peso_tok_free(r->tok);
    peso_dataset_free(&r->d);
    memset(r, 0, sizeof *r);
}
