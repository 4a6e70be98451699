/* cost.c - self-hosting vs API cost from the usage log (see cost.h). */
#include "report/cost.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#define MONTH_S (HR_COST_MONTH_HOURS * 3600.0)

static void reason(hr_cost_report *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reason(hr_cost_report *r, const char *fmt, ...)
{
    if (r->n_reasons >= HR_COST_MAX_REASONS)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->reasons[r->n_reasons++], sizeof r->reasons[0], fmt, ap);
    va_end(ap);
}

static int64_t deployments_for(const hr_cost_report *r, double v)
{
    if (r->capacity_month <= 0 || v <= 0)
        return 1;
    double d = ceil(v / r->capacity_month);
    return d < 1 ? 1 : (int64_t)d;
}

double hr_cost_self_at(const hr_cost_report *r, double v)
{
    return (double)deployments_for(r, v) * r->gpu_monthly + r->eng_monthly;
}

/* Smallest v with self(v) <= price * v; -1 if none (within 1e6 deployments). */
static double break_even(const hr_cost_report *r, double per_token, int64_t *deployments)
{
    *deployments = 0;
    if (per_token <= 0)
        return -1;
    double G = r->gpu_monthly, E = r->eng_monthly, C = r->capacity_month;
    if (C <= 0)
        return -1;
    for (int64_t k = 1; k <= 1000000; k++) {
        double v = ((double)k * G + E) / per_token;
        double lo = (double)(k - 1) * C;
        if (v < lo)
            v = lo; /* at the step itself self-hosting jumps; the API is dearer from here on */
        if (v <= (double)k * C) {
            *deployments = k;
            return v;
        }
        /* the marginal deployment never pays when G / C >= per_token and E >= 0 */
        if (G >= per_token * C && k > 1)
            break;
    }
    return -1;
}

hr_status hr_cost_compute(const hr_usage_totals *t, const hr_cost_params *p, const hr_api_price *const *apis,
                          int n_apis, hr_cost_report *r, hr_err *err)
{
    memset(r, 0, sizeof *r);
    r->t = *t;
    r->p = *p;
    if (p->gpu_price < 0 || p->gpus < 1 || p->eng_hours < 0 || p->eng_rate < 0)
        return hr_err_set(err, HR_ERR_INVALID, "cost: negative price, hours or GPU count");
    if (n_apis > HR_COST_MAX_APIS)
        return hr_err_set(err, HR_ERR_INVALID, "cost: at most %d APIs", HR_COST_MAX_APIS);
    if (t->requests == 0)
        return hr_err_set(err, HR_ERR_NOT_FOUND, "the usage log has no successful requests in the chosen period");
    r->since_ms = p->since_ms > 0 ? p->since_ms : t->first_ms;
    r->until_ms = p->until_ms > 0 ? p->until_ms : t->last_end_ms;
    r->window_s = (double)(r->until_ms - r->since_ms) / 1000.0;
    if (r->window_s <= 0)
        return hr_err_set(err, HR_ERR_INVALID, "cost: the period is empty (give --since and --until around the traffic)");
    r->scale = MONTH_S / r->window_s;
    double prompt = (double)t->prompt_tokens, cached = (double)t->cached_tokens, out = (double)t->completion_tokens;
    if (cached > prompt)
        cached = prompt;
    r->m_requests = (double)t->requests * r->scale;
    r->m_input = (prompt - cached) * r->scale;
    r->m_cached = cached * r->scale;
    r->m_output = out * r->scale;
    r->m_total = (prompt + out) * r->scale;

    if (p->capacity_tps > 0) {
        r->capacity_tps = p->capacity_tps;
    } else {
        if (t->busy_s <= 0)
            return hr_err_set(err, HR_ERR_INVALID,
                              "cost: the log has no request durations to measure capacity from; give --capacity");
        r->capacity_tps = (prompt + out) / t->busy_s;
        r->capacity_measured = true;
    }
    r->capacity_month = r->capacity_tps * MONTH_S;
    r->utilisation = r->m_total / r->capacity_month;
    r->deployments = deployments_for(r, r->m_total);
    r->gpu_monthly = (double)p->gpus * p->gpu_price * HR_COST_MONTH_HOURS;
    r->eng_monthly = p->eng_hours * p->eng_rate;
    r->self_monthly = hr_cost_self_at(r, r->m_total);
    r->self_per_1m = r->m_total > 0 ? r->self_monthly / r->m_total * 1e6 : 0;
    r->self_per_1m_full = (r->gpu_monthly + r->eng_monthly) / r->capacity_month * 1e6;

    r->n_apis = n_apis;
    for (int i = 0; i < n_apis; i++) {
        hr_cost_api *a = &r->apis[i];
        a->api = apis[i];
        a->monthly = (r->m_input * apis[i]->input + r->m_cached * apis[i]->cached_input +
                      r->m_output * apis[i]->output) / 1e6;
        a->per_1m = r->m_total > 0 ? a->monthly / r->m_total * 1e6 : 0;
        a->break_even = break_even(r, a->per_1m / 1e6, &a->break_even_deployments);
    }

    /* the recommendation, in the framework's bands */
    const hr_cost_api *cheapest = NULL;
    for (int i = 0; i < r->n_apis; i++)
        if (!cheapest || r->apis[i].monthly < cheapest->monthly)
            cheapest = &r->apis[i];
    double V = r->m_total;
    bool pays = cheapest && cheapest->break_even >= 0 && V >= cheapest->break_even;
    bool pays_any = false;
    for (int i = 0; i < r->n_apis; i++)
        if (r->apis[i].break_even >= 0 && V >= r->apis[i].break_even)
            pays_any = true;
    reason(r, "volume: %.2fM tokens/month (%.2fM input, of which %.2fM cached; %.2fM output), extrapolated from %.2f "
              "days of logged traffic",
           V / 1e6, (r->m_input + r->m_cached) / 1e6, r->m_cached / 1e6, r->m_output / 1e6, r->window_s / 86400.0);
    if (V < 5e6) {
        if (p->data_must_stay)
            snprintf(r->verdict, sizeof r->verdict, "self-host because the data must not leave; it costs more than an API at this volume");
        else
            snprintf(r->verdict, sizeof r->verdict, "stay on the API");
        reason(r, "under ~5M tokens/month an API is almost always cheaper: self-hosting costs $%.0f/month here "
                  "against $%.2f for %s",
               r->self_monthly, cheapest ? cheapest->monthly : 0.0, cheapest ? cheapest->api->name : "the API");
    } else if (V <= 50e6) {
        snprintf(r->verdict, sizeof r->verdict, "%s",
                 p->data_must_stay ? "self-host: the data must not leave, and 5-50M tokens/month is workable"
                                   : "decide on constraints and traffic shape");
        reason(r, "5-50M tokens/month: cost alone rarely decides; data rules, latency and how steady the traffic is "
                  "do");
    } else {
        snprintf(r->verdict, sizeof r->verdict, "%s",
                 pays ? "self-host: it pays at this volume" : "self-hosting usually pays above ~50M tokens/month, but not at these prices");
        reason(r, "above ~50M tokens/month self-hosting usually pays");
    }
    reason(r, "measured utilisation %.1f%% of one deployment's capacity (%.0f tokens/s%s): self-hosting costs $%.3f "
              "per 1M tokens at this load, $%.3f at full load",
           100 * r->utilisation, r->capacity_tps,
           r->capacity_measured ? ", measured while busy at the logged concurrency; more concurrent users raise it: "
                                  "pass --capacity from `hearth fit`"
                                : ", as given",
           r->self_per_1m, r->self_per_1m_full);
    if (cheapest) {
        if (cheapest->break_even >= 0)
            reason(r, "break-even against the cheapest API priced (%s, $%.3f per 1M at this mix): %.2fM tokens/month; "
                      "you are at %.1f%% of it",
                   cheapest->api->name, cheapest->per_1m, cheapest->break_even / 1e6,
                   100 * V / cheapest->break_even);
        else
            reason(r, "self-hosting never costs less than %s at these prices ($%.3f per 1M even at full load vs "
                      "$%.3f)",
                   cheapest->api->name, r->self_per_1m_full, cheapest->per_1m);
    }
    if (!pays && pays_any)
        reason(r, "self-hosting is already cheaper than some of the dearer APIs listed (see break-even column)");
    if (r->utilisation < 0.2 && V >= 5e6)
        reason(r, "utilisation under 20%%: bursty traffic leaves paid GPUs idle; batch work into busy hours or share "
                  "the hardware");
    if (p->data_must_stay)
        reason(r, "data must not leave: an external API is ruled out whatever the price");
    reason(r, "assumes the API would see the same token counts (tokenizers differ by ~10-20%%) and that "
              "quality is comparable for your task");
    return HR_OK;
}

/* ---- SVG ---- */

typedef struct {
    double x0, x1, y0, y1; /* log10 ranges */
    double left, top, w, h;
} axes;

static double px(const axes *a, double v)
{
    return a->left + (log10(v) - a->x0) / (a->x1 - a->x0) * a->w;
}

static double py(const axes *a, double v)
{
    double l = log10(v);
    if (l < a->y0)
        l = a->y0;
    if (l > a->y1)
        l = a->y1;
    return a->top + a->h - (l - a->y0) / (a->y1 - a->y0) * a->h;
}

static void fmt_tokens(double v, char *buf, size_t cap)
{
    if (v >= 1e9)
        snprintf(buf, cap, "%.3gB", v / 1e9);
    else if (v >= 1e6)
        snprintf(buf, cap, "%.3gM", v / 1e6);
    else
        snprintf(buf, cap, "%.3gk", v / 1e3);
}

static void fmt_usd(double v, char *buf, size_t cap)
{
    if (v >= 1e6)
        snprintf(buf, cap, "$%gM", v / 1e6);
    else if (v >= 1e3)
        snprintf(buf, cap, "$%gk", v / 1e3);
    else
        snprintf(buf, cap, "$%g", v);
}

static void xml_text(FILE *f, const char *s)
{
    for (; *s; s++) {
        switch (*s) {
        case '<': fputs("&lt;", f); break;
        case '>': fputs("&gt;", f); break;
        case '&': fputs("&amp;", f); break;
        case '"': fputs("&quot;", f); break;
        default: fputc(*s, f);
        }
    }
}

static const char *const palette[] = {"#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e",
                                      "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"};

hr_status hr_cost_svg(const hr_cost_report *r, FILE *f, hr_err *err)
{
    /* x: monthly tokens, from 1M (or less) to past every break-even and 10x the volume */
    double vmin = 1e6, vmax = r->m_total * 10;
    for (int i = 0; i < r->n_apis; i++)
        if (r->apis[i].break_even > 0 && r->apis[i].break_even * 3 > vmax)
            vmax = r->apis[i].break_even * 3;
    if (r->m_total / 10 < vmin)
        vmin = r->m_total / 10 > 1e3 ? r->m_total / 10 : 1e3;
    if (vmax < vmin * 100)
        vmax = vmin * 100;
    if (vmax > 1e13)
        vmax = 1e13;
    axes a = {.x0 = floor(log10(vmin)), .x1 = ceil(log10(vmax)), .left = 90, .top = 50, .w = 640, .h = 400};
    /* y: monthly USD over that range */
    double ymin = 1e30, ymax = 0;
    double xs[2] = {pow(10, a.x0), pow(10, a.x1)};
    for (int k = 0; k < 2; k++) {
        double s = hr_cost_self_at(r, xs[k]);
        if (s > ymax) ymax = s;
        if (s < ymin) ymin = s;
        for (int i = 0; i < r->n_apis; i++) {
            double c = r->apis[i].per_1m * xs[k] / 1e6;
            if (c > ymax) ymax = c;
            if (c > 0 && c < ymin) ymin = c;
        }
    }
    if (ymin < 1)
        ymin = 1;
    if (ymax <= ymin)
        ymax = ymin * 10;
    a.y0 = floor(log10(ymin));
    a.y1 = ceil(log10(ymax));
    const int W = 1000, H = 520;

    fprintf(f, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    fprintf(f, "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" viewBox=\"0 0 %d %d\" "
               "font-family=\"sans-serif\" font-size=\"12\">\n", W, H, W, H);
    fprintf(f, "<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n", W, H);
    fprintf(f, "<text x=\"%d\" y=\"28\" font-size=\"16\" font-weight=\"bold\">Monthly cost vs monthly volume: "
               "self-hosting vs APIs</text>\n", (int)a.left);
    /* grid and tick labels */
    for (double e = a.x0; e <= a.x1 + 1e-9; e++) {
        double x = px(&a, pow(10, e));
        char lab[32];
        fmt_tokens(pow(10, e), lab, sizeof lab);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", x, a.top, x, a.top + a.h);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"middle\">%s</text>\n", x, a.top + a.h + 16, lab);
    }
    for (double e = a.y0; e <= a.y1 + 1e-9; e++) {
        double y = py(&a, pow(10, e));
        char lab[32];
        fmt_usd(pow(10, e), lab, sizeof lab);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>\n", a.left, y, a.left + a.w, y);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" text-anchor=\"end\">%s</text>\n", a.left - 6, y + 4, lab);
    }
    fprintf(f, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#333\"/>\n", a.left,
            a.top, a.w, a.h);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" text-anchor=\"middle\">tokens per month (input + output, log scale)</text>\n",
            a.left + a.w / 2, H - 30);
    fprintf(f, "<text transform=\"translate(22 %.1f) rotate(-90)\" text-anchor=\"middle\">USD per month (log scale)"
               "</text>\n", a.top + a.h / 2);

    /* API lines (straight on log-log) */
    for (int i = 0; i < r->n_apis; i++) {
        const char *col = palette[(i + 1) % (sizeof palette / sizeof palette[0])];
        fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.8\" points=\"", col);
        for (int k = 0; k <= 64; k++) {
            double v = pow(10, a.x0 + (a.x1 - a.x0) * k / 64.0);
            fprintf(f, "%.1f,%.1f ", px(&a, v), py(&a, r->apis[i].per_1m * v / 1e6));
        }
        fprintf(f, "\"/>\n");
    }
    /* self-hosting: a step function (a deployment added per capacity) */
    fprintf(f, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"3\" points=\"", palette[0]);
    for (int k = 0; k <= 400; k++) {
        double v = pow(10, a.x0 + (a.x1 - a.x0) * k / 400.0);
        fprintf(f, "%.1f,%.1f ", px(&a, v), py(&a, hr_cost_self_at(r, v)));
    }
    fprintf(f, "\"/>\n");
    /* crossovers; labels stacked above the self-hosting line so that
     * neighbouring break-evens stay readable */
    int shown = 0;
    for (int i = 0; i < r->n_apis; i++) {
        double be = r->apis[i].break_even;
        if (be <= 0 || log10(be) < a.x0 || log10(be) > a.x1)
            continue;
        const char *col = palette[(i + 1) % (sizeof palette / sizeof palette[0])];
        double x = px(&a, be), y = py(&a, r->apis[i].per_1m * be / 1e6);
        char lab[32];
        fmt_tokens(be, lab, sizeof lab);
        fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"white\" stroke=\"%s\" stroke-width=\"2\"/>\n", x, y,
                col);
        double ly0 = y - 10 - 14.0 * shown++;
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"0.8\"/>\n", x,
                y - 5, x, ly0 + 2, col);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" fill=\"%s\" font-size=\"11\" text-anchor=\"middle\">%s</text>\n", x,
                ly0, col, lab);
    }
    /* the current volume */
    if (r->m_total > 0 && log10(r->m_total) >= a.x0 && log10(r->m_total) <= a.x1) {
        double x = px(&a, r->m_total);
        char lab[32];
        fmt_tokens(r->m_total, lab, sizeof lab);
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#333\" stroke-dasharray=\"5,4\"/>\n",
                x, a.top, x, a.top + a.h);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">now: %s/month</text>\n", x + 4, a.top + 14, lab);
    }
    /* legend */
    double lx = a.left + a.w + 20, ly = a.top + 10;
    fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"3\"/>\n", lx, ly,
            lx + 24, ly, palette[0]);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">self-hosted (%d GPU%s, $%g/h)</text>\n", lx + 30, ly + 4, r->p.gpus,
            r->p.gpus == 1 ? "" : "s", r->p.gpu_price);
    for (int i = 0; i < r->n_apis; i++) {
        ly += 20;
        const char *col = palette[(i + 1) % (sizeof palette / sizeof palette[0])];
        fprintf(f, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"%s\" stroke-width=\"1.8\"/>\n", lx,
                ly, lx + 24, ly, col);
        fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">", lx + 30, ly + 4);
        xml_text(f, r->apis[i].api->name);
        fprintf(f, " ($%.2f/1M)</text>\n", r->apis[i].per_1m);
    }
    ly += 28;
    fprintf(f, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"5\" fill=\"white\" stroke=\"#333\" stroke-width=\"2\"/>\n", lx + 12,
            ly);
    fprintf(f, "<text x=\"%.1f\" y=\"%.1f\">break-even</text>\n", lx + 30, ly + 4);
    fprintf(f, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" fill=\"#555\">", a.left, H - 10);
    xml_text(f, r->verdict);
    fprintf(f, "</text>\n</svg>\n");
    if (ferror(f))
        return hr_err_set(err, HR_ERR_IO, "writing the SVG failed");
    return HR_OK;
}
