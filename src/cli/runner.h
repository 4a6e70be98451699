/* runner.h - model + KV cache + engine for one CLI sequence. */
#ifndef HR_CLI_RUNNER_H
#define HR_CLI_RUNNER_H

#include "engine/engine.h"
#include "engine/kvcache.h"
#include "model/model.h"

typedef struct {
    hr_model *model;
    hr_kv *kv;
    hr_engine *engine;
    int32_t n_ctx;
} cli_runner;

/* Loads the model and sizes the cache for n_ctx positions of sequence 0
 * (n_ctx <= 0: the model's training context). Prints the error and returns
 * 1 on failure. */
int runner_open(cli_runner *r, const char *cmd, const char *path, int32_t n_ctx, int32_t n_threads);
void runner_close(cli_runner *r);

/* Checks prompt ids against the vocabulary; prints the error and returns 1. */
int runner_check_tokens(const cli_runner *r, const char *cmd, const int32_t *ids, size_t n);

#endif
