/* fuzz_config.c - libFuzzer target for the routing config
 * (hr_route_config_parse from a buffer), and for the budget ledger built
 * from what parses. Any error is fine; a crash, leak or hang is not. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route/budget.h"
#include "route/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hr_route_config *c = NULL;
    hr_err err;
    if (hr_route_config_parse((const char *)data, size, &c, &err) != HR_OK)
        return 0;
    /* everything that parsed can be looked up and priced */
    for (int i = 0; i < c->n_routes; i++) {
        const hr_route *r = &c->routes[i];
        if (hr_route_config_find(c, r->name) == NULL || r->n_targets > HR_ROUTE_MAX_TARGETS)
            abort();
        for (int t = 0; t < r->n_targets; t++) {
            int b = r->targets[t].backend;
            if (b != HR_ROUTE_LOCAL && (b < 0 || b >= c->n_backends))
                abort();
            if (b >= 0 && r->targets[t].model)
                (void)hr_backend_price(&c->backends[b], r->targets[t].model);
        }
    }
    for (int b = 0; b < c->n_backends; b++)
        if (hr_route_config_backend(c, c->backends[b].name) < 0)
            abort();
    hr_budget *bu = NULL;
    if (hr_budget_new(c, &bu, &err) == HR_OK)
        hr_budget_free(bu);
    hr_route_config_free(c);
    return 0;
}
