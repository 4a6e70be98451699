/* jinja_value.c - arena, values, Python-style printing and json.dumps. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

#include "tmpl/jinja_impl.h"

/* ---------------------------------------------------------------- arena */

struct jchunk {
    jchunk *next;
    size_t cap, used;
    max_align_t data[];
};

#define JA_CHUNK (64 * 1024)

void *ja_alloc(jarena *a, size_t n)
{
    n = (n + 15) & ~(size_t)15;
    if (n == 0)
        n = 16;
    jchunk *c = a->head;
    if (!c || c->cap - c->used < n) {
        bool big = n > JA_CHUNK / 2;
        size_t cap = big ? n : JA_CHUNK;
        if (cap > SIZE_MAX - sizeof(jchunk) || a->total + cap + sizeof(jchunk) > a->limit)
            return NULL;
        jchunk *nc = malloc(sizeof(jchunk) + cap);
        if (!nc)
            return NULL;
        a->total += cap + sizeof(jchunk);
        nc->cap = cap;
        nc->used = 0;
        if (big && c) {
            /* big block: keep the current chunk on top for small allocations */
            nc->next = c->next;
            c->next = nc;
            nc->used = n;
            return (char *)nc->data;
        }
        nc->next = c;
        a->head = c = nc;
    }
    void *p = (char *)c->data + c->used;
    c->used += n;
    return p;
}

bool ja_full(const jarena *a, size_t n)
{
    size_t r = (n + 15) & ~(size_t)15, cap = r > JA_CHUNK / 2 ? r : JA_CHUNK;
    return r < n || cap > SIZE_MAX - sizeof(jchunk) || a->total + cap + sizeof(jchunk) > a->limit;
}

void ja_free(jarena *a)
{
    jchunk *c = a->head;
    while (c) {
        jchunk *nx = c->next;
        free(c);
        c = nx;
    }
    a->head = NULL;
    a->total = 0;
}

/* ---------------------------------------------------------------- errors */

_Noreturn void jx_fail(jstate *st, hr_status s, const char *fmt, ...)
{
    char msg[HR_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (st->line > 0)
        hr_err_set(st->err, s, "line %d: %s", st->line, msg);
    else
        hr_err_set(st->err, s, "%s", msg);
    st->st = s;
    longjmp(st->jb, 1);
}

_Noreturn void jx_type(jstate *st, const char *fmt, ...)
{
    char msg[HR_ERR_MSG_MAX - 32];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    jx_fail(st, HR_ERR_FORMAT, "%s", msg);
}

void jx_step(jstate *st, uint64_t n)
{
    st->iters += n;
    if (st->iters > st->max_iters)
        jx_fail(st, HR_ERR_LIMIT, "template exceeded the iteration limit (%" PRIu64 ")", st->max_iters);
}

void *jx_alloc(jstate *st, size_t n)
{
    void *p = ja_alloc(&st->arena, n);
    if (!p) {
        /* the limit, or malloc itself failed (then it is no fault of the template) */
        if (ja_full(&st->arena, n))
            jx_fail(st, HR_ERR_LIMIT, "template exceeded the memory limit (%zu bytes)", st->arena.limit);
        jx_fail(st, HR_ERR_NOMEM, "out of memory");
    }
    return p;
}

/* ---------------------------------------------------------------- values */

jv jv_undef(const char *name) { jv v = {.t = JV_UNDEF}; v.u.uname = name; return v; }
jv jv_none(void) { jv v = {.t = JV_NONE}; return v; }
jv jv_bool(bool b) { jv v = {.t = JV_BOOL}; v.u.b = b; return v; }
jv jv_int(int64_t i) { jv v = {.t = JV_INT}; v.u.i = i; return v; }
jv jv_float(double f) { jv v = {.t = JV_FLOAT}; v.u.f = f; return v; }

jv jv_strn(jstate *st, const char *s, size_t n)
{
    if (n > st->arena.limit)
        jx_fail(st, HR_ERR_LIMIT, "template exceeded the memory limit (%zu bytes)", st->arena.limit);
    jstr *x = jx_alloc(st, sizeof(jstr) + n + 1);
    x->len = n;
    x->ncp = -1;
    x->taint = NULL;
    if (n)
        memcpy(x->p, s, n);
    x->p[n] = 0;
    jv v = {.t = JV_STR};
    v.u.s = x;
    return v;
}

jv jv_cstr(jstate *st, const char *s) { return jv_strn(st, s, strlen(s)); }

jv jv_strn_untrusted(jstate *st, const char *s, size_t n)
{
    jv v = jv_strn(st, s, n);
    if (st->mark && n) {
        jspans *t = jx_alloc(st, sizeof(jspans) + sizeof(jspan));
        t->n = 1;
        t->r[0].off = 0;
        t->r[0].len = n;
        v.u.s->taint = t;
    }
    return v;
}

jv jv_newlist(jstate *st, uint8_t type, size_t cap)
{
    jlist *l = jx_alloc(st, sizeof(jlist));
    if (cap == 0)
        cap = 1; /* items is never NULL (memcpy of 0 items stays defined) */
    l->n = 0;
    l->cap = cap;
    l->consumed = false;
    if (cap > st->arena.limit / sizeof(jv))
        jx_fail(st, HR_ERR_LIMIT, "template exceeded the memory limit (%zu bytes)", st->arena.limit);
    l->v = jx_alloc(st, cap * sizeof(jv));
    jv v = {.t = type};
    v.u.l = l;
    return v;
}

void jl_push(jstate *st, jv list, jv item)
{
    jlist *l = list.u.l;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 4;
        if (nc > st->arena.limit / sizeof(jv))
            jx_fail(st, HR_ERR_LIMIT, "template exceeded the memory limit (%zu bytes)", st->arena.limit);
        jv *nv = jx_alloc(st, nc * sizeof(jv));
        if (l->n)
            memcpy(nv, l->v, l->n * sizeof(jv));
        l->v = nv;
        l->cap = nc;
    }
    l->v[l->n++] = item;
}

jv jv_newdict(jstate *st, uint8_t type, size_t cap)
{
    jdict *d = jx_alloc(st, sizeof(jdict));
    if (cap == 0)
        cap = 1;
    d->n = 0;
    d->cap = cap;
    if (cap > st->arena.limit / sizeof(jv))
        jx_fail(st, HR_ERR_LIMIT, "template exceeded the memory limit (%zu bytes)", st->arena.limit);
    d->k = jx_alloc(st, cap * sizeof(jv));
    d->v = jx_alloc(st, cap * sizeof(jv));
    jv v = {.t = type};
    v.u.d = d;
    return v;
}

static bool key_eq(jv a, jv b)
{
    if (a.t == JV_STR && b.t == JV_STR)
        return a.u.s->len == b.u.s->len && memcmp(a.u.s->p, b.u.s->p, a.u.s->len) == 0;
    return jv_eq(a, b);
}

void jd_set(jstate *st, jdict *d, jv key, jv val)
{
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(d->k[i], key)) {
            d->v[i] = val;
            return;
        }
    if (d->n == d->cap) {
        size_t nc = d->cap ? d->cap * 2 : 4;
        jv *nk = jx_alloc(st, nc * sizeof(jv)), *nv = jx_alloc(st, nc * sizeof(jv));
        if (d->n) {
            memcpy(nk, d->k, d->n * sizeof(jv));
            memcpy(nv, d->v, d->n * sizeof(jv));
        }
        d->k = nk;
        d->v = nv;
        d->cap = nc;
    }
    d->k[d->n] = key;
    d->v[d->n++] = val;
}

bool jd_get(const jdict *d, jv key, jv *out)
{
    for (size_t i = 0; i < d->n; i++)
        if (key_eq(d->k[i], key)) {
            *out = d->v[i];
            return true;
        }
    return false;
}

bool jd_getn(const jdict *d, const char *key, size_t klen, jv *out)
{
    for (size_t i = 0; i < d->n; i++) {
        jv k = d->k[i];
        if (k.t == JV_STR && k.u.s->len == klen && memcmp(k.u.s->p, key, klen) == 0) {
            *out = d->v[i];
            return true;
        }
    }
    return false;
}

jv jv_from_json(jstate *st, const json_t *j)
{
    switch (json_typeof(j)) {
    case JSON_OBJECT: {
        jv d = jv_newdict(st, JV_DICT, json_object_size(j));
        const char *k;
        json_t *val;
        void *it = json_object_iter((json_t *)j);
        while (it) {
            k = json_object_iter_key(it);
            size_t kl = json_object_iter_key_len(it);
            val = json_object_iter_value(it);
            jv kv = jv_strn_untrusted(st, k, kl);
            /* JSON objects from jansson have unique keys: append directly */
            d.u.d->k[d.u.d->n] = kv;
            d.u.d->v[d.u.d->n++] = jv_from_json(st, val);
            it = json_object_iter_next((json_t *)j, it);
        }
        return d;
    }
    case JSON_ARRAY: {
        size_t n = json_array_size(j);
        jv l = jv_newlist(st, JV_LIST, n);
        for (size_t i = 0; i < n; i++)
            l.u.l->v[i] = jv_from_json(st, json_array_get(j, i));
        l.u.l->n = n;
        return l;
    }
    case JSON_STRING:
        return jv_strn_untrusted(st, json_string_value(j), json_string_length(j));
    case JSON_INTEGER:
        return jv_int((int64_t)json_integer_value(j));
    case JSON_REAL:
        return jv_float(json_real_value(j));
    case JSON_TRUE:
        return jv_bool(true);
    case JSON_FALSE:
        return jv_bool(false);
    default:
        return jv_none();
    }
}

const char *jv_typename(jv v)
{
    switch (v.t) {
    case JV_UNDEF: return "Undefined";
    case JV_NONE: return "NoneType";
    case JV_BOOL: return "bool";
    case JV_INT: return "int";
    case JV_FLOAT: return "float";
    case JV_STR: return "str";
    case JV_LIST: return "list";
    case JV_TUPLE: return "tuple";
    case JV_DICT: return "dict";
    case JV_NS: return "Namespace";
    case JV_GEN: return "generator";
    case JV_FUNC: return v.u.fn->kind == JF_MACRO ? "Macro" : "function";
    case JV_LOOP: return "LoopContext";
    }
    return "object";
}

bool jv_truthy(jv v)
{
    switch (v.t) {
    case JV_UNDEF: case JV_NONE: return false;
    case JV_BOOL: return v.u.b;
    case JV_INT: return v.u.i != 0;
    case JV_FLOAT: return v.u.f != 0.0;
    case JV_STR: return v.u.s->len != 0;
    case JV_LIST: case JV_TUPLE: return v.u.l->n != 0;
    case JV_DICT: return v.u.d->n != 0;
    default: return true;
    }
}

bool jv_is_num(jv v) { return v.t == JV_BOOL || v.t == JV_INT || v.t == JV_FLOAT; }

double jv_num(jv v)
{
    if (v.t == JV_BOOL) return v.u.b ? 1.0 : 0.0;
    if (v.t == JV_INT) return (double)v.u.i;
    return v.u.f;
}

static int64_t as_i(jv v) { return v.t == JV_BOOL ? (int64_t)v.u.b : v.u.i; }

/* Values nest only as deep as a template builds them (a loop can wrap a list
 * in a list many times): past this depth, containers compare by identity so
 * the comparison cannot exhaust the stack. */
#define JV_EQ_MAX_DEPTH 256

static bool eq_d(jv a, jv b, int d);

bool jv_eq(jv a, jv b) { return eq_d(a, b, 0); }

static bool eq_d(jv a, jv b, int d)
{
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT)
            return as_i(a) == as_i(b);
        return jv_num(a) == jv_num(b);
    }
    if (a.t != b.t)
        return false;
    switch (a.t) {
    case JV_UNDEF: case JV_NONE: return true;
    case JV_STR:
        return a.u.s->len == b.u.s->len && memcmp(a.u.s->p, b.u.s->p, a.u.s->len) == 0;
    case JV_LIST: case JV_TUPLE:
        if (a.u.l == b.u.l) return true;
        if (a.u.l->n != b.u.l->n || d > JV_EQ_MAX_DEPTH) return false;
        for (size_t i = 0; i < a.u.l->n; i++)
            if (!eq_d(a.u.l->v[i], b.u.l->v[i], d + 1)) return false;
        return true;
    case JV_DICT: {
        if (a.u.d == b.u.d) return true;
        if (a.u.d->n != b.u.d->n || d > JV_EQ_MAX_DEPTH) return false;
        for (size_t i = 0; i < a.u.d->n; i++) {
            jv o;
            if (!jd_get(b.u.d, a.u.d->k[i], &o) || !eq_d(a.u.d->v[i], o, d + 1)) return false;
        }
        return true;
    }
    case JV_NS: return a.u.d == b.u.d;
    case JV_GEN: return a.u.l == b.u.l;
    case JV_FUNC: return a.u.fn == b.u.fn;
    case JV_LOOP: return a.u.loop == b.u.loop;
    }
    return false;
}

int jv_cmp(jstate *st, jv a, jv b, const char *op)
{
    if (jv_is_num(a) && jv_is_num(b)) {
        if (a.t != JV_FLOAT && b.t != JV_FLOAT) {
            int64_t x = as_i(a), y = as_i(b);
            return x < y ? -1 : x > y;
        }
        double x = jv_num(a), y = jv_num(b);
        return x < y ? -1 : x > y;
    }
    if (a.t == JV_STR && b.t == JV_STR) {
        size_t n = a.u.s->len < b.u.s->len ? a.u.s->len : b.u.s->len;
        int c = memcmp(a.u.s->p, b.u.s->p, n);
        if (c) return c < 0 ? -1 : 1;
        return a.u.s->len < b.u.s->len ? -1 : a.u.s->len > b.u.s->len;
    }
    if (a.t == b.t && (a.t == JV_LIST || a.t == JV_TUPLE)) {
        size_t n = a.u.l->n < b.u.l->n ? a.u.l->n : b.u.l->n;
        if (st->depth > st->max_depth)
            jx_fail(st, HR_ERR_LIMIT, "values nested too deeply to compare");
        for (size_t i = 0; i < n; i++) {
            if (jv_eq(a.u.l->v[i], b.u.l->v[i])) continue;
            st->depth++;
            int c = jv_cmp(st, a.u.l->v[i], b.u.l->v[i], op);
            st->depth--;
            return c;
        }
        return a.u.l->n < b.u.l->n ? -1 : a.u.l->n > b.u.l->n;
    }
    if (a.t == JV_UNDEF || b.t == JV_UNDEF)
        jx_type(st, "UndefinedError: '%s' is undefined",
                a.t == JV_UNDEF ? (a.u.uname ? a.u.uname : "value") : (b.u.uname ? b.u.uname : "value"));
    jx_type(st, "TypeError: '%s' not supported between instances of '%s' and '%s'", op,
            jv_typename(a), jv_typename(b));
}

/* ---------------------------------------------------------------- utf-8 */

size_t ju_decode(const char *s, size_t n, int32_t *cp)
{
    utf8proc_int32_t c;
    utf8proc_ssize_t k = utf8proc_iterate((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &c);
    if (k <= 0) {
        *cp = 0xFFFD;
        return 1;
    }
    *cp = c;
    return (size_t)k;
}

size_t ju_encode(int32_t cp, char *out)
{
    utf8proc_ssize_t k = utf8proc_encode_char(cp, (utf8proc_uint8_t *)out);
    if (k <= 0) {
        out[0] = '?';
        return 1;
    }
    return (size_t)k;
}

bool ju_isspace(int32_t c)
{
    if (c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f) || c == 0x85)
        return true;
    if (c < 0xa0)
        return false;
    utf8proc_category_t cat = utf8proc_category(c);
    return cat == UTF8PROC_CATEGORY_ZS || cat == UTF8PROC_CATEGORY_ZL || cat == UTF8PROC_CATEGORY_ZP;
}

int64_t js_ncp(jstr *s)
{
    if (s->ncp >= 0)
        return s->ncp;
    int64_t n = 0;
    for (size_t i = 0; i < s->len; i++)
        if (((unsigned char)s->p[i] & 0xC0) != 0x80)
            n++;
    s->ncp = n;
    return n;
}

/* ---------------------------------------------------------------- builder */

void jsb_init(jstate *st, jsb *b, size_t cap)
{
    b->cap = cap < 16 ? 16 : cap;
    b->p = jx_alloc(st, b->cap);
    b->n = 0;
    b->sp = NULL;
    b->nsp = b->capsp = 0;
}

void jsb_mark(jstate *st, jsb *b, size_t from, size_t to)
{
    if (!st->mark || to <= from)
        return;
    if (b->nsp) {
        jspan *last = &b->sp[b->nsp - 1];
        if (from <= last->off + last->len) { /* spans are added left to right */
            if (to > last->off + last->len)
                last->len = to - last->off;
            return;
        }
    }
    if (b->nsp == b->capsp) {
        size_t nc = b->capsp ? b->capsp * 2 : 8;
        jspan *ns = jx_alloc(st, nc * sizeof *ns);
        if (b->nsp)
            memcpy(ns, b->sp, b->nsp * sizeof *ns);
        b->sp = ns;
        b->capsp = nc;
    }
    b->sp[b->nsp].off = from;
    b->sp[b->nsp].len = to - from;
    b->nsp++;
}

/* s's bytes, and its untrusted ranges, appended to b */
static void jsb_add_str(jstate *st, jsb *b, const jstr *s)
{
    size_t at = b->n;
    jsb_add(st, b, s->p, s->len);
    if (s->taint)
        for (size_t i = 0; i < s->taint->n; i++)
            jsb_mark(st, b, at + s->taint->r[i].off, at + s->taint->r[i].off + s->taint->r[i].len);
}

static void jsb_grow(jstate *st, jsb *b, size_t need)
{
    if (need > st->max_output)
        jx_fail(st, HR_ERR_LIMIT, "template output exceeded the limit (%zu bytes)", st->max_output);
    size_t nc = b->cap * 2;
    while (nc < need)
        nc *= 2;
    if (nc > st->max_output + 1)
        nc = st->max_output + 1;
    char *np = jx_alloc(st, nc);
    memcpy(np, b->p, b->n);
    b->p = np;
    b->cap = nc;
}

void jsb_add(jstate *st, jsb *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap)
        jsb_grow(st, b, b->n + n + 1);
    memcpy(b->p + b->n, s, n);
    b->n += n;
}

void jsb_addc(jstate *st, jsb *b, char c)
{
    if (b->n + 2 > b->cap)
        jsb_grow(st, b, b->n + 2);
    b->p[b->n++] = c;
}

void jsb_addf(jstate *st, jsb *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k < 0)
        return;
    jsb_add(st, b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

jv jsb_take(jstate *st, jsb *b)
{
    jv v = jv_strn(st, b->p, b->n);
    if (b->nsp) {
        jspans *t = jx_alloc(st, sizeof(jspans) + b->nsp * sizeof(jspan));
        t->n = b->nsp;
        memcpy(t->r, b->sp, b->nsp * sizeof(jspan));
        v.u.s->taint = t;
    }
    return v;
}

/* ---------------------------------------------------------------- printing */

void jfmt_float(char *buf, size_t cap, double f)
{
    if (isnan(f)) { snprintf(buf, cap, "nan"); return; }
    if (isinf(f)) { snprintf(buf, cap, f < 0 ? "-inf" : "inf"); return; }
    if (f == 0.0) { snprintf(buf, cap, signbit(f) ? "-0.0" : "0.0"); return; }
    char e[64];
    int p;
    for (p = 1; p <= 17; p++) {
        snprintf(e, sizeof e, "%.*e", p - 1, f);
        if (strtod(e, NULL) == f)
            break;
    }
    /* e: [-]d[.ddd]e[+-]XX */
    char digits[32];
    size_t nd = 0;
    const char *q = e;
    bool neg = false;
    if (*q == '-') { neg = true; q++; }
    for (; *q && *q != 'e'; q++)
        if (*q >= '0' && *q <= '9' && nd < sizeof digits - 1)
            digits[nd++] = *q;
    digits[nd] = 0;
    int ex = *q == 'e' ? atoi(q + 1) : 0;
    while (nd > 1 && digits[nd - 1] == '0')
        digits[--nd] = 0;
    char out[64];
    size_t o = 0;
    if (neg) out[o++] = '-';
    if (ex >= -5 + 1 && ex < 16) {
        int decpt = ex + 1;
        if (decpt <= 0) {
            out[o++] = '0';
            out[o++] = '.';
            for (int i = 0; i < -decpt; i++) out[o++] = '0';
            for (size_t i = 0; i < nd; i++) out[o++] = digits[i];
        } else if ((size_t)decpt >= nd) {
            for (size_t i = 0; i < nd; i++) out[o++] = digits[i];
            for (size_t i = nd; i < (size_t)decpt; i++) out[o++] = '0';
            out[o++] = '.';
            out[o++] = '0';
        } else {
            for (size_t i = 0; i < nd; i++) {
                if (i == (size_t)decpt) out[o++] = '.';
                out[o++] = digits[i];
            }
        }
        out[o] = 0;
    } else {
        out[o++] = digits[0];
        if (nd > 1) {
            out[o++] = '.';
            for (size_t i = 1; i < nd; i++) out[o++] = digits[i];
        }
        snprintf(out + o, sizeof out - o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    snprintf(buf, cap, "%s", out);
}

static bool py_printable(int32_t c)
{
    if (c == ' ') return true;
    if (c < 0x20 || c == 0x7f) return false;
    if (c < 0x7f) return true;
    switch (utf8proc_category(c)) {
    case UTF8PROC_CATEGORY_CC: case UTF8PROC_CATEGORY_CF: case UTF8PROC_CATEGORY_CS:
    case UTF8PROC_CATEGORY_CO: case UTF8PROC_CATEGORY_CN: case UTF8PROC_CATEGORY_ZL:
    case UTF8PROC_CATEGORY_ZP: case UTF8PROC_CATEGORY_ZS:
        return false;
    default:
        return true;
    }
}

static void write_str_repr(jstate *st, jsb *b, const jstr *s)
{
    size_t at = b->n;
    bool has_sq = memchr(s->p, '\'', s->len) != NULL, has_dq = memchr(s->p, '"', s->len) != NULL;
    char q = has_sq && !has_dq ? '"' : '\'';
    jsb_addc(st, b, q);
    size_t i = 0;
    while (i < s->len) {
        unsigned char c = (unsigned char)s->p[i];
        if (c >= 0x20 && c < 0x7f) {
            if (c == '\\' || c == (unsigned char)q)
                jsb_addc(st, b, '\\');
            jsb_addc(st, b, (char)c);
            i++;
            continue;
        }
        int32_t cp;
        size_t k = ju_decode(s->p + i, s->len - i, &cp);
        if (c == '\n') jsb_add(st, b, "\\n", 2);
        else if (c == '\r') jsb_add(st, b, "\\r", 2);
        else if (c == '\t') jsb_add(st, b, "\\t", 2);
        else if (py_printable(cp)) jsb_add(st, b, s->p + i, k);
        else if (cp < 0x100) jsb_addf(st, b, "\\x%02x", (unsigned)cp);
        else if (cp < 0x10000) jsb_addf(st, b, "\\u%04x", (unsigned)cp);
        else jsb_addf(st, b, "\\U%08x", (unsigned)cp);
        i += k;
    }
    jsb_addc(st, b, q);
    if (s->taint)
        jsb_mark(st, b, at, b->n);
}

static void write_seq(jstate *st, jsb *b, jv v)
{
    bool tup = v.t == JV_TUPLE;
    jsb_addc(st, b, tup ? '(' : '[');
    for (size_t i = 0; i < v.u.l->n; i++) {
        if (i) jsb_add(st, b, ", ", 2);
        jv_write_repr(st, b, v.u.l->v[i]);
    }
    if (tup && v.u.l->n == 1) jsb_addc(st, b, ',');
    jsb_addc(st, b, tup ? ')' : ']');
}

static void write_dict(jstate *st, jsb *b, const jdict *d)
{
    jsb_addc(st, b, '{');
    for (size_t i = 0; i < d->n; i++) {
        if (i) jsb_add(st, b, ", ", 2);
        jv_write_repr(st, b, d->k[i]);
        jsb_add(st, b, ": ", 2);
        jv_write_repr(st, b, d->v[i]);
    }
    jsb_addc(st, b, '}');
}

static void write_common(jstate *st, jsb *b, jv v)
{
    char tmp[64];
    switch (v.t) {
    case JV_NONE: jsb_add(st, b, "None", 4); break;
    case JV_BOOL: if (v.u.b) jsb_add(st, b, "True", 4); else jsb_add(st, b, "False", 5); break;
    case JV_INT: jsb_addf(st, b, "%" PRId64, v.u.i); break;
    case JV_FLOAT: jfmt_float(tmp, sizeof tmp, v.u.f); jsb_add(st, b, tmp, strlen(tmp)); break;
    case JV_LIST: case JV_TUPLE: write_seq(st, b, v); break;
    case JV_DICT: write_dict(st, b, v.u.d); break;
    case JV_NS: jsb_add(st, b, "<Namespace ", 11); write_dict(st, b, v.u.d); jsb_addc(st, b, '>'); break;
    case JV_GEN: jsb_add(st, b, "<generator object>", 18); break;
    case JV_FUNC:
        if (v.u.fn->kind == JF_MACRO) jsb_addf(st, b, "<Macro '%s'>", v.u.fn->name ? v.u.fn->name : "caller");
        else jsb_addf(st, b, "<function %s>", v.u.fn->name ? v.u.fn->name : "?");
        break;
    case JV_LOOP: jsb_addf(st, b, "<LoopContext %" PRId64 "/%" PRId64 ">", v.u.loop->i + 1, v.u.loop->n); break;
    default: break;
    }
}

void jv_write_str(jstate *st, jsb *b, jv v)
{
    if (v.t == JV_STR) jsb_add_str(st, b, v.u.s);
    else if (v.t == JV_UNDEF) return;
    else write_common(st, b, v);
}

void jv_write_repr(jstate *st, jsb *b, jv v)
{
    if (st->depth > st->max_depth)
        jx_fail(st, HR_ERR_LIMIT, "value nested too deeply to print");
    st->depth++;
    if (v.t == JV_STR) write_str_repr(st, b, v.u.s);
    else if (v.t == JV_UNDEF) jsb_add(st, b, "Undefined", 9);
    else write_common(st, b, v);
    st->depth--;
}

jv jv_to_str(jstate *st, jv v)
{
    if (v.t == JV_STR) return v;
    jsb b;
    jsb_init(st, &b, 32);
    jv_write_str(st, &b, v);
    return jsb_take(st, &b);
}

/* ---------------------------------------------------------------- json.dumps */

static void jw_string(jstate *st, jsb *b, const char *s, size_t n, bool ascii)
{
    jsb_addc(st, b, '"');
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f) {
            size_t j = i;
            while (j < n && (unsigned char)s[j] >= 0x20 && (unsigned char)s[j] < 0x7f && s[j] != '"' && s[j] != '\\')
                j++;
            if (j > i) { jsb_add(st, b, s + i, j - i); i = j; continue; }
            jsb_addc(st, b, '\\');
            jsb_addc(st, b, (char)c);
            i++;
            continue;
        }
        switch (c) {
        case '\n': jsb_add(st, b, "\\n", 2); i++; continue;
        case '\r': jsb_add(st, b, "\\r", 2); i++; continue;
        case '\t': jsb_add(st, b, "\\t", 2); i++; continue;
        case '\b': jsb_add(st, b, "\\b", 2); i++; continue;
        case '\f': jsb_add(st, b, "\\f", 2); i++; continue;
        default: break;
        }
        if (c < 0x20) { jsb_addf(st, b, "\\u%04x", c); i++; continue; }
        if (!ascii) { jsb_addc(st, b, (char)c); i++; continue; }
        int32_t cp;
        size_t k = ju_decode(s + i, n - i, &cp);
        if (cp >= 0x10000) {
            int32_t v = cp - 0x10000;
            jsb_addf(st, b, "\\u%04x\\u%04x", (unsigned)(0xD800 + (v >> 10)), (unsigned)(0xDC00 + (v & 0x3FF)));
        } else {
            jsb_addf(st, b, "\\u%04x", (unsigned)cp);
        }
        i += k;
    }
    jsb_addc(st, b, '"');
}

static void json_newline(jstate *st, jsb *b, const jjson_opts *o, int level)
{
    jsb_addc(st, b, '\n');
    for (int i = 0; i < level; i++)
        jsb_add(st, b, o->indent, o->indent_len);
}

static void json_key(jstate *st, jsb *b, jv k, const jjson_opts *o)
{
    char tmp[64];
    switch (k.t) {
    case JV_STR: {
        size_t at = b->n;
        jw_string(st, b, k.u.s->p, k.u.s->len, o->ensure_ascii);
        if (k.u.s->taint) jsb_mark(st, b, at, b->n);
        return;
    }
    case JV_BOOL: jsb_add(st, b, k.u.b ? "\"true\"" : "\"false\"", k.u.b ? 6 : 7); return;
    case JV_NONE: jsb_add(st, b, "\"null\"", 6); return;
    case JV_INT: jsb_addf(st, b, "\"%" PRId64 "\"", k.u.i); return;
    case JV_FLOAT:
        if (isnan(k.u.f)) snprintf(tmp, sizeof tmp, "NaN");
        else if (isinf(k.u.f)) snprintf(tmp, sizeof tmp, k.u.f < 0 ? "-Infinity" : "Infinity");
        else jfmt_float(tmp, sizeof tmp, k.u.f);
        jsb_addf(st, b, "\"%s\"", tmp);
        return;
    default:
        jx_type(st, "TypeError: keys must be str, int, float, bool or None, not %s", jv_typename(k));
    }
}

static int cmp_keys_sort(jstate *st, jv a, jv b) { return jv_cmp(st, a, b, "<"); }

void jv_write_json(jstate *st, jsb *b, jv v, const jjson_opts *o, int level)
{
    char tmp[64];
    if ((unsigned)level > st->max_depth)
        jx_fail(st, HR_ERR_LIMIT, "value nested too deeply for tojson");
    switch (v.t) {
    case JV_NONE: jsb_add(st, b, "null", 4); return;
    case JV_BOOL: if (v.u.b) jsb_add(st, b, "true", 4); else jsb_add(st, b, "false", 5); return;
    case JV_INT: jsb_addf(st, b, "%" PRId64, v.u.i); return;
    case JV_FLOAT:
        if (isnan(v.u.f)) jsb_add(st, b, "NaN", 3);
        else if (isinf(v.u.f)) jsb_addf(st, b, "%s", v.u.f < 0 ? "-Infinity" : "Infinity");
        else { jfmt_float(tmp, sizeof tmp, v.u.f); jsb_add(st, b, tmp, strlen(tmp)); }
        return;
    case JV_STR: {
        size_t at = b->n;
        jw_string(st, b, v.u.s->p, v.u.s->len, o->ensure_ascii);
        if (v.u.s->taint) jsb_mark(st, b, at, b->n);
        return;
    }
    case JV_LIST: case JV_TUPLE: {
        jlist *l = v.u.l;
        if (l->n == 0) { jsb_add(st, b, "[]", 2); return; }
        jsb_addc(st, b, '[');
        for (size_t i = 0; i < l->n; i++) {
            if (i) jsb_add(st, b, o->item_sep, o->item_sep_len);
            if (o->indent) json_newline(st, b, o, level + 1);
            jv_write_json(st, b, l->v[i], o, level + 1);
        }
        if (o->indent) json_newline(st, b, o, level);
        jsb_addc(st, b, ']');
        return;
    }
    case JV_DICT: {
        jdict *d = v.u.d;
        if (d->n == 0) { jsb_add(st, b, "{}", 2); return; }
        size_t *ord = jx_alloc(st, d->n * sizeof(size_t));
        for (size_t i = 0; i < d->n; i++) ord[i] = i;
        if (o->sort_keys) {
            /* insertion sort: dicts in templates are small; bounded by the step limit */
            jx_step(st, d->n);
            for (size_t i = 1; i < d->n; i++) {
                size_t x = ord[i], j = i;
                while (j > 0 && cmp_keys_sort(st, d->k[x], d->k[ord[j - 1]]) < 0) {
                    ord[j] = ord[j - 1];
                    j--;
                }
                ord[j] = x;
            }
        }
        jsb_addc(st, b, '{');
        for (size_t i = 0; i < d->n; i++) {
            if (i) jsb_add(st, b, o->item_sep, o->item_sep_len);
            if (o->indent) json_newline(st, b, o, level + 1);
            json_key(st, b, d->k[ord[i]], o);
            jsb_add(st, b, o->key_sep, o->key_sep_len);
            jv_write_json(st, b, d->v[ord[i]], o, level + 1);
        }
        if (o->indent) json_newline(st, b, o, level);
        jsb_addc(st, b, '}');
        return;
    }
    default:
        jx_type(st, "TypeError: Object of type %s is not JSON serializable", jv_typename(v));
    }
}

/* ---------------------------------------------------------------- JSON text -> values */

typedef struct {
    jstate *st;
    const char *s;
    size_t n, i;
    unsigned depth;
} jpj;

static _Noreturn void pj_fail(jpj *p, const char *what)
{
    p->st->line = 0;
    jx_fail(p->st, HR_ERR_INVALID, "context JSON: %s at offset %zu", what, p->i);
}

static void pj_ws(jpj *p)
{
    while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static int pj_hex4(jpj *p)
{
    if (p->i + 4 > p->n) pj_fail(p, "truncated \\u escape");
    int v = 0;
    for (int k = 0; k < 4; k++) {
        char c = p->s[p->i + k];
        int h = c >= '0' && c <= '9' ? c - '0' : (c | 0x20) >= 'a' && (c | 0x20) <= 'f' ? (c | 0x20) - 'a' + 10 : -1;
        if (h < 0) pj_fail(p, "bad \\u escape");
        v = v * 16 + h;
    }
    p->i += 4;
    return v;
}

static jv pj_string(jpj *p)
{
    p->i++; /* opening quote */
    jsb b;
    jsb_init(p->st, &b, 32);
    for (;;) {
        if (p->i >= p->n) pj_fail(p, "unterminated string");
        size_t a = p->i;
        while (p->i < p->n && p->s[p->i] != '"' && p->s[p->i] != '\\' && (unsigned char)p->s[p->i] >= 0x20)
            p->i++;
        jsb_add(p->st, &b, p->s + a, p->i - a);
        if (p->i >= p->n) pj_fail(p, "unterminated string");
        char c = p->s[p->i++];
        if (c == '"') break;
        if (c != '\\') pj_fail(p, "control character in string");
        if (p->i >= p->n) pj_fail(p, "unterminated string");
        char e = p->s[p->i++];
        switch (e) {
        case '"': jsb_addc(p->st, &b, '"'); break;
        case '\\': jsb_addc(p->st, &b, '\\'); break;
        case '/': jsb_addc(p->st, &b, '/'); break;
        case 'b': jsb_addc(p->st, &b, '\b'); break;
        case 'f': jsb_addc(p->st, &b, '\f'); break;
        case 'n': jsb_addc(p->st, &b, '\n'); break;
        case 'r': jsb_addc(p->st, &b, '\r'); break;
        case 't': jsb_addc(p->st, &b, '\t'); break;
        case 'u': {
            int32_t cp = pj_hex4(p);
            if (cp >= 0xD800 && cp < 0xDC00 && p->i + 6 <= p->n && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u') {
                size_t save = p->i;
                p->i += 2;
                int lo = pj_hex4(p);
                if (lo >= 0xDC00 && lo < 0xE000) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                else p->i = save;
            }
            if (cp >= 0xD800 && cp < 0xE000) cp = 0xFFFD; /* lone surrogate */
            char enc[8];
            jsb_add(p->st, &b, enc, ju_encode(cp, enc));
            break;
        }
        default: pj_fail(p, "bad escape");
        }
    }
    jsb_mark(p->st, &b, 0, b.n); /* context strings are untrusted */
    return jsb_take(p->st, &b);
}

static jv pj_value(jpj *p)
{
    pj_ws(p);
    if (p->i >= p->n) pj_fail(p, "unexpected end");
    if (++p->depth > p->st->max_depth) pj_fail(p, "nested too deeply");
    char c = p->s[p->i];
    jv r;
    if (c == '{') {
        p->i++;
        r = jv_newdict(p->st, JV_DICT, 0);
        pj_ws(p);
        if (p->i < p->n && p->s[p->i] == '}') {
            p->i++;
        } else {
            for (;;) {
                pj_ws(p);
                if (p->i >= p->n || p->s[p->i] != '"') pj_fail(p, "expected a key");
                jv k = pj_string(p);
                pj_ws(p);
                if (p->i >= p->n || p->s[p->i] != ':') pj_fail(p, "expected ':'");
                p->i++;
                jd_set(p->st, r.u.d, k, pj_value(p));
                pj_ws(p);
                if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
                if (p->i < p->n && p->s[p->i] == '}') { p->i++; break; }
                pj_fail(p, "expected ',' or '}'");
            }
        }
    } else if (c == '[') {
        p->i++;
        r = jv_newlist(p->st, JV_LIST, 0);
        pj_ws(p);
        if (p->i < p->n && p->s[p->i] == ']') {
            p->i++;
        } else {
            for (;;) {
                jl_push(p->st, r, pj_value(p));
                pj_ws(p);
                if (p->i < p->n && p->s[p->i] == ',') { p->i++; continue; }
                if (p->i < p->n && p->s[p->i] == ']') { p->i++; break; }
                pj_fail(p, "expected ',' or ']'");
            }
        }
    } else if (c == '"') {
        r = pj_string(p);
    } else if (p->n - p->i >= 4 && !memcmp(p->s + p->i, "true", 4)) {
        p->i += 4;
        r = jv_bool(true);
    } else if (p->n - p->i >= 5 && !memcmp(p->s + p->i, "false", 5)) {
        p->i += 5;
        r = jv_bool(false);
    } else if (p->n - p->i >= 4 && !memcmp(p->s + p->i, "null", 4)) {
        p->i += 4;
        r = jv_none();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
        size_t a = p->i;
        bool isf = false;
        if (p->s[p->i] == '-') p->i++;
        while (p->i < p->n && ((p->s[p->i] >= '0' && p->s[p->i] <= '9') || p->s[p->i] == '.' || p->s[p->i] == 'e' ||
                               p->s[p->i] == 'E' || p->s[p->i] == '+' || p->s[p->i] == '-')) {
            if (p->s[p->i] == '.' || p->s[p->i] == 'e' || p->s[p->i] == 'E') isf = true;
            p->i++;
        }
        char buf[64];
        if (p->i - a >= sizeof buf) pj_fail(p, "number too long");
        memcpy(buf, p->s + a, p->i - a);
        buf[p->i - a] = 0;
        char *end;
        if (!isf) {
            errno = 0;
            long long v = strtoll(buf, &end, 10);
            if (*end || end == buf) pj_fail(p, "bad number");
            if (errno == ERANGE) r = jv_float(strtod(buf, NULL));
            else r = jv_int((int64_t)v);
        } else {
            double d = strtod(buf, &end);
            if (*end || end == buf) pj_fail(p, "bad number");
            r = jv_float(d);
        }
    } else {
        pj_fail(p, "unexpected character");
    }
    p->depth--;
    return r;
}

jv jv_parse_json(jstate *st, const char *s, size_t n)
{
    jpj p = {.st = st, .s = s, .n = n};
    jv v = pj_value(&p);
    pj_ws(&p);
    if (p.i != n) pj_fail(&p, "trailing data");
    return v;
}

/* ---------------------------------------------------------------- untrusted text */

static bool js_all_untrusted(const jstr *s)
{
    return s->len == 0 || (s->taint && s->taint->n == 1 && s->taint->r[0].off == 0 && s->taint->r[0].len == s->len);
}

/* Deep walks stop at this depth (values nested deeper are refused). */
#define JT_MAX_DEPTH 256

static bool jt_has_d(jstate *st, jv v, unsigned d)
{
    if (d > JT_MAX_DEPTH)
        jx_fail(st, HR_ERR_LIMIT, "value nested too deeply");
    switch (v.t) {
    case JV_STR: return v.u.s->taint != NULL;
    case JV_LIST: case JV_TUPLE: case JV_GEN:
        for (size_t i = 0; i < v.u.l->n; i++)
            if (jt_has_d(st, v.u.l->v[i], d + 1)) return true;
        return false;
    case JV_DICT: case JV_NS:
        for (size_t i = 0; i < v.u.d->n; i++)
            if (jt_has_d(st, v.u.d->k[i], d + 1) || jt_has_d(st, v.u.d->v[i], d + 1)) return true;
        return false;
    case JV_FUNC: return v.u.fn->kind == JF_METHOD && jt_has_d(st, v.u.fn->self, d + 1);
    default: return false;
    }
}

bool jt_has(jv v) { return v.t == JV_STR && v.u.s->taint; }

/* Does r hold a string that is not wholly untrusted? */
static bool jt_needs(jstate *st, jv v, unsigned d)
{
    if (d > JT_MAX_DEPTH)
        jx_fail(st, HR_ERR_LIMIT, "value nested too deeply");
    switch (v.t) {
    case JV_STR: return !js_all_untrusted(v.u.s);
    case JV_LIST: case JV_TUPLE: case JV_GEN:
        for (size_t i = 0; i < v.u.l->n; i++)
            if (jt_needs(st, v.u.l->v[i], d + 1)) return true;
        return false;
    case JV_DICT: case JV_NS:
        for (size_t i = 0; i < v.u.d->n; i++)
            if (jt_needs(st, v.u.d->k[i], d + 1) || jt_needs(st, v.u.d->v[i], d + 1)) return true;
        return false;
    default: return false;
    }
}

typedef struct {
    const void **p;
    size_t n, cap;
} jt_set;

static void set_add(jstate *st, jt_set *s, const void *x)
{
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 16;
        const void **np = jx_alloc(st, nc * sizeof *np);
        if (s->n) memcpy(np, s->p, s->n * sizeof *np);
        s->p = np;
        s->cap = nc;
    }
    s->p[s->n++] = x;
}

/* the input's strings and containers, by identity */
static void collect(jstate *st, jt_set *s, jv v, unsigned d)
{
    if (d > JT_MAX_DEPTH)
        jx_fail(st, HR_ERR_LIMIT, "value nested too deeply");
    switch (v.t) {
    case JV_STR: set_add(st, s, v.u.s); return;
    case JV_LIST: case JV_TUPLE: case JV_GEN:
        set_add(st, s, v.u.l);
        for (size_t i = 0; i < v.u.l->n; i++) collect(st, s, v.u.l->v[i], d + 1);
        return;
    case JV_DICT: case JV_NS:
        set_add(st, s, v.u.d);
        for (size_t i = 0; i < v.u.d->n; i++) {
            collect(st, s, v.u.d->k[i], d + 1);
            collect(st, s, v.u.d->v[i], d + 1);
        }
        return;
    case JV_FUNC:
        if (v.u.fn->kind == JF_METHOD) collect(st, s, v.u.fn->self, d + 1);
        return;
    default: return;
    }
}

static int ptr_cmp(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t) * (const void *const *)a, y = (uintptr_t) * (const void *const *)b;
    return x < y ? -1 : x > y;
}

static bool set_has(const jt_set *s, const void *x)
{
    return bsearch(&x, s->p, s->n, sizeof *s->p, ptr_cmp) != NULL;
}

static jv taint_new(jstate *st, const jt_set *in, jv v, unsigned d)
{
    switch (v.t) {
    case JV_STR:
        if (js_all_untrusted(v.u.s) || set_has(in, v.u.s)) return v;
        return jv_strn_untrusted(st, v.u.s->p, v.u.s->len);
    case JV_LIST: case JV_TUPLE: case JV_GEN: {
        if (set_has(in, v.u.l)) return v; /* an input's own container */
        for (size_t i = 0; i < v.u.l->n; i++) v.u.l->v[i] = taint_new(st, in, v.u.l->v[i], d + 1);
        return v; /* a new container: changed in place */
    }
    case JV_DICT: case JV_NS: {
        if (set_has(in, v.u.d)) return v;
        for (size_t i = 0; i < v.u.d->n; i++) {
            v.u.d->k[i] = taint_new(st, in, v.u.d->k[i], d + 1);
            v.u.d->v[i] = taint_new(st, in, v.u.d->v[i], d + 1);
        }
        return v;
    }
    default: return v;
    }
}

jv jt_derive(jstate *st, jv r, const jv *in1, size_t n1, const jv *in2, size_t n2, const jv *in3, size_t n3)
{
    if (!st->mark || !jt_needs(st, r, 0))
        return r;
    bool any = false;
    for (size_t i = 0; i < n1 && !any; i++) any = jt_has_d(st, in1[i], 0);
    for (size_t i = 0; i < n2 && !any; i++) any = jt_has_d(st, in2[i], 0);
    for (size_t i = 0; i < n3 && !any; i++) any = jt_has_d(st, in3[i], 0);
    if (!any)
        return r;
    jt_set in = {0};
    for (size_t i = 0; i < n1; i++) collect(st, &in, in1[i], 0);
    for (size_t i = 0; i < n2; i++) collect(st, &in, in2[i], 0);
    for (size_t i = 0; i < n3; i++) collect(st, &in, in3[i], 0);
    if (in.n) qsort(in.p, in.n, sizeof *in.p, ptr_cmp);
    return taint_new(st, &in, r, 0);
}
