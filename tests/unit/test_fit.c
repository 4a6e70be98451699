/* test_fit.c - the catalog and `fit` against hand-checked figures: every
 * expected number below is worked out from the catalog's published shapes
 * and datasheet figures (data/models.json, data/gpus.json) with the formulas
 * docs state, not read back from the code under test. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "report/catalog.h"
#include "report/fit.h"
#include "testutil.h"

static hr_catalog *cat;

static int setup(void **state)
{
    (void)state;
    hr_err err = {0};
    if (hr_catalog_load(NULL, NULL, NULL, &cat, &err) != HR_OK) {
        fprintf(stderr, "%s\n", err.msg);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    hr_catalog_free(cat);
    return 0;
}

static const hr_model_spec *model(const char *name)
{
    const hr_model_spec *m = hr_catalog_find_model(cat, name);
    if (!m)
        fail_msg("catalog lacks %s", name);
    return m;
}

static void test_catalog_names(void **state)
{
    (void)state;
    /* every model the decision guide names, and the small ones */
    static const char *const names[] = {
        "qwen3.5-27b", "deepseek-r1-distill-qwen-32b", "gpt-oss-120b", "gpt-oss-20b", "deepseek-v3.2",
        "mistral-small-4", "gemma-3-27b-it", "phi-4", "llama-4-scout-17b-16e-instruct",
        "llama-4-maverick-17b-128e-instruct", "qwen3-235b-a22b", "glm-5", "kimi-k2.5",
        "qwen2.5-0.5b-instruct", "qwen2.5-1.5b-instruct", "qwen2.5-3b-instruct", "qwen2.5-7b-instruct",
        "qwen2.5-14b-instruct", "qwen2.5-32b-instruct", "qwen2.5-72b-instruct", "qwen3-0.6b", "qwen3-1.7b",
        "qwen3-4b", "qwen3-8b", "qwen3-14b", "qwen3-32b", "llama-3.2-1b-instruct", "llama-3.2-3b-instruct",
        "llama-3.1-8b-instruct", "llama-3.1-70b-instruct", "llama-3.3-70b-instruct"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        assert_non_null(model(names[i]));
    /* lookups are case-insensitive */
    assert_ptr_equal(hr_catalog_find_model(cat, "Llama-3.1-70B-Instruct"), model("llama-3.1-70b-instruct"));
    for (size_t i = 0; i < hr_catalog_n_models(cat); i++) {
        const hr_model_spec *m = hr_catalog_model_at(cat, i);
        for (const char *p = m->name; *p; p++)
            assert_false(*p >= 'A' && *p <= 'Z');
    }
    static const char *const hw[] = {"h100-80gb", "H200", "a100-80gb", "l4", "rtx4090", "rtx3090"};
    for (size_t i = 0; i < sizeof hw / sizeof hw[0]; i++)
        assert_non_null(hr_catalog_find_gpu(cat, hw[i]));
    static const char *const apis[] = {"gpt-5", "gpt-5-mini", "gpt-4o", "gpt-4o-mini", "o3", "o4-mini"};
    for (size_t i = 0; i < sizeof apis / sizeof apis[0]; i++) {
        const hr_api_price *a = hr_catalog_find_api(cat, apis[i]);
        assert_non_null(a);
        assert_true(a->source[0] && a->date[0]);
    }
    assert_null(hr_catalog_find_model(cat, "no-such-model"));
    assert_null(hr_catalog_find_gpu(cat, "cpu")); /* cpu is this machine, not a tier */
}

static void test_kv_bytes(void **state)
{
    (void)state;
    /* 80 layers x 8 KV heads x 128 x 2 (K and V) x 2 bytes */
    assert_true(hr_fit_kv_bytes_per_token(model("llama-3.1-70b-instruct"), 2) == 327680.0);
    /* 24 layers x 2 KV heads x 64 x 2 x 2 */
    assert_true(hr_fit_kv_bytes_per_token(model("qwen2.5-0.5b-instruct"), 2) == 12288.0);
    /* MLA: 61 layers x (512 latent + 64 RoPE + 128 indexer) x 2 bytes */
    assert_true(hr_fit_kv_bytes_per_token(model("deepseek-v3.2"), 2) == 61.0 * (512 + 64 + 128) * 2);
    /* hybrid: only 16 of Qwen3.5-27B's 64 layers keep KV: 16 x 4 x 256 x 2 x 2 */
    assert_true(hr_fit_kv_bytes_per_token(model("qwen3.5-27b"), 2) == 65536.0);
    /* sliding window: Gemma 3 27B at 32768 tokens, 10 global + 52 local (1024) layers, 16 KV heads x 128 */
    double per_layer_token = 16.0 * 128 * 2 * 2;
    assert_true(hr_fit_kv_bytes_seq(model("gemma-3-27b-it"), 2, 32768) ==
                per_layer_token * (10.0 * 32768 + 52.0 * 1024));
    /* below the window every layer grows */
    assert_true(hr_fit_kv_bytes_seq(model("gemma-3-27b-it"), 2, 512) == per_layer_token * 62 * 512);
}

static void test_fit_result(void **state)
{
    (void)state;
    hr_err err = {0};
    hr_fit_model fm;
    assert_int_equal(hr_fit_model_from_spec(model("llama-3.1-70b-instruct"), "F16", &fm, &err), HR_OK);
    hr_fit_hw hw;
    hr_fit_hw_from_gpu(hr_catalog_find_gpu(cat, "h100-80gb"), 1, &hw);
    hr_fit_result r;
    assert_int_equal(hr_fit_compute(&fm, &hw, 8192, 1, NULL, &r, &err), HR_OK);
    assert_true(r.kv_bytes_per_token == 327680.0);
    assert_true(r.kv_bytes == 327680.0 * 8192);
    assert_true(fabs(r.weights_bytes - 70553706496.0 * 2) < 1);
    assert_false(r.fits);
    assert_non_null(strstr(r.why, "weights"));
    assert_int_equal(r.max_users, 0);
    assert_true(r.n_assumptions > 3);
    /* two H100s hold it */
    hr_fit_hw_from_gpu(hr_catalog_find_gpu(cat, "h100-80gb"), 2, &hw);
    assert_int_equal(hr_fit_compute(&fm, &hw, 8192, 1, NULL, &r, &err), HR_OK);
    assert_true(r.fits);
    /* users: usable 2 x 80e9 x 0.95 = 152e9, minus the weights, 2 x 0.75 GiB
     * fixed and 512 x (8 x 8192 + 3 x 28672) x 4 = 310378496 of scratch
     * leaves 8971595776; each user takes its KV (327680 x 8192 = 2684354560)
     * and logits (128256 x 4): floor(3.34) = 3 */
    assert_int_equal(r.max_users, 3);
    /* overhead 2 x 0.75 GiB + the scratch + one user's logits (513024);
     * total = weights + KV + overhead */
    assert_true(r.overhead_bytes == 1921504256.0);
    assert_true(r.total_bytes == 145713271808.0);
    /* memory-bound decode: one step reads the weights less the embedding
     * (128256 x 8192 x 2 bytes, only one row read), one embedding row (16384)
     * and the KV of 8192 tokens: 141690437632 bytes at 2 x 3350 GB/s x 0.75
     * = 0.0281971020 s, 35.4646374 tokens/s; the FLOPs (2 x 69503033344
     * + attention 2 x 64 x 256 x 80 x 8192) at 2 x 989 TFLOPS x 0.5 take
     * 1.6226583e-4 s */
    assert_true(r.step_bytes == 141690437632.0);
    assert_true(fabs(r.t_mem_s - 0.028197102016318407) < 1e-15);
    assert_true(fabs(r.t_compute_s - 1.6226582726794743e-4) < 1e-17);
    assert_true(fabs(r.decode_tps_user - 35.464637444701715) < 1e-9);
    assert_string_equal(r.bound, "memory bandwidth");
    /* KV-bound refusal names the user limit */
    assert_int_equal(hr_fit_model_from_spec(model("qwen2.5-0.5b-instruct"), "Q8_0", &fm, &err), HR_OK);
    hr_fit_hw_from_gpu(hr_catalog_find_gpu(cat, "l4"), 1, &hw);
    assert_int_equal(hr_fit_compute(&fm, &hw, 32768, 100000, NULL, &r, &err), HR_OK);
    assert_false(r.fits);
    assert_non_null(strstr(r.why, "KV cache"));
    /* usable 24e9 x 0.95, minus the weights (494032768 x 8.5 / 8 =
     * 524909816), 0.75 GiB and 512 x (8 x 896 + 3 x 4864) x 4 = 44564480:
     * 21425219336 left; per user 12288 x 32768 of KV + 151936 x 4 of logits
     * = 403260928: floor(53.13) = 53 */
    assert_true(r.weights_bytes == 524909816.0);
    assert_int_equal(r.max_users, 53);
    assert_non_null(strstr(r.why, "at most 53 users"));
    /* 53 users fit, 54 do not */
    hr_fit_result r2;
    assert_int_equal(hr_fit_compute(&fm, &hw, 32768, 53, NULL, &r2, &err), HR_OK);
    assert_true(r2.fits);
    assert_int_equal(hr_fit_compute(&fm, &hw, 32768, 54, NULL, &r2, &err), HR_OK);
    assert_false(r2.fits);
    /* bad inputs */
    assert_int_equal(hr_fit_model_from_spec(model("qwen2.5-0.5b-instruct"), "Q9_X", &fm, &err), HR_ERR_INVALID);
    assert_int_equal(hr_fit_model_from_spec(model("qwen2.5-0.5b-instruct"), "Q8_0", &fm, &err), HR_OK);
    assert_int_equal(hr_fit_compute(&fm, &hw, 1 << 20, 1, NULL, &r, &err), HR_ERR_INVALID); /* past the context */
    assert_int_equal(hr_fit_compute(&fm, &hw, 1024, 1, "q3", &r, &err), HR_ERR_INVALID);
}

static void test_gguf_weights(void **state)
{
    (void)state;
    const char *path = tu_fixture("models/synth/qwen2-Q8_0.gguf");
    if (access(path, R_OK) != 0)
        TU_SKIP_OR_FAIL("fixture %s missing", path);
    hr_err err = {0};
    hr_fit_model fm;
    assert_int_equal(hr_fit_model_from_gguf(path, &fm, &err), HR_OK);
    assert_true(fm.exact);
    /* the file's 50 tensors, summed from its header by a separate parser (a
     * few lines of Python): 29 Q8_0 (34 bytes per 32) and 21 F32 */
    assert_true(fm.weights_bytes == 3499008.0);
    /* fixture shape: 4 layers, 2 KV heads x 64 */
    assert_int_equal(fm.spec.layers, 4);
    assert_true(hr_fit_kv_bytes_per_token(&fm.spec, 2) == 4.0 * 2 * 64 * 2 * 2);
    assert_string_equal(fm.quant, "Q8_0");
    /* a file that is not GGUF */
    assert_int_not_equal(hr_fit_model_from_gguf(tu_fixture("README.md"), &fm, &err), HR_OK);
}

/* The sliding-window layers of a GGUF come from the model loader's
 * descriptor (fixtures/README.md: gemma3 layers il % 6 < 5 local with
 * window 12, the 62-layer file 52 local with window 10; gpt-oss even layers
 * with window 16; phi3 never, whatever its sliding_window key says). */
static void test_gguf_windows(void **state)
{
    (void)state;
    static const struct {
        const char *file;
        int32_t layers, swa, window;
    } cases[] = {
        { "models/arch/gemma3-F32.gguf", 6, 5, 12 },
        { "models/arch/gemma3_27b-F32.gguf", 62, 52, 10 },
        { "models/arch/gpt-oss-F32.gguf", 2, 1, 16 },
        { "models/arch/phi3_longrope-F32.gguf", 2, 0, 0 },
        { "models/arch/qwen3moe-F32.gguf", 2, 0, 0 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const char *path = tu_fixture(cases[i].file);
        if (access(path, R_OK) != 0)
            TU_SKIP_OR_FAIL("fixture %s missing", path);
        hr_err err = {0};
        hr_fit_model fm;
        assert_int_equal(hr_fit_model_from_gguf(path, &fm, &err), HR_OK);
        assert_int_equal(fm.spec.layers, cases[i].layers);
        assert_int_equal(fm.spec.swa_layers, cases[i].swa);
        assert_int_equal(fm.spec.swa_window, cases[i].window);
        assert_int_equal(fm.spec.kv_layers, cases[i].layers - cases[i].swa);
    }
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void test_user_files(void **state)
{
    (void)state;
    char path[] = "/tmp/hr_fit_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    hr_err err = {0};
    hr_catalog *c = NULL;
    /* override a price, add a GPU */
    write_file(path, "{\"apis\": [{\"name\": \"gpt-4o\", \"input\": 1, \"output\": 2, \"source\": \"mine\", \"date\": "
                     "\"2026-11-28\"}]}");
    assert_int_equal(hr_catalog_load(NULL, NULL, path, &c, &err), HR_OK);
    assert_true(hr_catalog_find_api(c, "gpt-4o")->input == 1);
    assert_true(hr_catalog_find_api(c, "gpt-4o")->cached_input == 1); /* defaults to input */
    hr_catalog_free(c);
    /* bad files: each a clear error naming the problem */
    static const char *const bad[] = {
        "{not json",
        "[1, 2]",
        "{\"apis\": [{\"name\": \"x\", \"input\": \"cheap\", \"output\": 1, \"source\": \"s\", \"date\": \"d\"}]}",
        "{\"apis\": [{\"name\": \"x\", \"input\": -1, \"output\": 1, \"source\": \"s\", \"date\": \"d\"}]}",
        "{\"apis\": [{\"name\": \"Bad Name\", \"input\": 1, \"output\": 1, \"source\": \"s\", \"date\": \"d\"}]}",
        "{\"apis\": [{\"name\": \"x\", \"input\": 1, \"output\": 1}]}",
        "{\"apis\": [7]}",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        write_file(path, bad[i]);
        c = NULL;
        assert_int_equal(hr_catalog_load(NULL, NULL, path, &c, &err), HR_ERR_FORMAT);
        assert_null(c);
        assert_non_null(strstr(err.msg, path));
    }
    write_file(path, "{\"models\": [{\"name\": \"m\", \"arch\": \"x\", \"license\": \"l\", \"license_class\": \"mit\", "
                     "\"params_total\": 1e9, \"layers\": 2, \"context\": 100}]}");
    assert_int_equal(hr_catalog_load(path, NULL, NULL, &c, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "kv_heads"));
    write_file(path, "{\"gpus\": [{\"name\": \"cpu\", \"memory_gb\": 1, \"bandwidth_gbs\": 1, \"fp16_tflops\": 1}]}");
    assert_int_equal(hr_catalog_load(NULL, path, NULL, &c, &err), HR_ERR_FORMAT);
    assert_int_equal(hr_catalog_load(NULL, "/nonexistent/file.json", NULL, &c, &err), HR_ERR_IO);
    unlink(path);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_catalog_names), cmocka_unit_test(test_kv_bytes),   cmocka_unit_test(test_fit_result),
        cmocka_unit_test(test_gguf_weights),  cmocka_unit_test(test_gguf_windows), cmocka_unit_test(test_user_files),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
