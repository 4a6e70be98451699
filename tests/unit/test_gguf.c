/* GGUF reader: valid files parse with every value type; corrupt, truncated
 * and hostile images are rejected with a message naming the problem. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "gguf/gguf.h"
#include "gguf/gguf_write.h"
#include "quant/quant.h"
#include "testutil.h"

static void *build_sample(size_t *size)
{
    hr_gguf_writer *w = hr_gguf_writer_new();
    assert_non_null(w);
    assert_int_equal(hr_gguf_writer_str(w, "general.architecture", "llama"), HR_OK);
    assert_int_equal(hr_gguf_writer_u32(w, "a.u32", 7), HR_OK);
    assert_int_equal(hr_gguf_writer_i32(w, "a.i32", -3), HR_OK);
    assert_int_equal(hr_gguf_writer_u64(w, "a.u64", 1ull << 40), HR_OK);
    assert_int_equal(hr_gguf_writer_f32(w, "a.f32", 0.5f), HR_OK);
    assert_int_equal(hr_gguf_writer_bool(w, "a.bool", 1), HR_OK);
    int16_t shorts[3] = {-1, 2, 300};
    assert_int_equal(hr_gguf_writer_arr(w, "a.arr_i16", HR_GGUF_I16, shorts, 3), HR_OK);
    const char *strs[] = {"x", "", "hello"};
    assert_int_equal(hr_gguf_writer_arr_str(w, "a.arr_str", strs, 3), HR_OK);
    float data[64];
    for (int i = 0; i < 64; i++)
        data[i] = (float)i;
    int64_t ne[2] = {32, 2};
    assert_int_equal(hr_gguf_writer_tensor(w, "t.one", HR_TYPE_F32, 2, ne, data, sizeof data), HR_OK);
    int64_t ne1[1] = {16};
    assert_int_equal(hr_gguf_writer_tensor(w, "t.two", HR_TYPE_F32, 1, ne1, data, 64), HR_OK);
    void *img;
    hr_err err = {0};
    assert_int_equal(hr_gguf_writer_to_memory(w, &img, size, &err), HR_OK);
    hr_gguf_writer_free(w);
    return img;
}

static void test_roundtrip(void **state)
{
    (void)state;
    size_t n;
    void *img = build_sample(&n);
    hr_gguf *g;
    hr_err err = {0};
    assert_int_equal(hr_gguf_open_memory(img, n, &g, &err), HR_OK);
    assert_int_equal(hr_gguf_version(g), 3);
    uint32_t u32 = 0;
    int64_t i64 = 0;
    uint64_t u64 = 0;
    float f = 0;
    bool b = false;
    assert_true(hr_gguf_get_u32(g, "a.u32", &u32));
    assert_int_equal(u32, 7);
    assert_true(hr_gguf_get_i64(g, "a.i32", &i64));
    assert_int_equal(i64, -3);
    assert_false(hr_gguf_get_u64(g, "a.i32", &u64)); /* negative does not coerce to unsigned */
    assert_true(hr_gguf_get_u64(g, "a.u64", &u64));
    assert_true(u64 == 1ull << 40);
    assert_false(hr_gguf_get_u32(g, "a.u64", &u32)); /* does not fit */
    assert_true(hr_gguf_get_f32(g, "a.f32", &f));
    assert_true(f == 0.5f);
    assert_true(hr_gguf_get_bool(g, "a.bool", &b) && b);
    const hr_gguf_value *arr = hr_gguf_get_arr(g, "a.arr_i16", HR_GGUF_I16);
    assert_non_null(arr);
    assert_int_equal(arr->v.arr.n, 3);
    assert_int_equal(hr_gguf_arr_i64(arr, 0), -1);
    assert_int_equal(hr_gguf_arr_i64(arr, 2), 300);
    const hr_gguf_value *sa = hr_gguf_get_arr(g, "a.arr_str", HR_GGUF_STRING);
    assert_non_null(sa);
    assert_true(hr_gguf_str_eq(sa->v.arr.items[2].v.s, "hello"));
    assert_true(hr_gguf_str_eq(sa->v.arr.items[1].v.s, ""));
    assert_null(hr_gguf_find(g, "missing"));
    const hr_gguf_tensor *t = hr_gguf_find_tensor(g, "t.one");
    assert_non_null(t);
    assert_int_equal(t->ne[0], 32);
    assert_int_equal(t->ne[1], 2);
    assert_int_equal(t->size, 256);
    static const float first[4] = {0, 1, 2, 3};
    assert_memory_equal(t->data, first, 16);
    const hr_gguf_tensor *t2 = hr_gguf_find_tensor(g, "t.two");
    assert_non_null(t2);
    assert_int_equal((uintptr_t)((const char *)t2->data - (const char *)t->data) % 32, 0);
    assert_null(hr_gguf_find_tensor(g, "t.three"));
    hr_gguf_close(g);
    free(img);
}

/* Every proper prefix of a valid file is rejected (no crash, clear error). */
static void test_every_truncation(void **state)
{
    (void)state;
    size_t n;
    uint8_t *img = build_sample(&n);
    for (size_t len = 0; len < n; len++) {
        uint8_t *cut = malloc(len ? len : 1); /* exact-size copy so ASan sees overreads */
        memcpy(cut, img, len);
        hr_gguf *g = NULL;
        hr_err err = {0};
        hr_status st = hr_gguf_open_memory(cut, len, &g, &err);
        if (st == HR_OK) {
            fail_msg("truncated image of %zu/%zu bytes was accepted", len, n);
        }
        assert_null(g);
        assert_true(strlen(err.msg) > 0);
        free(cut);
    }
    free(img);
}

static hr_status open_img(uint8_t *img, size_t n, hr_err *err)
{
    hr_gguf *g = NULL;
    hr_status st = hr_gguf_open_memory(img, n, &g, err);
    hr_gguf_close(g);
    return st;
}

static void put64(uint8_t *p, uint64_t v) { memcpy(p, &v, 8); }

static void test_hostile_headers(void **state)
{
    (void)state;
    size_t n;
    uint8_t *img = build_sample(&n);
    hr_err err = {0};

    uint8_t *bad = malloc(n);
    memcpy(bad, img, n);
    memcpy(bad, "GGUX", 4);
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "not a GGUF file"));

    memcpy(bad, img, n);
    uint32_t v = 1;
    memcpy(bad + 4, &v, 4);
    assert_int_equal(open_img(bad, n, &err), HR_ERR_UNSUPPORTED);
    assert_non_null(strstr(err.msg, "version"));

    memcpy(bad, img, n);
    put64(bad + 8, 1ull << 60); /* absurd tensor count */
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "tensors"));

    memcpy(bad, img, n);
    put64(bad + 16, 1ull << 60); /* absurd metadata count */
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);

    memcpy(bad, img, n);
    put64(bad + 24, 1ull << 62); /* first key length */
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "truncated"));
    free(bad);
    free(img);
}

/* Finds the tensor-info entry of `name` in an image and returns a pointer to
 * its offset field (after dims and type). */
static uint8_t *tensor_info(uint8_t *img, size_t n, const char *name, uint32_t n_dims)
{
    size_t len = strlen(name);
    for (size_t i = 8; i + len < n; i++)
        if (!memcmp(img + i, name, len) && !memcmp(img + i - 8, &(uint64_t){len}, 8))
            return img + i + len + 4 + 8 * n_dims + 4;
    return NULL;
}

static void test_tensor_bounds(void **state)
{
    (void)state;
    size_t n;
    uint8_t *img = build_sample(&n);
    hr_err err = {0};
    uint8_t *bad = malloc(n);

    memcpy(bad, img, n);
    uint8_t *off = tensor_info(bad, n, "t.two", 1);
    assert_non_null(off);
    put64(off, 1ull << 40); /* far past the end */
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "t.two"));
    assert_non_null(strstr(err.msg, "past the end"));

    memcpy(bad, img, n);
    off = tensor_info(bad, n, "t.two", 1);
    put64(off, 8); /* misaligned */
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "aligned"));

    memcpy(bad, img, n);
    off = tensor_info(bad, n, "t.one", 2);
    put64(off - 4 - 8, 1ull << 61); /* ne[1] absurd */
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);

    memcpy(bad, img, n);
    off = tensor_info(bad, n, "t.one", 2);
    uint32_t ty = 200;
    memcpy(off - 4, &ty, 4);
    assert_int_equal(open_img(bad, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "unknown type"));

    /* truncated tensor data: drop the last 16 bytes */
    assert_int_equal(open_img(img, n - 16, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "past the end"));
    free(bad);
    free(img);
}

static void test_duplicates_and_nesting(void **state)
{
    (void)state;
    hr_gguf_writer *w = hr_gguf_writer_new();
    hr_gguf_writer_u32(w, "k", 1);
    hr_gguf_writer_u32(w, "k", 2);
    void *img;
    size_t n;
    hr_err err = {0};
    assert_int_equal(hr_gguf_writer_to_memory(w, &img, &n, &err), HR_OK);
    assert_int_equal(open_img(img, n, &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "duplicate metadata key 'k'"));
    free(img);
    hr_gguf_writer_free(w);

    /* an array nested 100 deep is refused without deep recursion */
    size_t cap = 64 + 12 * 100;
    uint8_t *p = calloc(1, cap), *q = p;
    memcpy(q, "GGUF", 4);
    q += 4;
    uint32_t ver = 3;
    memcpy(q, &ver, 4);
    q += 4;
    put64(q, 0);
    put64(q + 8, 1);
    q += 16;
    put64(q, 1);
    q[8] = 'n';
    q += 9;
    uint32_t arr = HR_GGUF_ARRAY;
    memcpy(q, &arr, 4);
    q += 4;
    for (int i = 0; i < 100; i++) {
        memcpy(q, &arr, 4);
        put64(q + 4, 1);
        q += 12;
    }
    assert_int_equal(open_img(p, (size_t)(q - p), &err), HR_ERR_FORMAT);
    assert_non_null(strstr(err.msg, "nested"));
    free(p);
}

static void test_real_files(void **state)
{
    (void)state;
    hr_gguf *g;
    hr_err err = {0};
    assert_int_equal(hr_gguf_open(tu_fixture("models/stories260K.gguf"), &g, &err), HR_OK);
    const hr_gguf_value *toks = hr_gguf_get_arr(g, "tokenizer.ggml.tokens", HR_GGUF_STRING);
    assert_non_null(toks);
    assert_int_equal(toks->v.arr.n, 512);
    assert_non_null(hr_gguf_find_tensor(g, "token_embd.weight"));
    hr_gguf_close(g);

    assert_int_equal(hr_gguf_open("/nonexistent/x.gguf", &g, &err), HR_ERR_IO);
    assert_non_null(strstr(err.msg, "cannot open"));
    assert_null(g);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),
        cmocka_unit_test(test_every_truncation),
        cmocka_unit_test(test_hostile_headers),
        cmocka_unit_test(test_tensor_bounds),
        cmocka_unit_test(test_duplicates_and_nesting),
        cmocka_unit_test(test_real_files),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
