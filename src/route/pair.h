/* pair.h - the pilot pair record of the usage log (src/store/usage.h).
 *
 * The record and hr_usage_record_pair() belong to the store (the
 * PostgreSQL/pilot work of issue 8). Until a store with them is merged
 * (usage schema version 3), this header declares the same record here and
 * the function as a weak symbol: hr_pilot_record() then counts the pair
 * but stores nothing. */
#ifndef HR_ROUTE_PAIR_H
#define HR_ROUTE_PAIR_H

#include <stdbool.h>
#include <stdint.h>

#include "store/usage.h"

#if HR_USAGE_SCHEMA_VERSION < 3
typedef struct {
    int64_t ts_ms;
    const char *request_id;
    const char *route;
    const char *key_id;
    const char *primary_backend, *primary_model;
    const char *shadow_backend, *shadow_model;
    const char *primary_text, *shadow_text;
    double primary_ttft_s, primary_total_s, shadow_ttft_s, shadow_total_s;
    int32_t primary_prompt_tokens, primary_completion_tokens;
    int32_t shadow_prompt_tokens, shadow_completion_tokens;
    int32_t primary_status, shadow_status;
    double score_exact;
    double score_f1;
    double score_json;
    double score_judge;
} hr_pilot_pair;
bool hr_usage_record_pair(hr_usage_db *db, const hr_pilot_pair *p) __attribute__((weak));
#define HR_PAIR_STORE_OPTIONAL 1
#endif

/* Stores the pair when the store can; false when it cannot or dropped it. */
static inline bool hr_pilot_record(hr_usage_db *db, const hr_pilot_pair *p)
{
#ifdef HR_PAIR_STORE_OPTIONAL
    if (!hr_usage_record_pair)
        return false;
#endif
    return db && hr_usage_record_pair(db, p);
}

#endif
