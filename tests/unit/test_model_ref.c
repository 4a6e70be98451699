/* Forward pass against llama.cpp's reference logits for every synthetic
 * model in the fixtures (models/synth: llama / qwen2 / qwen3 x every tensor
 * type) and every model of models/arch/ whose architecture hearth loads
 * (the others must be refused as unsupported, by name): teacher-forced NMSE
 * and top-1 agreement within the stated tolerances, and the greedy
 * continuation reproduced up to the first near-tie. The references were
 * made with a context of 256 (LongRoPE picks its factors by it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <dirent.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "testutil.h"

typedef struct {
    hr_model *m;
    hr_kv *kv;
    hr_engine *e;
} rig;

static bool rig_open(rig *r, const char *path)
{
    hr_err err = {0};
    if (hr_model_load(path, &r->m, &err)) {
        printf("  %s: FAIL: %s\n", path, err.msg);
        return false;
    }
    hr_kv_params kp = {.n_blocks = 64, .block_tokens = 16, .max_seqs = 2};
    hr_engine_params ep = {.max_batch = 64, .n_threads = 1, .n_ctx = 256};
    assert_int_equal(hr_kv_new(hr_model_hparams(r->m), &kp, &r->kv, &err), HR_OK);
    assert_int_equal(hr_engine_new(r->m, &ep, &r->e, &err), HR_OK);
    return true;
}

static void rig_close(rig *r)
{
    hr_engine_free(r->e);
    hr_kv_free(r->kv);
    hr_model_free(r->m);
}

static int32_t *json_ids(json_t *a, size_t *n)
{
    *n = json_array_size(a);
    int32_t *ids = malloc(*n * sizeof *ids);
    for (size_t i = 0; i < *n; i++)
        ids[i] = (int32_t)json_integer_value(json_array_get(a, i));
    return ids;
}

/* Teacher-forced logits of `ids` for sequence 0 from position 0. */
static float *forward_all(rig *r, const int32_t *ids, size_t n)
{
    int32_t nv = hr_model_hparams(r->m)->n_vocab;
    float *lg = malloc(n * (size_t)nv * sizeof *lg);
    int32_t *pos = malloc(n * sizeof *pos), *seq = calloc(n, sizeof *seq);
    for (size_t i = 0; i < n; i++)
        pos[i] = (int32_t)i;
    hr_batch b = {.n_tokens = (int32_t)n, .token = ids, .pos = pos, .seq = seq};
    hr_err err = {0};
    hr_kv_seq_clear(r->kv, 0);
    if (hr_engine_forward(r->e, r->kv, &b, lg, &err))
        fail_msg("%s", err.msg);
    free(pos);
    free(seq);
    return lg;
}

static int check_model(const char *sub, const char *json_path)
{
    json_error_t je;
    json_t *d = json_load_file(json_path, 0, &je);
    if (!d)
        fail_msg("cannot parse %s: %s", json_path, je.text);
    const char *model = json_string_value(json_object_get(d, "model"));
    char path[4096];
    snprintf(path, sizeof path, "%s/models/%s/%s", tu_fixtures(), sub, model);
    rig r;
    if (!rig_open(&r, path)) {
        json_decref(d);
        return 1;
    }
    int32_t nv = hr_model_hparams(r.m)->n_vocab;
    json_t *tol = json_object_get(d, "tolerance");
    double nmse_max = json_real_value(json_object_get(tol, "nmse_max"));
    double top1_min = json_real_value(json_object_get(tol, "top1_min"));
    double margin_tol = json_real_value(json_object_get(tol, "greedy_margin_tol"));
    int failures = 0;

    for (int s = 0; s < 2; s++) {
        size_t n;
        int32_t *ids = json_ids(json_object_get(d, s ? "sequence_B" : "sequence_A"), &n);
        json_t *lf = json_object_get(d, s ? "logits_B" : "logits_A");
        snprintf(path, sizeof path, "%s/models/%s/%s", tu_fixtures(), sub, json_string_value(json_object_get(lf, "file")));
        size_t rsize;
        float *ref = tu_read_file(path, &rsize);
        assert_non_null(ref);
        assert_int_equal(rsize, n * (size_t)nv * sizeof(float));
        float *x = forward_all(&r, ids, n);
        double num = 0, den = 0;
        size_t top = 0;
        for (size_t p = 0; p < n; p++) {
            for (int32_t v = 0; v < nv; v++) {
                double dlt = (double)x[p * nv + v] - ref[p * nv + v];
                num += dlt * dlt;
                den += (double)ref[p * nv + v] * ref[p * nv + v];
            }
            top += hr_argmax(x + p * nv, nv) == hr_argmax(ref + p * nv, nv);
        }
        double nmse = num / den, top1 = (double)top / (double)n;
        int ok = nmse <= nmse_max && top1 >= top1_min;
        printf("  %-22s %c nmse %.3e (max %.1e) top1 %.3f (min %.2f) %s\n", model, 'A' + s, nmse, nmse_max, top1,
               top1_min, ok ? "ok" : "FAIL");
        failures += !ok;
        free(x);
        free(ref);
        free(ids);
    }

    /* greedy: prompt in one batch, then one token at a time */
    json_t *g = json_object_get(d, "greedy");
    size_t np, nc;
    int32_t *prompt = json_ids(json_object_get(g, "prompt"), &np);
    int32_t *cont = json_ids(json_object_get(g, "continuation"), &nc);
    json_t *margins = json_object_get(g, "margins_llamacpp");
    float *lg = forward_all(&r, prompt, np);
    int32_t tok = hr_argmax(lg + (np - 1) * nv, nv);
    float *one = malloc((size_t)nv * sizeof *one);
    size_t agree = 0;
    for (size_t k = 0; k < nc; k++) {
        if (json_real_value(json_array_get(margins, k)) < margin_tol) {
            agree = nc; /* a near-tie at step k: the rest is not compared */
            break;
        }
        if (tok != cont[k])
            break;
        agree++;
        int32_t p = (int32_t)(np + k), sq = 0;
        hr_batch b = {.n_tokens = 1, .token = &tok, .pos = &p, .seq = &sq};
        hr_err err = {0};
        if (hr_engine_forward(r.e, r.kv, &b, one, &err))
            fail_msg("%s", err.msg);
        tok = hr_argmax(one, nv);
    }
    if (agree < nc) {
        printf("  %-22s greedy diverges at step %zu\n", model, agree);
        failures++;
    }
    free(one);
    free(lg);
    free(prompt);
    free(cont);
    rig_close(&r);
    json_decref(d);
    return failures;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int check_refused(const char *json_path)
{
    json_error_t je;
    json_t *d = json_load_file(json_path, 0, &je);
    assert_non_null(d);
    char path[4096];
    snprintf(path, sizeof path, "%s/models/arch/%s", tu_fixtures(), json_string_value(json_object_get(d, "model")));
    hr_model *m = NULL;
    hr_err err = {0};
    const hr_status st = hr_model_load(path, &m, &err);
    const char *arch = json_string_value(json_object_get(d, "arch"));
    const int ok = st == HR_ERR_UNSUPPORTED && arch && strstr(err.msg, arch) && strstr(err.msg, "unknown architecture");
    printf("  %-22s refused: %s %s\n", json_string_value(json_object_get(d, "model")), err.msg, ok ? "ok" : "FAIL");
    hr_model_free(m);
    json_decref(d);
    return !ok;
}

static void check_dir(const char *sub, int min_models)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/models/%s/reference", tu_fixtures(), sub);
    DIR *dp = opendir(dir);
    assert_non_null(dp);
    char *names[256];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(dp)) && n < 256) {
        size_t len = strlen(de->d_name);
        if (len > 5 && !strcmp(de->d_name + len - 5, ".json"))
            names[n++] = strdup(de->d_name);
    }
    closedir(dp);
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    assert_true(n >= min_models);
    int failures = 0;
    for (int i = 0; i < n; i++) {
        char path[4096 + 256];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        failures += strcmp(sub, "arch") || !tu_arch_not_yet(names[i]) ? check_model(sub, path) : check_refused(path);
        free(names[i]);
    }
    printf("%d reference models of models/%s checked, %d failures\n", n, sub, failures);
    assert_int_equal(failures, 0);
}

static void test_synth_reference_models(void **state)
{
    (void)state;
    check_dir("synth", 30);
}

static void test_arch_reference_models(void **state)
{
    (void)state;
    check_dir("arch", 20);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_synth_reference_models),
        cmocka_unit_test(test_arch_reference_models),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
