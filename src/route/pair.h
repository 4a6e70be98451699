/* pair.h - storing a pilot pair (the record and hr_usage_record_pair()
 * belong to the store, src/store/usage.h, schema version 3). */
#ifndef HR_ROUTE_PAIR_H
#define HR_ROUTE_PAIR_H

#include <stdbool.h>

#include "store/usage.h"

/* Stores the pair; false when there is no usage log or it dropped it. */
static inline bool hr_pilot_record(hr_usage_db *db, const hr_pilot_pair *p)
{
    return db && hr_usage_record_pair(db, p);
}

#endif
