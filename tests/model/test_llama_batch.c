/* Batch semantics of the model: what is trainable, padding, ignored
 * labels, the HF label shift, logits at chosen positions, and batch
 * files. */
#include <criterion/criterion.h>
#include <hdf5.h>

#include "llama_setup.h"

static peso_llama_loss loss_of(setup *s, const tbatch *b)
{
    peso_err err;
    peso_llama_loss loss;
    peso_llama_batch v = tbatch_view(b);
    cr_assert_eq(peso_llama_forward(s->m, &v, &loss, &err), 0, "%s", err.msg);
    return loss;
}

/* grads of the mean loss, malloc'd */
static float *grads_of(setup *s, const tbatch *b, peso_llama_loss *loss)
{
    peso_err err;
    peso_llama_batch v = tbatch_view(b);
    float *g = malloc(s->m->flat.numel * sizeof *g);
    cr_assert_eq(peso_llama_zero_grads(s->m, &err), 0, "%s", err.msg);
    cr_assert_eq(peso_llama_forward_backward(s->m, &v, 1.0f / (float)peso_llama_count_labels(&v), loss, &err),
                 0, "%s", err.msg);
    cr_assert_eq(peso_llama_get_grads(s->m, g, &err), 0, "%s", err.msg);
    return g;
}

static size_t up16(size_t n)
{
    return (n + 15) / 16 * 16;
}

/* The flat holds exactly the LoRA matrices and the new rows: names,
 * shapes and sizes counted here from the config, nothing else. */
Test(llama_flat, holds_only_trainable_tensors)
{
    for (int tied = 0; tied < 2; tied++) {
        setup s;
        setup_open(&s, tied, 6, PESO_LORA_ALL, 101);
        const peso_llama_config *c = &s.t.cfg;
        size_t want_numel = 0, want_padded = 0, views = 0;
        char key[128];
        for (int l = 0; l < c->num_hidden_layers; l++)
            for (int p = 0; p < TINY_NPROJ; p++) {
                int in, out;
                tiny_dims(c, p, &in, &out);
                for (int ab = 0; ab < 2; ab++) {
                    snprintf(key, sizeof key, "base_model.model.model.layers.%d.%s.lora_%c.weight", l,
                             tiny_proj[p], ab ? 'B' : 'A');
                    const peso_view *v = peso_flat_find(&s.m->flat, key);
                    cr_assert(v, "no view %s", key);
                    size_t n = (size_t)4 * (ab ? out : in);
                    cr_assert_eq(v->numel, n, "%s numel", key);
                    want_numel += n;
                    want_padded += up16(n);
                    views++;
                }
            }
        size_t rows = 6 * (size_t)c->hidden_size * (tied ? 1 : 2);
        want_numel += rows;
        want_padded += tied ? up16(rows) : 2 * up16(rows / 2);
        views += tied ? 1 : 2;
        /* hand count: per layer 4 * (32+32 + 32+16 + 32+16 + 32+32 + 32+48 + 32+48 + 48+32) = 1856 */
        cr_assert_eq(want_numel - rows, 2 * 1856);
        size_t got = 0;
        for (size_t i = 0; i < s.m->flat.n_views; i++)
            got += s.m->flat.views[i].numel;
        cr_assert_eq(s.m->flat.n_views, views);
        cr_assert_eq(got, want_numel);
        cr_assert_eq(s.m->flat.numel, want_padded);
        cr_assert_eq(peso_flat_find(&s.m->flat, "lm_head.weight.new_rows") == NULL, tied);
        setup_close(&s);
    }
}

Test(llama_flat, peft_init_a_uniform_b_zero_new_rows_small)
{
    setup s;
    setup_open(&s, 0, 8, PESO_LORA_ALL, 111);
    for (size_t i = 0; i < s.m->flat.n_views; i++) {
        const peso_view *v = &s.m->flat.views[i];
        const float *x = s.params + v->offset;
        double ss = 0.0, mx = 0.0;
        for (size_t j = 0; j < v->numel; j++) {
            ss += (double)x[j] * x[j];
            mx = fmax(mx, fabs(x[j]));
        }
        if (strstr(v->name, "lora_B")) {
            cr_assert_eq(mx, 0.0, "%s is not zero", v->name);
        } else if (strstr(v->name, "lora_A")) {
            double bound = 1.0 / sqrt((double)v->shape[1]);
            cr_assert(mx <= bound, "%s: |a| %g above 1/sqrt(in) %g", v->name, mx, bound);
            cr_assert(mx > 0.8 * bound, "%s: max |a| %g far below the bound %g", v->name, mx, bound);
        } else {
            double sd = sqrt(ss / v->numel);
            cr_assert(fabs(sd - 0.02) < 0.003, "%s: std %g, expected about 0.02", v->name, sd);
        }
    }
    setup_close(&s);
}

/* PEFT's init leaves the model unchanged: LoRA with B = 0 gives the loss
 * of the same folder without LoRA, and of the LoRA-free reference. */
Test(llama_loss, b_zero_equals_no_lora)
{
    setup with, without;
    setup_open(&with, 0, 0, PESO_LORA_ALL, 121);
    setup_open(&without, 0, 0, 0, 121);
    cr_assert_eq(without.m->flat.n_views, 0);
    tbatch b;
    int lens[2] = {8, 5};
    tbatch_make(&b, 2, 8, lens, 40, 0, 31);
    peso_llama_loss a = loss_of(&with, &b), z = loss_of(&without, &b);
    cr_assert_eq(a.sum, z.sum, "with LoRA (B = 0) %.9g, without %.9g", a.sum, z.sum);
    double want = ref_mean(&without, &b);
    cr_assert(fabs(z.mean - want) < 2e-6 * want);
    setup_close(&with);
    setup_close(&without);
}

/* Appending padding (any ids, labels -100) changes neither the loss nor
 * the gradients. */
Test(llama_loss, right_padding_invariance)
{
    setup s;
    setup_open(&s, 0, 3, PESO_LORA_ALL, 131);
    setup_randomize_b(&s, 8);
    tbatch a, p;
    int lens[2] = {6, 4};
    tbatch_make(&a, 2, 6, lens, s.m->cfg.vocab_size, 3, 32);
    tbatch_make(&p, 2, 10, lens, s.m->cfg.vocab_size, 3, 33);
    for (int i = 0; i < 2; i++)
        for (int t = 0; t < 10; t++) {
            p.ids[i * 10 + t] = t < 6 ? a.ids[i * 6 + t] : p.ids[i * 10 + t];
            p.labels[i * 10 + t] = t < 6 ? a.labels[i * 6 + t] : -100;
        }
    peso_llama_loss la, lp;
    float *ga = grads_of(&s, &a, &la), *gp = grads_of(&s, &p, &lp);
    cr_assert_eq(la.count, lp.count);
    cr_assert(fabs(la.sum - lp.sum) <= 1e-6 * fabs(la.sum), "loss %.9g padded %.9g", la.sum, lp.sum);
    double gmax = 0.0;
    for (size_t i = 0; i < s.m->flat.numel; i++)
        gmax = fmax(gmax, fabs(ga[i]));
    cr_assert(gmax > 0.0);
    for (size_t i = 0; i < s.m->flat.numel; i++)
        cr_assert(fabs(ga[i] - gp[i]) <= 1e-5 * gmax, "grad[%zu] %.9g, padded %.9g", i, ga[i], gp[i]);
    free(ga);
    free(gp);
    setup_close(&s);
}

/* Labels -100 take no loss; the label at position 0 is never used (the
 * shift); a label right after the last real token is predicted from it. */
Test(llama_loss, ignored_labels_and_shift)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 141);
    setup_randomize_b(&s, 9);
    tbatch b;
    int lens[2] = {7, 4};
    tbatch_make(&b, 2, 8, lens, 40, 0, 34);
    for (int k = 0; k < 16; k++)
        b.labels[k] = -100;
    b.labels[0] = 5;      /* position 0: ignored */
    b.labels[3] = 7;      /* predicted from position 2 of row 0 */
    b.labels[8 + 2] = 11; /* from position 1 of row 1 */
    b.labels[8 + 4] = 13; /* t == len: from the last real token 3 */
    peso_llama_loss l = loss_of(&s, &b);
    cr_assert_eq(l.count, 3);
    /* by hand from reference logits */
    double lg[8 * 40], want = 0.0;
    int at[3][3] = {{0, 2, 7}, {1, 1, 11}, {1, 3, 13}};
    for (int i = 0; i < 3; i++) {
        ref_logits(&s.ref, b.ids + at[i][0] * 8, b.lens[at[i][0]], lg);
        const double *z = lg + at[i][1] * 40;
        double mx = -INFINITY, se = 0.0;
        for (int j = 0; j < 40; j++)
            mx = fmax(mx, z[j]);
        for (int j = 0; j < 40; j++)
            se += exp(z[j] - mx);
        want += mx + log(se) - z[at[i][2]];
    }
    cr_assert(fabs(l.sum - want) <= 2e-6 * want, "loss sum %.9g, by hand %.9g", l.sum, want);
    cr_assert(fabs(l.mean - want / 3) <= 2e-6 * want);
    setup_close(&s);
}

Test(llama_loss, forward_equals_forward_backward_and_grads_accumulate)
{
    setup s;
    setup_open(&s, 0, 2, PESO_LORA_ALL, 151);
    setup_randomize_b(&s, 10);
    tbatch b;
    int lens[2] = {7, 7};
    tbatch_make(&b, 2, 7, lens, s.m->cfg.vocab_size, 2, 35);
    peso_llama_loss f = loss_of(&s, &b), fb;
    float *g1 = grads_of(&s, &b, &fb);
    cr_assert(fabs(f.sum - fb.sum) <= 1e-7 * f.sum);
    /* a second pass without zeroing adds the same gradient again */
    peso_err err;
    peso_llama_batch v = tbatch_view(&b);
    cr_assert_eq(peso_llama_forward_backward(s.m, &v, 1.0f / (float)fb.count, &fb, &err), 0, "%s", err.msg);
    float *g2 = malloc(s.m->flat.numel * sizeof *g2);
    cr_assert_eq(peso_llama_get_grads(s.m, g2, &err), 0);
    for (size_t i = 0; i < s.m->flat.numel; i++)
        cr_assert(fabs(g2[i] - 2.0f * g1[i]) <= 1e-6f * (fabsf(g1[i]) + 1e-3f), "grad[%zu]", i);
    free(g1);
    free(g2);
    setup_close(&s);
}

Test(llama_loss, bad_batches_are_errors)
{
    setup s;
    setup_open(&s, 1, 0, PESO_LORA_ALL, 161);
    tbatch b;
    int lens[2] = {5, 3};
    tbatch_make(&b, 2, 6, lens, 40, 0, 36);
    peso_llama_batch v = tbatch_view(&b);
    peso_llama_loss l;
    peso_err err;
    b.labels[6 + 5] = 4; /* row 1 has 3 tokens: position 5 is predicted from padding */
    cr_assert_eq(peso_llama_forward(s.m, &v, &l, &err), -1);
    cr_assert(strstr(err.msg, "labels[1][5]") && strstr(err.msg, "-100"), "%s", err.msg);
    b.labels[6 + 5] = -100;
    b.labels[2] = 40;
    cr_assert_eq(peso_llama_forward(s.m, &v, &l, &err), -1);
    cr_assert(strstr(err.msg, "labels[0][2]") && strstr(err.msg, "vocabulary"), "%s", err.msg);
    b.labels[2] = -100;
    b.ids[3] = -1;
    cr_assert_eq(peso_llama_forward(s.m, &v, &l, &err), -1);
    cr_assert(strstr(err.msg, "input_ids[0][3]"), "%s", err.msg);
    b.ids[3] = 1;
    b.ids[6 + 4] = 999; /* padding ids are not read */
    cr_assert_eq(peso_llama_forward(s.m, &v, &l, &err), 0, "%s", err.msg);
    b.lens[1] = 7;
    cr_assert_eq(peso_llama_forward(s.m, &v, &l, &err), -1);
    cr_assert(strstr(err.msg, "row 1") && strstr(err.msg, "length 7"), "%s", err.msg);
    setup_close(&s);
}

Test(llama_logits, selected_positions_match_reference)
{
    setup s;
    setup_open(&s, 0, 3, PESO_LORA_ALL, 171);
    setup_randomize_b(&s, 11);
    tbatch b;
    int lens[2] = {5, 8};
    tbatch_make(&b, 2, 8, lens, s.m->cfg.vocab_size, 3, 37);
    int V = s.m->cfg.vocab_size;
    int32_t pos[3] = {8 + 7, 2, 8 + 0};
    float got[3 * 43];
    peso_err err;
    peso_llama_batch v = tbatch_view(&b);
    cr_assert_eq(peso_llama_logits(s.m, &v, pos, 3, got, &err), 0, "%s", err.msg);
    double want0[8 * 43], want1[8 * 43];
    ref_logits(&s.ref, b.ids, 5, want0);
    ref_logits(&s.ref, b.ids + 8, 8, want1);
    const double *rows[3] = {want1 + 7 * V, want0 + 2 * V, want1};
    for (int p = 0; p < 3; p++)
        for (int j = 0; j < V; j++)
            cr_assert(fabs(got[p * V + j] - rows[p][j]) <= 1e-5 * (1 + fabs(rows[p][j])),
                      "logit[%d][%d] %.7g, reference %.7g", p, j, got[p * V + j], rows[p][j]);
    int32_t pad = 6; /* row 0, t = 6 >= length 5 */
    cr_assert_eq(peso_llama_logits(s.m, &v, &pad, 1, got, &err), -1);
    cr_assert(strstr(err.msg, "position 6"), "%s", err.msg);
    setup_close(&s);
}

/* ---- batch files ---- */

static void write_2d(hid_t f, const char *name, hid_t ftype, int B, int T, const int64_t *v)
{
    hsize_t d[2] = {(hsize_t)B, (hsize_t)T};
    hid_t sp = H5Screate_simple(2, d, NULL);
    hid_t ds = H5Dcreate2(f, name, ftype, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert(ds >= 0);
    cr_assert(H5Dwrite(ds, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, v) >= 0);
    H5Dclose(ds);
    H5Sclose(sp);
}

Test(llama_batch_file, reads_hf_datasets_in_any_int_type)
{
    char *dir = tiny_tmpdir(), path[256];
    snprintf(path, sizeof path, "%s/batch.h5", dir);
    int64_t ids[6] = {3, 4, 5, 6, 7, 0}, mask[6] = {1, 1, 1, 1, 1, 0}, lab[6] = {3, 4, 5, -100, 7, -100};
    hid_t f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    write_2d(f, "input_ids", H5T_STD_I64LE, 2, 3, ids);
    write_2d(f, "attention_mask", H5T_STD_U8LE, 2, 3, mask);
    write_2d(f, "labels", H5T_STD_I32LE, 2, 3, lab);
    H5Fclose(f);
    peso_llama_batch_file bf;
    peso_err err;
    cr_assert_eq(peso_llama_batch_read(&bf, path, &err), 0, "%s", err.msg);
    cr_assert_eq(bf.batch.B, 2);
    cr_assert_eq(bf.batch.T, 3);
    cr_assert_eq(bf.lens[0], 3);
    cr_assert_eq(bf.lens[1], 2);
    for (int i = 0; i < 6; i++) {
        cr_assert_eq(bf.ids[i], ids[i]);
        cr_assert_eq(bf.labels[i], lab[i]);
    }
    /* labels at t = 1, 2 of row 0 and t = 1 of row 1 (t = 0 is never used) */
    cr_assert_eq(peso_llama_count_labels(&bf.batch), 3);
    peso_llama_batch_file_free(&bf);

    int64_t left[6] = {0, 1, 1, 1, 1, 1};
    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    write_2d(f, "input_ids", H5T_STD_I32LE, 2, 3, ids);
    write_2d(f, "attention_mask", H5T_STD_I32LE, 2, 3, left);
    H5Fclose(f);
    cr_assert_eq(peso_llama_batch_read(&bf, path, &err), -1);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "attention_mask[0][1]") &&
                  strstr(err.msg, "right padding"),
              "%s", err.msg);

    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    write_2d(f, "input_ids", H5T_STD_I32LE, 2, 3, ids);
    write_2d(f, "attention_mask", H5T_STD_I32LE, 3, 2, mask);
    H5Fclose(f);
    cr_assert_eq(peso_llama_batch_read(&bf, path, &err), -1);
    cr_assert(strstr(err.msg, "/attention_mask") && strstr(err.msg, "[3, 2]"), "%s", err.msg);

    f = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    write_2d(f, "attention_mask", H5T_STD_I32LE, 2, 3, mask);
    H5Fclose(f);
    cr_assert_eq(peso_llama_batch_read(&bf, path, &err), -1);
    cr_assert(strstr(err.msg, path) && strstr(err.msg, "/input_ids is missing"), "%s", err.msg);
    tiny_rmdir(dir);
}
