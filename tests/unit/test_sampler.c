/* Sampling: greedy picks the lowest id on ties, a seed reproduces a draw
 * sequence, filters restrict the candidates, penalties move logits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "sample/sampler.h"

#define NV 64

static void fill(float *l)
{
    for (int i = 0; i < NV; i++)
        l[i] = (float)((i * 37) % NV) / 8.0f; /* distinct values, max at i with (i*37)%64 == 63 */
}

static hr_sampler *mk(hr_sample_params p)
{
    hr_sampler *s;
    hr_err err = {0};
    assert_int_equal(hr_sampler_new(&p, NV, &s, &err), HR_OK);
    return s;
}

static void test_greedy(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 0;
    hr_sampler *s = mk(p);
    float l[NV] = {0};
    l[5] = 2.0f;
    l[9] = 2.0f;
    assert_int_equal(hr_sampler_sample(s, l), 5);
    float m[NV];
    fill(m);
    int32_t want = hr_argmax(m, NV);
    assert_int_equal(hr_sampler_sample(s, m), want);
    assert_int_equal((want * 37) % NV, 63);
    hr_sampler_free(s);
}

static void test_seed_reproducible(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 1.5f;
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.seed = 1234;
    int32_t a[200], b[200];
    for (int run = 0; run < 2; run++) {
        hr_sampler *s = mk(p);
        for (int i = 0; i < 200; i++) {
            float l[NV];
            fill(l);
            (run ? b : a)[i] = hr_sampler_sample(s, l);
        }
        hr_sampler_free(s);
    }
    assert_memory_equal(a, b, sizeof a);
    int distinct = 0;
    for (int i = 1; i < 200; i++)
        distinct += a[i] != a[0];
    assert_true(distinct > 10); /* it really samples */
    p.seed = 99;
    hr_sampler *s = mk(p);
    int same = 0;
    for (int i = 0; i < 200; i++) {
        float l[NV];
        fill(l);
        same += hr_sampler_sample(s, l) == a[i];
    }
    assert_true(same < 200);
    hr_sampler_free(s);
}

static void test_filters(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 1.0f;
    p.top_k = 3;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    hr_sampler *s = mk(p);
    float ref[NV];
    fill(ref);
    for (int i = 0; i < 300; i++) {
        float l[NV];
        fill(l);
        int32_t t = hr_sampler_sample(s, l);
        assert_true(ref[t] >= 61.0f / 8.0f); /* one of the three largest */
    }
    hr_sampler_free(s);

    /* min_p 0.5 keeps only tokens within log(2) of the max: values 63/8 and 62/8, 61/8, 60/8 are within 0.693 */
    p.top_k = 0;
    p.min_p = 0.5f;
    s = mk(p);
    for (int i = 0; i < 300; i++) {
        float l[NV];
        fill(l);
        int32_t t = hr_sampler_sample(s, l);
        assert_true(ref[t] >= 63.0f / 8.0f - 0.6932f);
    }
    hr_sampler_free(s);

    /* top_p tiny: always the best */
    p.min_p = 0.0f;
    p.top_p = 0.01f;
    s = mk(p);
    for (int i = 0; i < 50; i++) {
        float l[NV];
        fill(l);
        assert_int_equal(hr_sampler_sample(s, l), hr_argmax(ref, NV));
    }
    hr_sampler_free(s);
}

static void test_penalties_and_bias(void **state)
{
    (void)state;
    hr_sample_params p = hr_sample_defaults();
    p.temperature = 0;
    p.repetition_penalty = 2.0f;
    p.presence_penalty = 0.5f;
    p.frequency_penalty = 0.25f;
    hr_sampler *s = mk(p);
    hr_sampler_accept(s, 3);
    hr_sampler_accept(s, 3);
    hr_sampler_accept(s, 4);
    float l[NV] = {0};
    l[3] = 4.0f;
    l[4] = -1.0f;
    l[7] = 1.5f;
    /* token 3: 4/2 - 0.5 - 2*0.25 = 1.0 < 1.5 */
    assert_int_equal(hr_sampler_sample(s, l), 7);
    assert_true(fabsf(l[3] - 1.0f) < 1e-6f);
    assert_true(fabsf(l[4] - (-2.0f - 0.5f - 0.25f)) < 1e-6f);
    hr_err err = {0};
    assert_int_equal(hr_sampler_set_bias(s, 7, -INFINITY, &err), HR_OK);
    assert_int_equal(hr_sampler_set_bias(s, NV, 1.0f, &err), HR_ERR_INVALID);
    float m[NV] = {0};
    m[7] = 10.0f;
    m[8] = 1.0f;
    assert_int_equal(hr_sampler_sample(s, m), 8);
    int32_t ids[3];
    float lp[3];
    assert_int_equal(hr_sampler_top_logprobs(s, 3, ids, lp), 3);
    assert_int_equal(ids[0], 8);
    assert_true(lp[0] < 0.0f && lp[0] >= lp[1] && lp[1] >= lp[2]);
    hr_sampler_free(s);

    /* invalid parameters are rejected */
    p.repetition_penalty = 0.0f;
    hr_sampler *bad = NULL;
    assert_int_equal(hr_sampler_new(&p, NV, &bad, &err), HR_ERR_INVALID);
    assert_null(bad);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greedy),
        cmocka_unit_test(test_seed_reproducible),
        cmocka_unit_test(test_filters),
        cmocka_unit_test(test_penalties_and_bias),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
