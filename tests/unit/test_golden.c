/* stories260K (a real trained model): greedy generation from BOS for 200
 * tokens equals the golden ids and text, through the engine API and through
 * `hearth run` (stdout byte for byte). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/engine.h"
#include "model/model.h"
#include "sample/sampler.h"
#include "testutil.h"
#include "tok/vocab.h"

static json_t *golden(void)
{
    json_error_t je;
    json_t *d = json_load_file(tu_fixture("models/stories260K.golden.json"), 0, &je);
    if (!d)
        fail_msg("golden json: %s", je.text);
    return d;
}

static void test_engine_greedy(void **state)
{
    (void)state;
    json_t *d = golden();
    json_t *want = json_object_get(d, "generated_ids");
    const size_t n = json_array_size(want);
    assert_int_equal(n, 200);
    hr_model *m;
    hr_err err = {0};
    assert_int_equal(hr_model_load(tu_fixture("models/stories260K.gguf"), &m, &err), HR_OK);
    const int32_t nv = hr_model_hparams(m)->n_vocab;
    hr_kv *kv;
    hr_kv_params kp = {.n_blocks = 16, .block_tokens = 16, .max_seqs = 1};
    assert_int_equal(hr_kv_new(hr_model_hparams(m), &kp, &kv, &err), HR_OK);
    hr_engine *e;
    hr_engine_params ep = {.max_batch = 8, .n_threads = 1};
    assert_int_equal(hr_engine_new(m, &ep, &e, &err), HR_OK);
    float *lg = malloc((size_t)nv * sizeof *lg);
    int32_t *ids = malloc((n + 1) * sizeof *ids);
    int32_t tok = 1;
    ids[0] = tok;
    for (int32_t p = 0; p < (int32_t)n; p++) {
        int32_t sq = 0;
        hr_batch b = {.n_tokens = 1, .token = &tok, .pos = &p, .seq = &sq};
        assert_int_equal(hr_engine_forward(e, kv, &b, lg, &err), HR_OK);
        tok = hr_argmax(lg, nv);
        ids[p + 1] = tok;
        if (tok != (int32_t)json_integer_value(json_array_get(want, (size_t)p)))
            fail_msg("token %d: got %d, golden %lld", p, tok, json_integer_value(json_array_get(want, (size_t)p)));
    }
    /* the decoded text of the generated ids is the golden text */
    char *text = malloc(8192);
    hr_detok *dt;
    assert_int_equal(hr_detok_new(hr_model_vocab(m), false, &dt, &err), HR_OK);
    size_t len = 0;
    for (size_t i = 1; i <= n; i++)
        len += hr_detok_push(dt, ids[i], text + len, 8192 - len);
    len += hr_detok_flush(dt, text + len, 8192 - len);
    assert_string_equal(text, json_string_value(json_object_get(d, "generated_text")));
    hr_detok_free(dt);
    free(text);
    free(ids);
    free(lg);
    hr_engine_free(e);
    hr_kv_free(kv);
    hr_model_free(m);
    json_decref(d);
}

static void test_cli_run_golden(void **state)
{
    (void)state;
    const char *bin = getenv("HEARTH_BIN");
    if (!bin)
        TU_SKIP_OR_FAIL("HEARTH_BIN not set");
    json_t *d = golden();
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s run -m %s --tokens 1 -n 200 --temp 0 2>/dev/null", bin,
             tu_fixture("models/stories260K.gguf"));
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char *out = calloc(1, 16384);
    size_t n = fread(out, 1, 16383, p);
    assert_int_equal(pclose(p), 0);
    out[n] = 0;
    assert_string_equal(out, json_string_value(json_object_get(d, "generated_text")));
    free(out);
    json_decref(d);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_engine_greedy),
        cmocka_unit_test(test_cli_run_golden),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
