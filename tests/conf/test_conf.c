#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

#define FIX(name) PESO_FIXTURES "/conf/" name

static void load_expect_error(const char *path, const char *const *needles)
{
    peso_conf c;
    peso_err err = {{0}};
    peso_conf_defaults(&c);
    int rc = peso_conf_load(&c, path, &err);
    if (rc == 0)
        rc = peso_conf_validate(&c, &err);
    cr_assert_eq(rc, -1, "expected an error for %s", path);
    for (; *needles; needles++)
        cr_expect(strstr(err.msg, *needles) != NULL, "message '%s' lacks '%s'", err.msg, *needles);
}

Test(conf, defaults_are_the_documented_protocol)
{
    peso_conf c;
    peso_conf_defaults(&c);
    cr_expect_str_eq(c.data.format, "synthetic");
    cr_expect_eq(c.split.n_fractions, 5);
    double want[] = {0.6, 0.1, 0.1, 0.1, 0.1};
    for (int i = 0; i < 5; i++)
        cr_expect_float_eq(c.split.fractions[i], want[i], 1e-15);
    cr_expect_eq(c.split.min_user_interactions, 5);
    cr_expect_eq(c.split.window, 20);
    cr_expect_str_eq(c.split.mode, "chronological");
    cr_expect_eq(c.semid.levels, 3);
    cr_expect_eq(c.semid.codebook, 256);
    cr_expect_eq(c.seed, 42u);
    peso_err err;
    cr_expect_eq(peso_conf_validate(&c, &err), 0);
}

Test(conf, file_overrides_defaults)
{
    peso_conf c;
    peso_err err = {{0}};
    peso_conf_defaults(&c);
    cr_assert_eq(peso_conf_load(&c, FIX("good.yaml"), &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_validate(&c, &err), 0, "%s", err.msg);
    cr_expect_str_eq(c.out_dir, "runs/test");
    cr_expect_eq(c.seed, 7u);
    cr_expect_str_eq(c.data.format, "csv");
    cr_expect_str_eq(c.data.csv_delim, "\t");
    cr_expect_eq(c.data.year_min, 2019);
    cr_expect_eq(c.split.n_fractions, 3);
    cr_expect_float_eq(c.split.fractions[1], 0.25, 1e-15);
    cr_expect_eq(c.split.window, 10);
    cr_expect_str_eq(c.split.mode, "user-disjoint");
    cr_expect_eq(c.semid.n_hidden, 1);
    cr_expect_eq(c.semid.hidden[0], 64);
    cr_expect_float_eq(c.semid.lr, 0.01, 1e-15);
    /* untouched keys keep their defaults */
    cr_expect_eq(c.split.min_user_interactions, 5);
}

Test(conf, unknown_key_names_file_line_and_key)
{
    const char *n[] = {"unknown_key.yaml:4", "data.colour", "reviews", NULL};
    load_expect_error(FIX("unknown_key.yaml"), n);
}

Test(conf, wrong_type_names_expected)
{
    const char *n[] = {"wrong_type.yaml:2", "split.window", "an integer in [1, 4096]", "twenty", NULL};
    load_expect_error(FIX("wrong_type.yaml"), n);
}

Test(conf, out_of_range)
{
    const char *n[] = {"out_of_range.yaml:3", "split.min_user_interactions", "[3,", "'2'", NULL};
    load_expect_error(FIX("out_of_range.yaml"), n);
}

Test(conf, bad_enum_lists_choices)
{
    const char *n[] = {"bad_enum.yaml:2", "data.format", "amazon2023|amazon2014|csv|letter|synthetic", NULL};
    load_expect_error(FIX("bad_enum.yaml"), n);
}

Test(conf, section_must_be_mapping)
{
    const char *n[] = {"section_not_map.yaml:1", "'split' is a section", NULL};
    load_expect_error(FIX("section_not_map.yaml"), n);
}

Test(conf, fractions_must_sum_to_one)
{
    const char *n[] = {"bad_sum.yaml", "split.fractions must sum to 1", "0.9", NULL};
    load_expect_error(FIX("bad_sum.yaml"), n);
}

Test(conf, yaml_syntax_error_has_line)
{
    const char *n[] = {"syntax.yaml:3", "YAML syntax error", NULL};
    load_expect_error(FIX("syntax.yaml"), n);
}

Test(conf, missing_file)
{
    const char *n[] = {"nope.yaml", "cannot open config", NULL};
    load_expect_error(FIX("nope.yaml"), n);
}

Test(conf, set_overrides_scalars_and_lists)
{
    peso_conf c;
    peso_err err = {{0}};
    peso_conf_defaults(&c);
    cr_assert_eq(peso_conf_set(&c, "split.window=7", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&c, "split.fractions=[0.5, 0.5]", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&c, "data.reviews=/tmp/a b.json", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&c, "semid.export_index=", &err), 0, "%s", err.msg);
    cr_expect_eq(c.split.window, 7);
    cr_expect_eq(c.split.n_fractions, 2);
    cr_expect_str_eq(c.data.reviews, "/tmp/a b.json");
    cr_expect_str_eq(c.semid.export_index, "");
    cr_expect_eq(peso_conf_set(&c, "split.windows=7", &err), -1);
    cr_expect(strstr(err.msg, "unknown key 'split.windows'") && strstr(err.msg, "window"), "%s", err.msg);
    cr_expect_eq(peso_conf_set(&c, "split.window", &err), -1);
    cr_expect(strstr(err.msg, "key=value"), "%s", err.msg);
    cr_expect_eq(peso_conf_set(&c, "seed=-1", &err), -1);
    cr_expect(strstr(err.msg, "seed"), "%s", err.msg);
    cr_expect_eq(peso_conf_set(&c, "semid.lr=nan", &err), -1);
}

Test(conf, dump_reloads_to_the_same_config)
{
    peso_conf a, b;
    peso_err err = {{0}};
    peso_conf_defaults(&a);
    cr_assert_eq(peso_conf_load(&a, FIX("good.yaml"), &err), 0, "%s", err.msg);
    char *text = peso_conf_dump(&a);
    char path[] = "/tmp/peso_conf_dump_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0);
    FILE *f = fdopen(fd, "w");
    fputs(text, f);
    fclose(f);
    peso_conf_defaults(&b);
    cr_assert_eq(peso_conf_load(&b, path, &err), 0, "%s", err.msg);
    unlink(path);
    /* everything but the source name must agree */
    strcpy(b.source, a.source);
    cr_expect_eq(memcmp(&a, &b, sizeof a), 0, "dumped config does not reload identically:\n%s", text);
    free(text);
}

Test(conf, fingerprint_tracks_data_keys_only)
{
    peso_conf a, b;
    peso_err err;
    char fa[17], fb[17];
    peso_conf_defaults(&a);
    peso_conf_defaults(&b);
    peso_conf_data_fingerprint(&a, fa);
    peso_conf_data_fingerprint(&b, fb);
    cr_expect_str_eq(fa, fb);
    peso_conf_set(&b, "out_dir=elsewhere", &err);
    peso_conf_data_fingerprint(&b, fb);
    cr_expect_str_eq(fa, fb, "out_dir must not change the data fingerprint");
    peso_conf_set(&b, "split.window=19", &err);
    peso_conf_data_fingerprint(&b, fb);
    cr_expect_str_neq(fa, fb);
}

Test(conf, command_line)
{
    peso_conf c;
    peso_err err = {{0}};
    char *argv[] = {"prog", "--set", "split.window=3", "--config", FIX("good.yaml"), "--print-config",
                    "--stages", "2-3", NULL};
    int argc = 8, print = 0;
    cr_assert_eq(peso_conf_from_args(&c, &argc, argv, &print, &err), 0, "%s", err.msg);
    cr_expect_eq(print, 1);
    cr_expect_eq(c.split.window, 3, "--set must win over the file whatever the order");
    cr_expect_eq(c.seed, 7u);
    cr_expect_eq(argc, 3);
    cr_expect_str_eq(argv[1], "--stages");
    cr_expect_str_eq(argv[2], "2-3");
}

Test(conf, every_shipped_config_loads_and_validates)
{
    const char *names[] = {"demo.yaml", "instruments.yaml", "movies.yaml", "books.yaml", NULL};
    for (const char **n = names; *n; n++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/conf/%s", PESO_SOURCE_DIR, *n);
        peso_conf c;
        peso_err err = {{0}};
        peso_conf_defaults(&c);
        cr_expect_eq(peso_conf_load(&c, path, &err), 0, "%s", err.msg);
        cr_expect_eq(peso_conf_validate(&c, &err), 0, "%s", err.msg);
    }
}

Test(conf, model_features_need_a_model_folder)
{
    peso_conf c;
    peso_err err;
    peso_conf_defaults(&c);
    cr_assert_eq(c.semid.model_max_tokens, 64);
    cr_assert_eq(peso_conf_set(&c, "semid.features=model", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_validate(&c, &err), -1);
    cr_expect(strstr(err.msg, "semid.features model needs semid.model"), "%s", err.msg);
    cr_assert_eq(peso_conf_set(&c, "semid.model=/some/folder", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&c, "semid.model_max_tokens=32", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_validate(&c, &err), 0, "%s", err.msg);
    cr_expect_str_eq(c.semid.model, "/some/folder");
    cr_expect_eq(c.semid.model_max_tokens, 32);
    cr_expect_eq(peso_conf_set(&c, "semid.model_max_tokens=0", &err), -1);
    cr_expect(strstr(err.msg, "semid.model_max_tokens"), "%s", err.msg);
}

/* The keys a checkpoint check compares: stage 1 ignores the method and
 * the continual-stage keys; evaluation and logging keys never count. */
Test(conf, run_diff_names_the_keys_that_differ)
{
    peso_conf a, b;
    peso_err err;
    peso_conf_defaults(&a);
    char *text = peso_conf_dump(&a);
    b = a;
    cr_assert_eq(peso_conf_set(&b, "train.lr=0.002", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&b, "method.lambda=5", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&b, "train.lr_scale=0.1", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&b, "eval.beam=20", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_set(&b, "train.log_every=3", &err), 0, "%s", err.msg);
    char *d1 = peso_conf_run_diff(&b, text, "ckpt.h5", 1, &err);
    char *d2 = peso_conf_run_diff(&b, text, "ckpt.h5", 0, &err);
    char *d0 = peso_conf_run_diff(&a, text, "ckpt.h5", 0, &err);
    cr_assert(d1 && d2 && d0);
    cr_expect_str_eq(d1, "train.lr: 0.001 vs 0.002\n");
    cr_expect_str_eq(d2, "train.lr: 0.001 vs 0.002\ntrain.lr_scale: \"auto\" vs \"0.1\"\nmethod.lambda: 2 vs 5\n");
    cr_expect_str_eq(d0, "");
    cr_expect_null(peso_conf_run_diff(&a, "train: [", "ckpt.h5", 0, &err));
    cr_expect(strstr(err.msg, "ckpt.h5") != NULL, "%s", err.msg);
    free(d0);
    free(d1);
    free(d2);
    free(text);
}

Test(conf, lr_scale_auto_number_and_errors)
{
    peso_conf c;
    peso_err err;
    double s;
    peso_conf_defaults(&c);
    cr_assert_eq(peso_conf_lr_scale(&c, 30, 600, &s, &err), 0, "%s", err.msg);
    cr_expect_float_eq(s, 0.05, 1e-15);
    cr_expect_eq(peso_conf_lr_scale(&c, 30, 0, &s, &err), -1);
    cr_assert_eq(peso_conf_set(&c, "train.lr_scale=0.25", &err), 0, "%s", err.msg);
    cr_assert_eq(peso_conf_lr_scale(&c, 30, 600, &s, &err), 0, "%s", err.msg);
    cr_expect_float_eq(s, 0.25, 1e-15);
    cr_assert_eq(peso_conf_set(&c, "train.lr_scale=fast", &err), 0, "%s", err.msg);
    cr_expect_eq(peso_conf_validate(&c, &err), -1);
    cr_expect(strstr(err.msg, "train.lr_scale") && strstr(err.msg, "'fast'"), "%s", err.msg);
    cr_assert_eq(peso_conf_set(&c, "train.lr_scale=-1", &err), 0, "%s", err.msg);
    cr_expect_eq(peso_conf_lr_scale(&c, 1, 1, &s, &err), -1);
}
