#include "cli/runner.h"

#include <string.h>

#include "cli/args.h"

int runner_open(cli_runner *r, const char *cmd, const char *path, int32_t n_ctx, int32_t n_threads)
{
    memset(r, 0, sizeof *r);
    hr_err err = {0};
    if (hr_model_load(path, &r->model, &err))
        return cli_fail(cmd, "%s", err.msg);
    const hr_hparams *hp = hr_model_hparams(r->model);
    if (n_ctx <= 0 || n_ctx > hp->n_ctx_train)
        n_ctx = hp->n_ctx_train;
    r->n_ctx = n_ctx;
    hr_kv_params kp = {.block_tokens = 16, .max_seqs = 1};
    kp.n_blocks = (n_ctx + kp.block_tokens - 1) / kp.block_tokens;
    hr_engine_params ep = {.max_batch = 512, .n_threads = n_threads};
    if (hr_kv_new(hp, &kp, &r->kv, &err) || hr_engine_new(r->model, &ep, &r->engine, &err)) {
        runner_close(r);
        return cli_fail(cmd, "%s", err.msg);
    }
    return 0;
}

void runner_close(cli_runner *r)
{
    hr_engine_free(r->engine);
    hr_kv_free(r->kv);
    hr_model_free(r->model);
    memset(r, 0, sizeof *r);
}

int runner_check_tokens(const cli_runner *r, const char *cmd, const int32_t *ids, size_t n)
{
    const int32_t nv = hr_model_hparams(r->model)->n_vocab;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= nv)
            return cli_fail(cmd, "token id %d out of range [0, %d)", ids[i], nv);
    return 0;
}
