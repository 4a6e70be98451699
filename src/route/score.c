/* score.c - pilot agreement scores (see score.h). */
#include "route/score.h"

#include <ctype.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

char *hr_score_normalize(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t k = 0;
    bool space = false;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (isspace(ch)) {
            space = k > 0;
            continue;
        }
        if (space)
            o[k++] = ' ';
        space = false;
        o[k++] = (char)(ch < 0x80 ? tolower(ch) : ch);
    }
    o[k] = 0;
    /* punctuation at both ends */
    size_t a = 0;
    while (a < k && (ispunct((unsigned char)o[a]) || o[a] == ' '))
        a++;
    while (k > a && (ispunct((unsigned char)o[k - 1]) || o[k - 1] == ' '))
        k--;
    memmove(o, o + a, k - a);
    o[k - a] = 0;
    return o;
}

double hr_score_exact(const char *a, const char *b)
{
    char *x = hr_score_normalize(a), *y = hr_score_normalize(b);
    double r = x && y && !strcmp(x, y) ? 1.0 : 0.0;
    free(x);
    free(y);
    return r;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Splits a normalised string in place; returns the token count. */
static size_t split(char *s, char ***out)
{
    size_t n = 0, cap = 0;
    char **t = NULL;
    for (char *p = strtok(s, " "); p; p = strtok(NULL, " ")) {
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nt = realloc(t, cap * sizeof *t);
            if (!nt)
                break;
            t = nt;
        }
        t[n++] = p;
    }
    if (n)
        qsort(t, n, sizeof *t, cmp_str);
    *out = t;
    return n;
}

double hr_score_f1(const char *a, const char *b)
{
    char *x = hr_score_normalize(a), *y = hr_score_normalize(b);
    double r = 0;
    if (x && y) {
        char **ta, **tb;
        size_t na = split(x, &ta), nb = split(y, &tb);
        if (!na && !nb) {
            r = 1;
        } else if (na && nb) {
            size_t i = 0, j = 0, common = 0;
            while (i < na && j < nb) {
                int c = strcmp(ta[i], tb[j]);
                if (!c) {
                    common++;
                    i++;
                    j++;
                } else if (c < 0) {
                    i++;
                } else {
                    j++;
                }
            }
            r = 2.0 * (double)common / (double)(na + nb);
        }
        free(ta);
        free(tb);
    }
    free(x);
    free(y);
    return r;
}

static json_t *load_json_answer(const char *s)
{
    while (isspace((unsigned char)*s))
        s++;
    size_t n = strlen(s);
    if (!strncmp(s, "```", 3)) {
        const char *nl = strchr(s, '\n');
        if (!nl)
            return NULL;
        s = nl + 1;
        n = strlen(s);
        while (n && isspace((unsigned char)s[n - 1]))
            n--;
        if (n < 3 || strncmp(s + n - 3, "```", 3))
            return NULL;
        n -= 3;
    }
    json_t *j = json_loadb(s, n, 0, NULL);
    if (j && !json_is_object(j) && !json_is_array(j)) {
        json_decref(j);
        return NULL;
    }
    return j;
}

typedef struct {
    char **v;
    size_t n, cap;
    bool oom;
} leaves;

static void add_leaf(leaves *l, const char *path, json_t *v)
{
    char *val = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
    size_t len = strlen(path) + (val ? strlen(val) : 0) + 2;
    char *s = malloc(len);
    if (!val || !s || (l->n == l->cap && l->n >= 1u << 20)) {
        free(val);
        free(s);
        l->oom = true;
        return;
    }
    snprintf(s, len, "%s=%s", path, val);
    free(val);
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        char **nv = realloc(l->v, cap * sizeof *nv);
        if (!nv) {
            free(s);
            l->oom = true;
            return;
        }
        l->v = nv;
        l->cap = cap;
    }
    l->v[l->n++] = s;
}

static void flatten(leaves *l, const char *path, json_t *v, int depth)
{
    if (depth > 64 || l->oom)
        return;
    char sub[1024];
    if (json_is_object(v) && json_object_size(v)) {
        const char *k;
        json_t *x;
        json_object_foreach(v, k, x) {
            snprintf(sub, sizeof sub, "%s.%s", path, k);
            flatten(l, sub, x, depth + 1);
        }
    } else if (json_is_array(v) && json_array_size(v)) {
        size_t i;
        json_t *x;
        json_array_foreach(v, i, x) {
            snprintf(sub, sizeof sub, "%s[%zu]", path, i);
            flatten(l, sub, x, depth + 1);
        }
    } else {
        add_leaf(l, path, v);
    }
}

double hr_score_json(const char *a, const char *b)
{
    json_t *x = load_json_answer(a), *y = load_json_answer(b);
    double r = -1;
    if (x && y) {
        leaves la = {0}, lb = {0};
        flatten(&la, "$", x, 0);
        flatten(&lb, "$", y, 0);
        if (!la.oom && !lb.oom) {
            if (la.n)
                qsort(la.v, la.n, sizeof *la.v, cmp_str);
            if (lb.n)
                qsort(lb.v, lb.n, sizeof *lb.v, cmp_str);
            size_t i = 0, j = 0, common = 0;
            while (i < la.n && j < lb.n) {
                int c = strcmp(la.v[i], lb.v[j]);
                if (!c) {
                    common++;
                    i++;
                    j++;
                } else if (c < 0) {
                    i++;
                } else {
                    j++;
                }
            }
            size_t uni = la.n + lb.n - common;
            r = uni ? (double)common / (double)uni : 1.0;
        }
        for (size_t i = 0; i < la.n; i++)
            free(la.v[i]);
        for (size_t i = 0; i < lb.n; i++)
            free(lb.v[i]);
        free(la.v);
        free(lb.v);
    }
    json_decref(x);
    json_decref(y);
    return r;
}

char *hr_score_judge_prompt(const char *question, const char *answer_a, const char *answer_b)
{
    static const char *fmt =
        "You compare two answers to the same request. Judge correctness, completeness and helpfulness; "
        "ignore length and style unless they matter to the request.\n\n"
        "[Request]\n%s\n\n[Answer A]\n%s\n\n[Answer B]\n%s\n\n"
        "Reply with one letter only: A if answer A is better, B if answer B is better, T if they are "
        "equally good.";
    size_t n = strlen(fmt) + strlen(question) + strlen(answer_a) + strlen(answer_b) + 1;
    char *s = malloc(n);
    if (s)
        snprintf(s, n, fmt, question, answer_a, answer_b);
    return s;
}

int hr_score_judge_verdict(const char *reply)
{
    /* the first standalone A, B or T (a letter not inside a word) */
    for (const char *p = reply; *p; p++) {
        char c = *p;
        if (c != 'A' && c != 'B' && c != 'T')
            continue;
        bool left = p == reply || !isalnum((unsigned char)p[-1]);
        bool right = !isalnum((unsigned char)p[1]);
        if (left && right)
            return c;
    }
    return 0;
}
