/* jinja_builtins.c - filters, tests, globals and the Python str/dict/list
 * methods that chat templates call. Semantics follow jinja2 3.1 and CPython;
 * generator-returning filters (map, select, items, ...) give a one-shot
 * value that, as in Python, has no len() and cannot be subscripted. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <utf8proc.h>

#include "tmpl/jinja_impl.h"

/* ---------------------------------------------------------------- tables */

enum {
    F_ABS, F_ATTR, F_BATCH, F_CAPITALIZE, F_CENTER, F_COUNT, F_D, F_DEFAULT, F_DICTSORT, F_E, F_ESCAPE,
    F_FIRST, F_FLOAT, F_FORCEESCAPE, F_FORMAT, F_GROUPBY, F_INDENT, F_INT, F_ITEMS, F_JOIN, F_LAST,
    F_LENGTH, F_LIST, F_LOWER, F_MAP, F_MAX, F_MIN, F_PPRINT, F_REJECT, F_REJECTATTR, F_REPLACE,
    F_REVERSE, F_ROUND, F_SAFE, F_SELECT, F_SELECTATTR, F_SLICE, F_SORT, F_STRING, F_STRIPTAGS, F_SUM,
    F_TITLE, F_TOJSON, F_TRIM, F_TRUNCATE, F_UNIQUE, F_UPPER, F_URLENCODE, F_URLIZE, F_WORDCOUNT,
    F_WORDWRAP, F_XMLATTR, F_COUNT_
};
static const char *const filter_names[] = {
    "abs", "attr", "batch", "capitalize", "center", "count", "d", "default", "dictsort", "e", "escape",
    "first", "float", "forceescape", "format", "groupby", "indent", "int", "items", "join", "last",
    "length", "list", "lower", "map", "max", "min", "pprint", "reject", "rejectattr", "replace",
    "reverse", "round", "safe", "select", "selectattr", "slice", "sort", "string", "striptags", "sum",
    "title", "tojson", "trim", "truncate", "unique", "upper", "urlencode", "urlize", "wordcount",
    "wordwrap", "xmlattr",
};
_Static_assert(sizeof filter_names / sizeof filter_names[0] == F_COUNT_, "filter table");

enum {
    T_BOOLEAN, T_CALLABLE, T_DEFINED, T_DIVISIBLEBY, T_EQ, T_EQUALTO, T_ESCAPED, T_EVEN, T_FALSE,
    T_FILTER, T_FLOAT, T_GE, T_GREATERTHAN, T_GT, T_IN, T_INTEGER, T_ITERABLE, T_LE, T_LESSTHAN,
    T_LOWER, T_LT, T_MAPPING, T_NE, T_NONE, T_NUMBER, T_ODD, T_SAMEAS, T_SEQUENCE, T_STRING, T_TEST,
    T_TRUE, T_UNDEFINED, T_UPPER, T_COUNT_
};
static const char *const test_names[] = {
    "boolean", "callable", "defined", "divisibleby", "eq", "equalto", "escaped", "even", "false",
    "filter", "float", "ge", "greaterthan", "gt", "in", "integer", "iterable", "le", "lessthan",
    "lower", "lt", "mapping", "ne", "none", "number", "odd", "sameas", "sequence", "string", "test",
    "true", "undefined", "upper",
};
_Static_assert(sizeof test_names / sizeof test_names[0] == T_COUNT_, "test table");

int jb_filter_id(const char *name)
{
    for (int i = 0; i < F_COUNT_; i++)
        if (!strcmp(filter_names[i], name)) return i;
    return -1;
}

int jb_test_id(const char *name)
{
    for (int i = 0; i < T_COUNT_; i++)
        if (!strcmp(test_names[i], name)) return i;
    return -1;
}

/* ---------------------------------------------------------------- helpers */

static _Noreturn void undef_err(jstate *st, jv v)
{
    if (v.u.uname && v.u.uname[0] == '!')
        jx_type(st, "SecurityError: access to attribute '%s' is unsafe", v.u.uname + 1);
    jx_type(st, "UndefinedError: '%s' is undefined", v.u.uname ? v.u.uname : "value");
}

/* Binds positional and keyword arguments to named parameters. given[i] says which were passed. */
static void bind(jstate *st, const char *fname, const char *const *params, size_t np, jv *args, size_t nargs,
                 const char **kwn, jv *kwv, size_t nkw, jv *out, bool *given)
{
    for (size_t i = 0; i < np; i++) {
        given[i] = false;
        out[i] = jv_undef(NULL);
    }
    if (nargs > np)
        jx_type(st, "TypeError: %s() takes at most %zu argument(s) (%zu given)", fname, np, nargs);
    for (size_t i = 0; i < nargs; i++) {
        out[i] = args[i];
        given[i] = true;
    }
    for (size_t k = 0; k < nkw; k++) {
        size_t i;
        for (i = 0; i < np; i++)
            if (!strcmp(params[i], kwn[k])) break;
        if (i == np) jx_type(st, "TypeError: %s() got an unexpected keyword argument '%s'", fname, kwn[k]);
        if (given[i]) jx_type(st, "TypeError: %s() got multiple values for argument '%s'", fname, kwn[k]);
        out[i] = kwv[k];
        given[i] = true;
    }
}

#define BIND(fname, ...)                                                                  \
    static const char *const P_[] = {__VA_ARGS__};                                        \
    enum { NP_ = sizeof P_ / sizeof P_[0] };                                              \
    jv a[NP_];                                                                            \
    bool g[NP_];                                                                          \
    bind(st, fname, P_, NP_, args, nargs, kwn, kwv, nkw, a, g)

static void no_kwargs(jstate *st, const char *fname, size_t nkw)
{
    if (nkw) jx_type(st, "TypeError: %s() takes no keyword arguments", fname);
}

static int64_t want_int(jstate *st, jv v, const char *what)
{
    if (v.t == JV_INT) return v.u.i;
    if (v.t == JV_BOOL) return v.u.b;
    jx_type(st, "TypeError: %s must be an integer, not '%s'", what, jv_typename(v));
}

static jstr *want_str(jstate *st, jv v, const char *what)
{
    if (v.t != JV_STR) jx_type(st, "TypeError: %s must be str, not %s", what, jv_typename(v));
    return v.u.s;
}

static jv mkfunc(jstate *st, int kind, int id, jv self, const char *name)
{
    jfunc *f = jx_alloc(st, sizeof(jfunc));
    memset(f, 0, sizeof *f);
    f->kind = kind;
    f->id = id;
    f->self = self;
    f->name = name;
    f->caller = jv_undef(NULL);
    jv v = {.t = JV_FUNC};
    v.u.fn = f;
    return v;
}

static jv mktuple2(jstate *st, jv a, jv b)
{
    jv t = jv_newlist(st, JV_TUPLE, 2);
    t.u.l->v[0] = a;
    t.u.l->v[1] = b;
    t.u.l->n = 2;
    return t;
}

static jv copy_list(jstate *st, jv l, uint8_t type)
{
    jv r = jv_newlist(st, type, l.u.l->n);
    if (l.u.l->n) memcpy(r.u.l->v, l.u.l->v, l.u.l->n * sizeof(jv));
    r.u.l->n = l.u.l->n;
    return r;
}

/* case mapping over code points; mode 0 lower, 1 upper */
static jv str_case(jstate *st, jstr *s, int mode)
{
    jsb b;
    jsb_init(st, &b, s->len + 1);
    for (size_t i = 0; i < s->len;) {
        unsigned char c = (unsigned char)s->p[i];
        if (c < 0x80) {
            char o = (char)c;
            if (mode == 0 && c >= 'A' && c <= 'Z') o = (char)(c + 32);
            if (mode == 1 && c >= 'a' && c <= 'z') o = (char)(c - 32);
            jsb_addc(st, &b, o);
            i++;
            continue;
        }
        int32_t cp;
        size_t k = ju_decode(s->p + i, s->len - i, &cp);
        cp = mode ? utf8proc_toupper(cp) : utf8proc_tolower(cp);
        char enc[8];
        jsb_add(st, &b, enc, ju_encode(cp, enc));
        i += k;
    }
    return jsb_take(st, &b);
}

static bool is_cased(int32_t cp)
{
    utf8proc_category_t c = utf8proc_category(cp);
    return c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LL || c == UTF8PROC_CATEGORY_LT;
}

static void add_cp(jstate *st, jsb *b, int32_t cp)
{
    char enc[8];
    jsb_add(st, b, enc, ju_encode(cp, enc));
}

/* Python str.title() */
static jv py_title(jstate *st, jstr *s)
{
    jsb b;
    jsb_init(st, &b, s->len + 1);
    bool prev_cased = false;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        size_t k = ju_decode(s->p + i, s->len - i, &cp);
        bool cased = is_cased(cp);
        add_cp(st, &b, prev_cased ? utf8proc_tolower(cp) : utf8proc_totitle(cp));
        prev_cased = cased;
        i += k;
    }
    return jsb_take(st, &b);
}

/* Python str.capitalize() */
static jv py_capitalize(jstate *st, jstr *s)
{
    jsb b;
    jsb_init(st, &b, s->len + 1);
    bool first = true;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        size_t k = ju_decode(s->p + i, s->len - i, &cp);
        add_cp(st, &b, first ? utf8proc_totitle(cp) : utf8proc_tolower(cp));
        first = false;
        i += k;
    }
    return jsb_take(st, &b);
}

/* jinja's title filter: words start after runs of [-\s({\[<] */
static jv jinja_title(jstate *st, jstr *s)
{
    jsb b;
    jsb_init(st, &b, s->len + 1);
    bool start = true;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        size_t k = ju_decode(s->p + i, s->len - i, &cp);
        bool sep = cp == '-' || cp == '(' || cp == '{' || cp == '[' || cp == '<' || ju_isspace(cp);
        if (sep) {
            add_cp(st, &b, cp);
            start = true;
        } else {
            add_cp(st, &b, start ? utf8proc_toupper(cp) : utf8proc_tolower(cp));
            start = false;
        }
        i += k;
    }
    return jsb_take(st, &b);
}

static bool in_chars(int32_t cp, jstr *chars)
{
    if (!chars) return ju_isspace(cp);
    for (size_t i = 0; i < chars->len;) {
        int32_t c;
        i += ju_decode(chars->p + i, chars->len - i, &c);
        if (c == cp) return true;
    }
    return false;
}

/* strip: which 1 left, 2 right, 3 both */
static jv py_strip(jstate *st, jstr *s, jstr *chars, int which)
{
    size_t a = 0, b = s->len;
    if (which & 1) {
        while (a < b) {
            int32_t cp;
            size_t k = ju_decode(s->p + a, b - a, &cp);
            if (!in_chars(cp, chars)) break;
            a += k;
        }
    }
    if (which & 2) {
        while (b > a) {
            size_t st0 = b - 1;
            while (st0 > a && ((unsigned char)s->p[st0] & 0xC0) == 0x80) st0--;
            int32_t cp;
            ju_decode(s->p + st0, b - st0, &cp);
            if (!in_chars(cp, chars)) break;
            b = st0;
        }
    }
    if (a == 0 && b == s->len) {
        jv v = {.t = JV_STR};
        v.u.s = s;
        return v;
    }
    return jv_strn(st, s->p + a, b - a);
}

/* Python str.split / rsplit */
static jv py_split(jstate *st, jstr *s, jstr *sep, int64_t maxsplit, bool right)
{
    jv l = jv_newlist(st, JV_LIST, 0);
    if (sep && sep->len == 0) jx_type(st, "ValueError: empty separator");
    if (!sep) {
        /* runs of whitespace */
        size_t n = s->len;
        if (!right) {
            size_t i = 0;
            int64_t splits = 0;
            for (;;) {
                while (i < n) {
                    int32_t cp;
                    size_t k = ju_decode(s->p + i, n - i, &cp);
                    if (!ju_isspace(cp)) break;
                    i += k;
                }
                if (i >= n) break;
                if (maxsplit >= 0 && splits >= maxsplit) {
                    /* the rest, trailing whitespace kept */
                    jl_push(st, l, jv_strn(st, s->p + i, n - i));
                    break;
                }
                size_t j = i;
                while (j < n) {
                    int32_t cp;
                    size_t k = ju_decode(s->p + j, n - j, &cp);
                    if (ju_isspace(cp)) break;
                    j += k;
                }
                jl_push(st, l, jv_strn(st, s->p + i, j - i));
                jx_step(st, 1);
                splits++;
                i = j;
            }
            return l;
        }
        /* rsplit(None): collect from the right */
        jv tmp = jv_newlist(st, JV_LIST, 0);
        size_t e = n;
        int64_t splits = 0;
        for (;;) {
            while (e > 0) {
                size_t st0 = e - 1;
                while (st0 > 0 && ((unsigned char)s->p[st0] & 0xC0) == 0x80) st0--;
                int32_t cp;
                ju_decode(s->p + st0, e - st0, &cp);
                if (!ju_isspace(cp)) break;
                e = st0;
            }
            if (e == 0) break;
            if (maxsplit >= 0 && splits >= maxsplit) {
                jl_push(st, tmp, jv_strn(st, s->p, e)); /* leading whitespace kept */
                break;
            }
            size_t b = e;
            while (b > 0) {
                size_t st0 = b - 1;
                while (st0 > 0 && ((unsigned char)s->p[st0] & 0xC0) == 0x80) st0--;
                int32_t cp;
                ju_decode(s->p + st0, b - st0, &cp);
                if (ju_isspace(cp)) break;
                b = st0;
            }
            jl_push(st, tmp, jv_strn(st, s->p + b, e - b));
            jx_step(st, 1);
            splits++;
            e = b;
        }
        for (size_t i = tmp.u.l->n; i > 0; i--) jl_push(st, l, tmp.u.l->v[i - 1]);
        return l;
    }
    if (!right) {
        size_t i = 0;
        int64_t splits = 0;
        for (;;) {
            const char *f = NULL;
            if (maxsplit < 0 || splits < maxsplit) f = memmem(s->p + i, s->len - i, sep->p, sep->len);
            if (!f) {
                jl_push(st, l, jv_strn(st, s->p + i, s->len - i));
                break;
            }
            size_t pos = (size_t)(f - s->p);
            jl_push(st, l, jv_strn(st, s->p + i, pos - i));
            jx_step(st, 1);
            splits++;
            i = pos + sep->len;
        }
        return l;
    }
    jv tmp = jv_newlist(st, JV_LIST, 0);
    size_t e = s->len;
    int64_t splits = 0;
    for (;;) {
        size_t found = SIZE_MAX;
        if ((maxsplit < 0 || splits < maxsplit) && e >= sep->len) {
            for (size_t p = e - sep->len + 1; p-- > 0;)
                if (memcmp(s->p + p, sep->p, sep->len) == 0) { found = p; break; }
        }
        if (found == SIZE_MAX) {
            jl_push(st, tmp, jv_strn(st, s->p, e));
            break;
        }
        jl_push(st, tmp, jv_strn(st, s->p + found + sep->len, e - found - sep->len));
        jx_step(st, 1);
        splits++;
        e = found;
    }
    for (size_t i = tmp.u.l->n; i > 0; i--) jl_push(st, l, tmp.u.l->v[i - 1]);
    return l;
}

static jv py_replace(jstate *st, jstr *s, jstr *old, jstr *nw, int64_t count)
{
    jsb b;
    jsb_init(st, &b, s->len + 16);
    if (count < 0) count = INT64_MAX;
    if (old->len == 0) {
        int64_t done = 0;
        size_t i = 0;
        for (;;) {
            if (done < count) {
                jsb_add(st, &b, nw->p, nw->len);
                done++;
            }
            if (i >= s->len) break;
            int32_t cp;
            size_t k = ju_decode(s->p + i, s->len - i, &cp);
            jsb_add(st, &b, s->p + i, k);
            i += k;
        }
        return jsb_take(st, &b);
    }
    size_t i = 0;
    int64_t done = 0;
    while (i < s->len) {
        const char *f = done < count ? memmem(s->p + i, s->len - i, old->p, old->len) : NULL;
        if (!f) break;
        size_t pos = (size_t)(f - s->p);
        jsb_add(st, &b, s->p + i, pos - i);
        jsb_add(st, &b, nw->p, nw->len);
        i = pos + old->len;
        done++;
    }
    jsb_add(st, &b, s->p + i, s->len - i);
    return jsb_take(st, &b);
}

static int64_t cp_index(jstr *s, size_t byte)
{
    int64_t n = 0;
    for (size_t i = 0; i < byte && i < s->len; i++)
        if (((unsigned char)s->p[i] & 0xC0) != 0x80) n++;
    return n;
}

static jv html_escape(jstate *st, jv v)
{
    jstr *s = jv_to_str(st, v).u.s;
    jsb b;
    jsb_init(st, &b, s->len + 16);
    for (size_t i = 0; i < s->len; i++) {
        switch (s->p[i]) {
        case '&': jsb_add(st, &b, "&amp;", 5); break;
        case '<': jsb_add(st, &b, "&lt;", 4); break;
        case '>': jsb_add(st, &b, "&gt;", 4); break;
        case '"': jsb_add(st, &b, "&#34;", 5); break;
        case '\'': jsb_add(st, &b, "&#39;", 5); break;
        default: jsb_addc(st, &b, s->p[i]);
        }
    }
    return jsb_take(st, &b);
}

/* jinja's environment.getitem for each part of "a.b.0" */
static jv attr_path(jstate *st, jv v, jstr *path)
{
    size_t i = 0;
    while (i <= path->len) {
        size_t j = i;
        while (j < path->len && path->p[j] != '.') j++;
        bool digits = j > i;
        for (size_t k = i; k < j; k++)
            if (path->p[k] < '0' || path->p[k] > '9') digits = false;
        jv key;
        if (digits && j - i < 18) {
            int64_t x = 0;
            for (size_t k = i; k < j; k++) x = x * 10 + (path->p[k] - '0');
            key = jv_int(x);
        } else {
            key = jv_strn(st, path->p + i, j - i);
        }
        v = jx_getitem(st, v, key);
        i = j + 1;
    }
    return v;
}

static jv ignore_case(jstate *st, jv v)
{
    return v.t == JV_STR ? str_case(st, v.u.s, 0) : v;
}

static int sort_cmp(jstate *st, jv a, jv b)
{
    if (a.t == b.t && (a.t == JV_NONE || a.t == JV_UNDEF)) return 0;
    return jv_cmp(st, a, b, "<");
}

/* stable merge sort of idx[] by keys[] */
static void msort(jstate *st, size_t *idx, size_t *tmp, size_t n, const jv *keys, bool rev)
{
    if (n < 2) return;
    size_t h = n / 2;
    msort(st, idx, tmp, h, keys, rev);
    msort(st, idx + h, tmp, n - h, keys, rev);
    size_t i = 0, j = h, o = 0;
    jx_step(st, n);
    while (i < h && j < n) {
        int c = sort_cmp(st, keys[idx[j]], keys[idx[i]]);
        /* take from the right only when strictly before (stable); reverse keeps stability too */
        bool take_right = rev ? sort_cmp(st, keys[idx[i]], keys[idx[j]]) < 0 : c < 0;
        tmp[o++] = take_right ? idx[j++] : idx[i++];
    }
    while (i < h) tmp[o++] = idx[i++];
    while (j < n) tmp[o++] = idx[j++];
    memcpy(idx, tmp, n * sizeof(size_t));
}

static jv sorted_by(jstate *st, jv items, const jv *keys, bool rev, uint8_t type)
{
    size_t n = items.u.l->n;
    size_t *idx = jx_alloc(st, (n + 1) * sizeof(size_t)), *tmp = jx_alloc(st, (n + 1) * sizeof(size_t));
    for (size_t i = 0; i < n; i++) idx[i] = i;
    msort(st, idx, tmp, n, keys, rev);
    jv r = jv_newlist(st, type, n);
    for (size_t i = 0; i < n; i++) r.u.l->v[i] = items.u.l->v[idx[i]];
    r.u.l->n = n;
    return r;
}

static jv call_filter_by_name(jstate *st, jv name, jv v, jv *args, size_t nargs, const char **kwn, jv *kwv,
                              size_t nkw)
{
    jstr *s = want_str(st, name, "filter name");
    int id = jb_filter_id(s->p);
    if (id < 0) jx_type(st, "TemplateRuntimeError: no filter named '%s'", s->p);
    return jb_filter(st, id, v, args, nargs, kwn, kwv, nkw);
}

static bool call_test_by_name(jstate *st, jv name, jv v, jv *args, size_t nargs)
{
    jstr *s = want_str(st, name, "test name");
    int id = jb_test_id(s->p);
    if (id < 0) jx_type(st, "TemplateRuntimeError: no test named '%s'", s->p);
    return jb_test(st, id, v, args, nargs);
}

static jv length_of(jstate *st, jv v)
{
    switch (v.t) {
    case JV_STR: return jv_int(js_ncp(v.u.s));
    case JV_LIST: case JV_TUPLE: return jv_int((int64_t)v.u.l->n);
    case JV_DICT: case JV_NS: return jv_int((int64_t)v.u.d->n);
    case JV_UNDEF: return jv_int(0);
    case JV_LOOP: return jv_int(v.u.loop->n);
    default: jx_type(st, "TypeError: object of type '%s' has no len()", jv_typename(v));
    }
}

static double want_num(jstate *st, jv v, const char *what)
{
    if (!jv_is_num(v)) jx_type(st, "TypeError: %s must be a number, not '%s'", what, jv_typename(v));
    return jv_num(v);
}

/* printf-style formatting: %[flags][width][.prec](s r a d i u f F e E g G x X o c %) */
jv jb_percent_format(jstate *st, jstr *fmt, jv argv)
{
    jv one[1] = {argv};
    const jv *items = argv.t == JV_TUPLE ? argv.u.l->v : one;
    size_t nitems = argv.t == JV_TUPLE ? argv.u.l->n : 1, used = 0;
    jsb b;
    jsb_init(st, &b, fmt->len + 16);
    for (size_t i = 0; i < fmt->len; i++) {
        char c = fmt->p[i];
        if (c != '%') { jsb_addc(st, &b, c); continue; }
        char spec[32];
        size_t k = 0;
        spec[k++] = '%';
        i++;
        while (i < fmt->len && strchr("-+ 0#", fmt->p[i]) && k < 8) spec[k++] = fmt->p[i++];
        int width = 0, prec = -1;
        for (; i < fmt->len && fmt->p[i] >= '0' && fmt->p[i] <= '9'; i++)
            if (width < 100000) width = width * 10 + (fmt->p[i] - '0');
        if (i < fmt->len && fmt->p[i] == '.') {
            prec = 0;
            i++;
            for (; i < fmt->len && fmt->p[i] >= '0' && fmt->p[i] <= '9'; i++)
                if (prec < 100000) prec = prec * 10 + (fmt->p[i] - '0');
        }
        if (i >= fmt->len) jx_type(st, "ValueError: incomplete format");
        if (width > 4096 || prec > 4096) jx_fail(st, HR_ERR_LIMIT, "format width too large");
        char t = fmt->p[i];
        if (t == '%') { jsb_addc(st, &b, '%'); continue; }
        if (t == '(') jx_type(st, "TypeError: format requires a mapping");
        if (used >= nitems) jx_type(st, "TypeError: not enough arguments for format string");
        jv x = items[used++];
        char tmp[4200 + 64];
        if (t == 's' || t == 'r' || t == 'a') {
            jsb sb;
            jsb_init(st, &sb, 32);
            if (t == 's') jv_write_str(st, &sb, x);
            else jv_write_repr(st, &sb, x);
            size_t len = sb.n;
            if (prec >= 0 && (size_t)prec < len) len = (size_t)prec; /* (bytes; close enough for ASCII) */
            bool left = memchr(spec, '-', k) != NULL;
            size_t pad = (size_t)width > len ? (size_t)width - len : 0;
            if (!left) for (size_t z = 0; z < pad; z++) jsb_addc(st, &b, ' ');
            jsb_add(st, &b, sb.p, len);
            if (left) for (size_t z = 0; z < pad; z++) jsb_addc(st, &b, ' ');
            continue;
        }
        k += (size_t)snprintf(spec + k, sizeof spec - k, "%d", width);
        if (prec >= 0) k += (size_t)snprintf(spec + k, sizeof spec - k, ".%d", prec);
        if (strchr("diuxXoc", t)) {
            if (!jv_is_num(x)) jx_type(st, "TypeError: %%%c format: a real number is required, not %s", t, jv_typename(x));
            if (x.t == JV_FLOAT && t != 'd' && t != 'i' && t != 'u') jx_type(st, "TypeError: %%%c format: an integer is required, not float", t);
            int64_t v = x.t == JV_FLOAT ? (isfinite(x.u.f) && fabs(x.u.f) < 9.2e18 ? (int64_t)x.u.f : 0) : x.t == JV_BOOL ? x.u.b : x.u.i;
            if (t == 'c') {
                if (v < 0 || v > 0x10FFFF) jx_type(st, "OverflowError: %%c arg not in range(0x110000)");
                add_cp(st, &b, (int32_t)v);
                continue;
            }
            char conv = t == 'i' || t == 'u' ? 'd' : t;
            snprintf(spec + k, sizeof spec - k, "ll%c", conv);
            snprintf(tmp, sizeof tmp, spec, (long long)v);
        } else if (strchr("fFeEgG", t)) {
            if (!jv_is_num(x)) jx_type(st, "TypeError: must be real number, not %s", jv_typename(x));
            snprintf(spec + k, sizeof spec - k, "%c", t);
            snprintf(tmp, sizeof tmp, spec, jv_num(x));
        } else {
            jx_type(st, "ValueError: unsupported format character '%c'", t);
        }
        jsb_add(st, &b, tmp, strlen(tmp));
    }
    if (used < nitems) jx_type(st, "TypeError: not all arguments converted during string formatting");
    return jsb_take(st, &b);
}

/* str.format with {} {0} {name} and {{ }} (no format specs) */
static jv brace_format(jstate *st, jstr *fmt, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    jsb b;
    jsb_init(st, &b, fmt->len + 16);
    size_t autoi = 0;
    for (size_t i = 0; i < fmt->len; i++) {
        char c = fmt->p[i];
        if (c == '{' && i + 1 < fmt->len && fmt->p[i + 1] == '{') { jsb_addc(st, &b, '{'); i++; continue; }
        if (c == '}' && i + 1 < fmt->len && fmt->p[i + 1] == '}') { jsb_addc(st, &b, '}'); i++; continue; }
        if (c == '}') jx_type(st, "ValueError: Single '}' encountered in format string");
        if (c != '{') { jsb_addc(st, &b, c); continue; }
        size_t j = i + 1;
        while (j < fmt->len && fmt->p[j] != '}') j++;
        if (j >= fmt->len) jx_type(st, "ValueError: Single '{' encountered in format string");
        const char *f = fmt->p + i + 1;
        size_t fl = j - i - 1;
        if (memchr(f, ':', fl) || memchr(f, '!', fl) || memchr(f, '.', fl) || memchr(f, '[', fl))
            jx_type(st, "ValueError: format specifications are not supported");
        jv x;
        if (fl == 0) {
            if (autoi >= nargs) jx_type(st, "IndexError: Replacement index %zu out of range", autoi);
            x = args[autoi++];
        } else if (f[0] >= '0' && f[0] <= '9') {
            size_t k = (size_t)strtoul(f, NULL, 10);
            if (k >= nargs) jx_type(st, "IndexError: Replacement index %zu out of range", k);
            x = args[k];
        } else {
            size_t k;
            for (k = 0; k < nkw; k++)
                if (strlen(kwn[k]) == fl && !memcmp(kwn[k], f, fl)) break;
            if (k == nkw) jx_type(st, "KeyError: '%.*s'", (int)fl, f);
            x = kwv[k];
        }
        jv_write_str(st, &b, x);
        i = j;
    }
    return jsb_take(st, &b);
}

static bool str_to_float(const char *p, double *out)
{
    while (*p == ' ' || (*p >= 9 && *p <= 13)) p++;
    if (!*p || strchr(p, 'x') || strchr(p, 'X')) return false;
    char buf[128];
    size_t k = 0;
    for (const char *q = p; *q && k < sizeof buf - 1; q++)
        if (*q != '_') buf[k++] = *q;
    buf[k] = 0;
    char *end;
    double d = strtod(buf, &end);
    if (end == buf) return false;
    while (*end == ' ' || (*end >= 9 && *end <= 13)) end++;
    if (*end) return false;
    *out = d;
    return true;
}

static bool str_to_int(const char *p, int base, int64_t *out)
{
    while (*p == ' ' || (*p >= 9 && *p <= 13)) p++;
    bool neg = false;
    if (*p == '+' || *p == '-') neg = *p++ == '-';
    if (base == 16 && p[0] == '0' && (p[1] | 0x20) == 'x') p += 2;
    if (base == 8 && p[0] == '0' && (p[1] | 0x20) == 'o') p += 2;
    if (base == 2 && p[0] == '0' && (p[1] | 0x20) == 'b') p += 2;
    int64_t v = 0;
    bool any = false, last_us = true;
    for (; *p; p++) {
        if (*p == '_') {
            if (last_us) return false;
            last_us = true;
            continue;
        }
        int d = *p >= '0' && *p <= '9' ? *p - '0' : (*p | 0x20) >= 'a' && (*p | 0x20) <= 'z' ? (*p | 0x20) - 'a' + 10 : 99;
        if (d >= base) break;
        if (v > (INT64_MAX - d) / base) return false;
        v = v * base + d;
        any = true;
        last_us = false;
    }
    while (*p == ' ' || (*p >= 9 && *p <= 13)) p++;
    if (!any || *p || last_us) return false;
    *out = neg ? -v : v;
    return true;
}

/* ---------------------------------------------------------------- filters */

static jv filter_impl(jstate *st, int id, jv v, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw);

/* New strings a filter makes out of untrusted input are untrusted
 * (jt_derive); values it passes through keep their marks. */
jv jb_filter(jstate *st, int id, jv v, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    jv r = filter_impl(st, id, v, args, nargs, kwn, kwv, nkw);
    return st->mark ? jt_derive(st, r, &v, 1, args, nargs, kwv, nkw) : r;
}


/* Length of the line break Python's str.splitlines() sees at p, or 0. */
static size_t line_break_len(const char *p, size_t n)
{
    unsigned char c = (unsigned char)p[0];
    if (c == '\r') return n > 1 && p[1] == '\n' ? 2 : 1;
    if (c == '\n' || c == '\v' || c == '\f' || (c >= 0x1c && c <= 0x1e)) return 1;
    if (c == 0xC2 && n > 1 && (unsigned char)p[1] == 0x85) return 2;
    if (c == 0xE2 && n > 2 && (unsigned char)p[1] == 0x80 && ((unsigned char)p[2] == 0xA8 || (unsigned char)p[2] == 0xA9))
        return 3;
    return 0;
}

static jv filter_impl(jstate *st, int id, jv v, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    switch (id) {
    case F_ABS: {
        no_kwargs(st, "abs", nkw);
        if (v.t == JV_INT) {
            if (v.u.i == INT64_MIN) jx_type(st, "OverflowError: integer out of range");
            return jv_int(v.u.i < 0 ? -v.u.i : v.u.i);
        }
        if (v.t == JV_BOOL) return jv_int(v.u.b);
        if (v.t == JV_FLOAT) return jv_float(fabs(v.u.f));
        if (v.t == JV_UNDEF) undef_err(st, v);
        jx_type(st, "TypeError: bad operand type for abs(): '%s'", jv_typename(v));
    }
    case F_ATTR: {
        BIND("attr", "name");
        if (v.t == JV_UNDEF) undef_err(st, v);
        jstr *s = want_str(st, a[0], "attribute name");
        if (v.t == JV_DICT) {
            /* getattr only: dict keys are not attributes */
            jv r = jb_getattr(st, v, s->p, s->len);
            jv dummy;
            if (r.t != JV_UNDEF && jd_getn(v.u.d, s->p, s->len, &dummy) && r.t != JV_FUNC) return jv_undef(s->p);
            return r;
        }
        return jb_getattr(st, v, s->p, s->len);
    }
    case F_BATCH: {
        BIND("batch", "linecount", "fill_with");
        int64_t n = want_int(st, a[0], "linecount");
        if (n <= 0) jx_type(st, "ValueError: batch size must be positive");
        jv items = jx_iter_list(st, v), r = jv_newlist(st, JV_GEN, 0), cur = jv_none();
        for (size_t i = 0; i < items.u.l->n; i++) {
            if (cur.t == JV_NONE || cur.u.l->n == (size_t)n) {
                cur = jv_newlist(st, JV_LIST, 0);
                jl_push(st, r, cur);
            }
            jl_push(st, cur, items.u.l->v[i]);
        }
        if (g[1] && cur.t != JV_NONE)
            while (cur.u.l->n < (size_t)n) { jx_step(st, 1); jl_push(st, cur, a[1]); }
        return r;
    }
    case F_CAPITALIZE:
        return py_capitalize(st, jv_to_str(st, v).u.s);
    case F_CENTER: {
        BIND("center", "width");
        int64_t w = g[0] ? want_int(st, a[0], "width") : 80;
        jstr *s = jv_to_str(st, v).u.s;
        int64_t n = js_ncp(s);
        if (w <= n) return jv_to_str(st, v);
        if ((uint64_t)w > st->max_output) jx_fail(st, HR_ERR_LIMIT, "center width exceeds the output limit");
        int64_t pad = w - n, left = pad / 2 + (pad & w & 1);
        jsb b;
        jsb_init(st, &b, s->len + (size_t)pad + 1);
        for (int64_t i = 0; i < left; i++) jsb_addc(st, &b, ' ');
        jsb_add(st, &b, s->p, s->len);
        for (int64_t i = 0; i < pad - left; i++) jsb_addc(st, &b, ' ');
        return jsb_take(st, &b);
    }
    case F_COUNT: case F_LENGTH:
        return length_of(st, v);
    case F_D: case F_DEFAULT: {
        BIND("default", "default_value", "boolean");
        bool boolean = g[1] && jv_truthy(a[1]);
        if (v.t == JV_UNDEF || (boolean && !jv_truthy(v))) return g[0] ? a[0] : jv_cstr(st, "");
        return v;
    }
    case F_DICTSORT: {
        BIND("dictsort", "case_sensitive", "by", "reverse");
        if (v.t != JV_DICT) {
            if (v.t == JV_UNDEF) undef_err(st, v);
            jx_type(st, "AttributeError: '%s' object has no attribute 'items'", jv_typename(v));
        }
        int pos = 0;
        if (g[1]) {
            jstr *by = want_str(st, a[1], "by");
            if (!strcmp(by->p, "value")) pos = 1;
            else if (strcmp(by->p, "key")) jx_type(st, "FilterArgumentError: You can only sort by either \"key\" or \"value\"");
        }
        bool cs = g[0] && jv_truthy(a[0]);
        jdict *d = v.u.d;
        jv items = jv_newlist(st, JV_LIST, d->n);
        jv *keys = jx_alloc(st, (d->n + 1) * sizeof(jv));
        for (size_t i = 0; i < d->n; i++) {
            items.u.l->v[i] = mktuple2(st, d->k[i], d->v[i]);
            jv k = pos ? d->v[i] : d->k[i];
            keys[i] = cs ? k : ignore_case(st, k);
        }
        items.u.l->n = d->n;
        return sorted_by(st, items, keys, g[2] && jv_truthy(a[2]), JV_LIST);
    }
    case F_E: case F_ESCAPE: case F_FORCEESCAPE:
        return html_escape(st, v);
    case F_FIRST: {
        if (v.t == JV_UNDEF) return jv_undef(NULL);
        jv l = jx_iter_list(st, v);
        return l.u.l->n ? l.u.l->v[0] : jv_undef(NULL);
    }
    case F_FLOAT: {
        BIND("float", "default");
        jv def = g[0] ? a[0] : jv_float(0.0);
        if (v.t == JV_FLOAT) return v;
        if (v.t == JV_INT || v.t == JV_BOOL) return jv_float(jv_num(v));
        double d;
        if (v.t == JV_STR && str_to_float(v.u.s->p, &d)) return jv_float(d);
        return def;
    }
    case F_FORMAT: {
        jstr *fmt = jv_to_str(st, v).u.s;
        if (nkw && nargs) jx_type(st, "FilterArgumentError: can't handle positional and keyword arguments at the same time");
        if (nkw) jx_type(st, "TypeError: keyword formatting is not supported");
        jv t = jv_newlist(st, JV_TUPLE, nargs);
        for (size_t i = 0; i < nargs; i++) t.u.l->v[i] = args[i];
        t.u.l->n = nargs;
        return jb_percent_format(st, fmt, t);
    }
    case F_INDENT: {
        BIND("indent", "width", "first", "blank");
        jsb ind;
        jsb_init(st, &ind, 8);
        if (g[0] && a[0].t == JV_STR) jsb_add(st, &ind, a[0].u.s->p, a[0].u.s->len);
        else {
            int64_t w = g[0] ? want_int(st, a[0], "width") : 4;
            if ((uint64_t)(w < 0 ? 0 : w) > st->max_output) jx_fail(st, HR_ERR_LIMIT, "indent width exceeds the output limit");
            for (int64_t i = 0; i < w; i++) jsb_addc(st, &ind, ' ');
        }
        bool first = g[1] && jv_truthy(a[1]), blank = g[2] && jv_truthy(a[2]);
        jstr *s = jv_to_str(st, v).u.s;
        /* Jinja2 appends "\n" and takes splitlines(): that is every piece
         * of s between line breaks, the last one too even when empty (a
         * trailing newline stays), except that a final lone "\r" joins the
         * added "\n" into one break. Breaks: \n \r \r\n \v \f \x1c-\x1e
         * U+0085 U+2028 U+2029; lines are joined with "\n". Empty lines get
         * the indentation only with blank. */
        jsb b;
        jsb_init(st, &b, s->len + 16);
        if (first) jsb_add(st, &b, ind.p, ind.n);
        size_t i = 0, lineno = 0;
        size_t n = s->len;
        for (;;) {
            size_t j = i, bl = 0;
            while (j < n && (bl = line_break_len(s->p + j, n - j)) == 0) j++;
            if (lineno > 0) {
                jsb_addc(st, &b, '\n');
                if (blank || j > i) jsb_add(st, &b, ind.p, ind.n);
            }
            jsb_add(st, &b, s->p + i, j - i);
            lineno++;
            jx_step(st, 1);
            if (j >= n) break;
            i = j + bl;
            if (i == n && bl == 1 && s->p[j] == '\r') break;
        }
        return jsb_take(st, &b);
    }
    case F_INT: {
        BIND("int", "default", "base");
        jv def = g[0] ? a[0] : jv_int(0);
        int base = g[1] ? (int)want_int(st, a[1], "base") : 10;
        if (v.t == JV_INT) return v;
        if (v.t == JV_BOOL) return jv_int(v.u.b);
        if (v.t == JV_FLOAT) {
            if (!isfinite(v.u.f) || fabs(v.u.f) >= 9.2e18) return def;
            return jv_int((int64_t)v.u.f);
        }
        if (v.t == JV_STR) {
            int64_t x;
            double d;
            if (base >= 2 && base <= 36 && str_to_int(v.u.s->p, base, &x)) return jv_int(x);
            if (str_to_float(v.u.s->p, &d) && isfinite(d) && fabs(d) < 9.2e18) return jv_int((int64_t)d);
        }
        return def;
    }
    case F_ITEMS: {
        if (v.t == JV_UNDEF) return jv_newlist(st, JV_GEN, 0);
        if (v.t != JV_DICT && v.t != JV_NS) jx_type(st, "TypeError: Can only get item pairs from a mapping.");
        jv r = jv_newlist(st, JV_GEN, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) r.u.l->v[i] = mktuple2(st, v.u.d->k[i], v.u.d->v[i]);
        r.u.l->n = v.u.d->n;
        return r;
    }
    case F_JOIN: {
        BIND("join", "d", "attribute");
        jv items = jx_iter_list(st, v);
        jstr *sep = g[0] ? jv_to_str(st, a[0]).u.s : NULL;
        jsb b;
        jsb_init(st, &b, 64);
        for (size_t i = 0; i < items.u.l->n; i++) {
            if (i && sep) jsb_add(st, &b, sep->p, sep->len);
            jv x = items.u.l->v[i];
            if (g[1] && a[1].t != JV_NONE) x = a[1].t == JV_STR ? attr_path(st, x, a[1].u.s) : jx_getitem(st, x, a[1]);
            jv_write_str(st, &b, x);
        }
        jx_step(st, items.u.l->n);
        return jsb_take(st, &b);
    }
    case F_LAST: {
        if (v.t == JV_GEN) jx_type(st, "TypeError: 'generator' object is not reversible");
        if (v.t == JV_UNDEF) return jv_undef(NULL);
        if (v.t == JV_STR) return js_ncp(v.u.s) ? jx_getitem(st, v, jv_int(-1)) : jv_undef(NULL);
        jv l = jx_iter_list(st, v);
        return l.u.l->n ? l.u.l->v[l.u.l->n - 1] : jv_undef(NULL);
    }
    case F_LIST:
        return copy_list(st, jx_iter_list(st, v), JV_LIST);
    case F_LOWER:
        return str_case(st, jv_to_str(st, v).u.s, 0);
    case F_UPPER:
        return str_case(st, jv_to_str(st, v).u.s, 1);
    case F_MAP: {
        jv items = jx_iter_list(st, v);
        jv r = jv_newlist(st, JV_GEN, items.u.l->n);
        bool byattr = nargs == 0;
        jv attr = jv_undef(NULL), def = jv_undef(NULL);
        bool has_def = false;
        if (byattr) {
            for (size_t k = 0; k < nkw; k++) {
                if (!strcmp(kwn[k], "attribute")) attr = kwv[k];
                else if (!strcmp(kwn[k], "default")) { def = kwv[k]; has_def = true; }
                else jx_type(st, "FilterArgumentError: Unexpected keyword argument '%s'", kwn[k]);
            }
            if (attr.t == JV_UNDEF) jx_type(st, "TypeError: map() needs a filter name or attribute=");
        }
        for (size_t i = 0; i < items.u.l->n; i++) {
            jx_step(st, 1);
            jv x = items.u.l->v[i];
            if (byattr) {
                x = attr.t == JV_STR ? attr_path(st, x, attr.u.s) : jx_getitem(st, x, attr);
                if (x.t == JV_UNDEF && has_def) x = def;
            } else {
                x = call_filter_by_name(st, args[0], x, args + 1, nargs - 1, kwn, kwv, nkw);
            }
            r.u.l->v[r.u.l->n++] = x;
        }
        return r;
    }
    case F_MAX: case F_MIN: {
        BIND(id == F_MAX ? "max" : "min", "case_sensitive", "attribute");
        jv items = jx_iter_list(st, v);
        if (!items.u.l->n) return jv_undef(NULL);
        bool cs = g[0] && jv_truthy(a[0]);
        size_t best = 0;
        jv bk = jv_none();
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv x = items.u.l->v[i];
            if (g[1] && a[1].t != JV_NONE) x = a[1].t == JV_STR ? attr_path(st, x, a[1].u.s) : jx_getitem(st, x, a[1]);
            if (!cs) x = ignore_case(st, x);
            if (i == 0) { bk = x; continue; }
            int c = sort_cmp(st, x, bk);
            if (id == F_MAX ? c > 0 : c < 0) { best = i; bk = x; }
        }
        return items.u.l->v[best];
    }
    case F_REJECT: case F_SELECT: {
        jv items = jx_iter_list(st, v);
        jv r = jv_newlist(st, JV_GEN, 0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jx_step(st, 1);
            jv x = items.u.l->v[i];
            bool t = nargs ? call_test_by_name(st, args[0], x, args + 1, nargs - 1) : jv_truthy(x);
            if (t == (id == F_SELECT)) jl_push(st, r, x);
        }
        return r;
    }
    case F_REJECTATTR: case F_SELECTATTR: {
        if (nargs < 1) jx_type(st, "TypeError: %s() missing the attribute argument", filter_names[id]);
        jv items = jx_iter_list(st, v);
        jv r = jv_newlist(st, JV_GEN, 0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jx_step(st, 1);
            jv x = items.u.l->v[i];
            jv av = args[0].t == JV_STR ? attr_path(st, x, args[0].u.s) : jx_getitem(st, x, args[0]);
            bool t = nargs > 1 ? call_test_by_name(st, args[1], av, args + 2, nargs - 2) : jv_truthy(av);
            if (t == (id == F_SELECTATTR)) jl_push(st, r, x);
        }
        return r;
    }
    case F_REPLACE: {
        BIND("replace", "old", "new", "count");
        if (!g[0] || !g[1]) jx_type(st, "TypeError: replace() missing required arguments");
        int64_t count = g[2] && a[2].t != JV_NONE ? want_int(st, a[2], "count") : -1;
        return py_replace(st, jv_to_str(st, v).u.s, jv_to_str(st, a[0]).u.s, jv_to_str(st, a[1]).u.s, count);
    }
    case F_REVERSE: {
        if (v.t == JV_STR) {
            jstr *s = v.u.s;
            jsb b;
            jsb_init(st, &b, s->len + 1);
            size_t e = s->len;
            while (e > 0) {
                size_t st0 = e - 1;
                while (st0 > 0 && ((unsigned char)s->p[st0] & 0xC0) == 0x80) st0--;
                jsb_add(st, &b, s->p + st0, e - st0);
                e = st0;
            }
            return jsb_take(st, &b);
        }
        uint8_t type = v.t == JV_GEN ? JV_LIST : JV_GEN;
        jv l = jx_iter_list(st, v);
        jv r = jv_newlist(st, type, l.u.l->n);
        for (size_t i = l.u.l->n; i > 0; i--) r.u.l->v[r.u.l->n++] = l.u.l->v[i - 1];
        return r;
    }
    case F_ROUND: {
        BIND("round", "precision", "method");
        int64_t prec = g[0] ? want_int(st, a[0], "precision") : 0;
        const char *method = g[1] ? want_str(st, a[1], "method")->p : "common";
        double x = want_num(st, v, "round() value");
        if (prec > 300) prec = 300;
        if (prec < -300) prec = -300;
        double m = pow(10.0, (double)prec);
        double r;
        if (!strcmp(method, "common")) {
            if (v.t != JV_FLOAT && prec >= 0) return jv_int(v.t == JV_BOOL ? v.u.b : v.u.i);
            r = prec == 0 ? nearbyint(x) : nearbyint(x * m) / m;
            if (v.t != JV_FLOAT) return jv_int((int64_t)r);
        } else if (!strcmp(method, "ceil")) {
            r = ceil(x * m) / m;
        } else if (!strcmp(method, "floor")) {
            r = floor(x * m) / m;
        } else {
            jx_type(st, "FilterArgumentError: method must be common, ceil or floor");
        }
        return jv_float(r);
    }
    case F_SAFE:
        return jv_to_str(st, v);
    case F_SORT: {
        BIND("sort", "reverse", "case_sensitive", "attribute");
        jv items = jx_iter_list(st, v);
        bool cs = g[1] && jv_truthy(a[1]);
        jv *keys = jx_alloc(st, (items.u.l->n + 1) * sizeof(jv));
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv x = items.u.l->v[i];
            if (g[2] && a[2].t != JV_NONE) x = a[2].t == JV_STR ? attr_path(st, x, a[2].u.s) : jx_getitem(st, x, a[2]);
            keys[i] = cs ? x : ignore_case(st, x);
        }
        return sorted_by(st, items, keys, g[0] && jv_truthy(a[0]), JV_LIST);
    }
    case F_STRING:
        return jv_to_str(st, v);
    case F_SUM: {
        BIND("sum", "attribute", "start");
        jv items = jx_iter_list(st, v);
        jv acc = g[1] ? a[1] : jv_int(0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv x = items.u.l->v[i];
            if (g[0] && a[0].t != JV_NONE) x = a[0].t == JV_STR ? attr_path(st, x, a[0].u.s) : jx_getitem(st, x, a[0]);
            if (!jv_is_num(acc) || !jv_is_num(x))
                jx_type(st, "TypeError: unsupported operand type(s) for +: '%s' and '%s'", jv_typename(acc), jv_typename(x));
            if (acc.t == JV_FLOAT || x.t == JV_FLOAT) acc = jv_float(jv_num(acc) + jv_num(x));
            else {
                int64_t r;
                if (__builtin_add_overflow(acc.t == JV_BOOL ? acc.u.b : acc.u.i, x.t == JV_BOOL ? x.u.b : x.u.i, &r))
                    jx_type(st, "OverflowError: integer result out of the supported range");
                acc = jv_int(r);
            }
        }
        return acc;
    }
    case F_TITLE:
        return jinja_title(st, jv_to_str(st, v).u.s);
    case F_TOJSON: {
        BIND("tojson", "ensure_ascii", "indent", "separators", "sort_keys");
        jjson_opts o = {0};
        o.ensure_ascii = g[0] && jv_truthy(a[0]);
        o.sort_keys = g[3] && jv_truthy(a[3]);
        char *ind = NULL;
        if (g[1] && a[1].t != JV_NONE) {
            if (a[1].t == JV_STR) {
                o.indent = a[1].u.s->p;
                o.indent_len = a[1].u.s->len;
            } else {
                int64_t w = want_int(st, a[1], "indent");
                if (w < 0) w = 0;
                if (w > 1024) jx_fail(st, HR_ERR_LIMIT, "tojson indent too large");
                ind = jx_alloc(st, (size_t)w + 1);
                memset(ind, ' ', (size_t)w);
                ind[w] = 0;
                o.indent = ind;
                o.indent_len = (size_t)w;
            }
        }
        o.item_sep = o.indent ? "," : ", ";
        o.key_sep = ": ";
        if (g[2] && a[2].t != JV_NONE) {
            jv s = a[2];
            if ((s.t != JV_TUPLE && s.t != JV_LIST) || s.u.l->n != 2 || s.u.l->v[0].t != JV_STR ||
                s.u.l->v[1].t != JV_STR)
                jx_type(st, "TypeError: separators must be a pair of strings");
            o.item_sep = s.u.l->v[0].u.s->p;
            o.item_sep_len = s.u.l->v[0].u.s->len;
            o.key_sep = s.u.l->v[1].u.s->p;
            o.key_sep_len = s.u.l->v[1].u.s->len;
        } else {
            o.item_sep_len = strlen(o.item_sep);
            o.key_sep_len = strlen(o.key_sep);
        }
        jsb b;
        jsb_init(st, &b, 64);
        jv_write_json(st, &b, v, &o, 0);
        return jsb_take(st, &b);
    }
    case F_TRIM: {
        BIND("trim", "chars");
        jstr *chars = g[0] && a[0].t != JV_NONE ? want_str(st, a[0], "chars") : NULL;
        return py_strip(st, jv_to_str(st, v).u.s, chars, 3);
    }
    case F_UNIQUE: {
        BIND("unique", "case_sensitive", "attribute");
        jv items = jx_iter_list(st, v);
        bool cs = g[0] && jv_truthy(a[0]);
        jv r = jv_newlist(st, JV_GEN, 0), seen = jv_newlist(st, JV_LIST, 0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jv x = items.u.l->v[i];
            jv k = x;
            if (g[1] && a[1].t != JV_NONE) k = a[1].t == JV_STR ? attr_path(st, x, a[1].u.s) : jx_getitem(st, x, a[1]);
            if (!cs) k = ignore_case(st, k);
            bool dup = false;
            jx_step(st, seen.u.l->n + 1);
            for (size_t j = 0; j < seen.u.l->n && !dup; j++) dup = jv_eq(seen.u.l->v[j], k);
            if (!dup) {
                jl_push(st, seen, k);
                jl_push(st, r, x);
            }
        }
        return r;
    }
    case F_WORDCOUNT: {
        jstr *s = jv_to_str(st, v).u.s;
        int64_t n = 0;
        bool in = false;
        for (size_t i = 0; i < s->len;) {
            int32_t cp;
            size_t k = ju_decode(s->p + i, s->len - i, &cp);
            utf8proc_category_t c = utf8proc_category(cp);
            bool w = cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO) ||
                     (c >= UTF8PROC_CATEGORY_ND && c <= UTF8PROC_CATEGORY_NO) ||
                     (c >= UTF8PROC_CATEGORY_MN && c <= UTF8PROC_CATEGORY_ME);
            if (w && !in) n++;
            in = w;
            i += k;
        }
        return jv_int(n);
    }
    default:
        jx_type(st, "TemplateRuntimeError: the '%s' filter is not supported", filter_names[id]);
    }
}

/* ---------------------------------------------------------------- tests */

static bool str_cased_all(jstr *s, bool upper)
{
    bool any = false;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        i += ju_decode(s->p + i, s->len - i, &cp);
        utf8proc_category_t c = utf8proc_category(cp);
        if (c == UTF8PROC_CATEGORY_LU || c == UTF8PROC_CATEGORY_LT) {
            if (!upper) return false;
            any = true;
        } else if (c == UTF8PROC_CATEGORY_LL) {
            if (upper) return false;
            any = true;
        }
    }
    return any;
}

bool jb_test(jstate *st, int id, jv v, jv *args, size_t nargs)
{
    jv arg = nargs ? args[0] : jv_undef(NULL);
    switch (id) {
    case T_BOOLEAN: return v.t == JV_BOOL;
    case T_CALLABLE: return v.t == JV_FUNC;
    case T_DEFINED: return v.t != JV_UNDEF;
    case T_UNDEFINED: return v.t == JV_UNDEF;
    case T_NONE: return v.t == JV_NONE;
    case T_FALSE: return v.t == JV_BOOL && !v.u.b;
    case T_TRUE: return v.t == JV_BOOL && v.u.b;
    case T_INTEGER: return v.t == JV_INT;
    case T_FLOAT: return v.t == JV_FLOAT;
    case T_NUMBER: return jv_is_num(v);
    case T_STRING: return v.t == JV_STR;
    case T_MAPPING: return v.t == JV_DICT;
    case T_ITERABLE:
        return v.t == JV_STR || v.t == JV_LIST || v.t == JV_TUPLE || v.t == JV_DICT || v.t == JV_GEN ||
               v.t == JV_UNDEF;
    case T_SEQUENCE:
        return v.t == JV_STR || v.t == JV_LIST || v.t == JV_TUPLE || v.t == JV_DICT || v.t == JV_UNDEF;
    case T_ESCAPED: return false;
    case T_ODD: case T_EVEN: {
        if (v.t == JV_UNDEF) undef_err(st, v);
        if (v.t != JV_INT && v.t != JV_BOOL) jx_type(st, "TypeError: %s test needs an integer", test_names[id]);
        int64_t x = v.t == JV_BOOL ? v.u.b : v.u.i;
        return ((x % 2) != 0) == (id == T_ODD);
    }
    case T_DIVISIBLEBY: {
        if (!jv_is_num(v) || !jv_is_num(arg)) jx_type(st, "TypeError: divisibleby needs numbers");
        if (v.t == JV_FLOAT || arg.t == JV_FLOAT) {
            if (jv_num(arg) == 0) jx_type(st, "ZeroDivisionError: float modulo");
            return fmod(jv_num(v), jv_num(arg)) == 0;
        }
        int64_t y = arg.t == JV_BOOL ? arg.u.b : arg.u.i, x = v.t == JV_BOOL ? v.u.b : v.u.i;
        if (y == 0) jx_type(st, "ZeroDivisionError: integer modulo by zero");
        if (y == -1) return true;
        return x % y == 0;
    }
    case T_EQ: case T_EQUALTO: return jv_eq(v, arg);
    case T_NE: return !jv_eq(v, arg);
    case T_LT: case T_LESSTHAN: return jv_cmp(st, v, arg, "<") < 0;
    case T_LE: return jv_cmp(st, v, arg, "<=") <= 0;
    case T_GT: case T_GREATERTHAN: return jv_cmp(st, v, arg, ">") > 0;
    case T_GE: return jv_cmp(st, v, arg, ">=") >= 0;
    case T_SAMEAS:
        if (v.t != arg.t) return false;
        if (v.t == JV_NONE || v.t == JV_UNDEF) return true;
        if (v.t == JV_BOOL) return v.u.b == arg.u.b;
        if (v.t == JV_INT) return v.u.i == arg.u.i;
        if (v.t == JV_FLOAT) return false;
        return v.u.s == arg.u.s;
    case T_IN: {
        switch (arg.t) {
        case JV_STR:
            if (v.t != JV_STR) jx_type(st, "TypeError: 'in <string>' requires string as left operand");
            return v.u.s->len == 0 || memmem(arg.u.s->p, arg.u.s->len, v.u.s->p, v.u.s->len);
        case JV_LIST: case JV_TUPLE:
            for (size_t i = 0; i < arg.u.l->n; i++)
                if (jv_eq(v, arg.u.l->v[i])) return true;
            return false;
        case JV_DICT: {
            jv o;
            return jd_get(arg.u.d, v, &o);
        }
        case JV_UNDEF: return false;
        default: jx_type(st, "TypeError: argument of type '%s' is not iterable", jv_typename(arg));
        }
    }
    case T_LOWER: return v.t == JV_STR ? str_cased_all(v.u.s, false) : false;
    case T_UPPER: return v.t == JV_STR ? str_cased_all(v.u.s, true) : false;
    case T_FILTER: return v.t == JV_STR && jb_filter_id(v.u.s->p) >= 0;
    case T_TEST: return v.t == JV_STR && jb_test_id(v.u.s->p) >= 0;
    }
    return false;
}

/* ---------------------------------------------------------------- methods */

enum {
    /* str */
    M_UPPER, M_LOWER, M_STRIP, M_LSTRIP, M_RSTRIP, M_SPLIT, M_RSPLIT, M_SPLITLINES, M_STARTSWITH,
    M_ENDSWITH, M_REPLACE, M_TITLE, M_CAPITALIZE, M_FIND, M_RFIND, M_INDEX_S, M_COUNT_S, M_JOIN,
    M_ISDIGIT, M_ISALPHA, M_ISALNUM, M_ISSPACE, M_ISUPPER, M_ISLOWER, M_FORMAT, M_REMOVEPREFIX,
    M_REMOVESUFFIX, M_ZFILL, M_SWAPCASE, M_LJUST, M_RJUST, M_CENTER, M_STR_END_,
    /* dict */
    M_GET, M_ITEMS, M_KEYS, M_VALUES, M_COPY_D,
    /* list */
    M_INDEX_L, M_COUNT_L, M_COPY_L,
    /* globals */
    G_RANGE, G_NAMESPACE, G_RAISE, G_STRFTIME, G_DICT,
};

static const struct { const char *name; int id; } str_methods[] = {
    {"upper", M_UPPER}, {"lower", M_LOWER}, {"strip", M_STRIP}, {"lstrip", M_LSTRIP}, {"rstrip", M_RSTRIP},
    {"split", M_SPLIT}, {"rsplit", M_RSPLIT}, {"splitlines", M_SPLITLINES}, {"startswith", M_STARTSWITH},
    {"endswith", M_ENDSWITH}, {"replace", M_REPLACE}, {"title", M_TITLE}, {"capitalize", M_CAPITALIZE},
    {"find", M_FIND}, {"rfind", M_RFIND}, {"index", M_INDEX_S}, {"count", M_COUNT_S}, {"join", M_JOIN},
    {"isdigit", M_ISDIGIT}, {"isalpha", M_ISALPHA}, {"isalnum", M_ISALNUM}, {"isspace", M_ISSPACE},
    {"isupper", M_ISUPPER}, {"islower", M_ISLOWER}, {"format", M_FORMAT}, {"removeprefix", M_REMOVEPREFIX},
    {"removesuffix", M_REMOVESUFFIX}, {"zfill", M_ZFILL}, {"swapcase", M_SWAPCASE}, {"ljust", M_LJUST},
    {"rjust", M_RJUST}, {"center", M_CENTER},
};

static bool name_is(const char *name, size_t len, const char *lit)
{
    return strlen(lit) == len && !memcmp(name, lit, len);
}

static const char *const unsafe_dict[] = {"clear", "pop", "popitem", "setdefault", "update", NULL};
static const char *const unsafe_list[] = {"append", "clear", "extend", "insert", "pop", "remove", "reverse", "sort", NULL};

jv jb_getattr(jstate *st, jv obj, const char *name, size_t len)
{
    switch (obj.t) {
    case JV_STR:
        for (size_t i = 0; i < sizeof str_methods / sizeof str_methods[0]; i++)
            if (name_is(name, len, str_methods[i].name)) return mkfunc(st, JF_METHOD, str_methods[i].id, obj, str_methods[i].name);
        break;
    case JV_DICT: {
        if (name_is(name, len, "get")) return mkfunc(st, JF_METHOD, M_GET, obj, "get");
        if (name_is(name, len, "items")) return mkfunc(st, JF_METHOD, M_ITEMS, obj, "items");
        if (name_is(name, len, "keys")) return mkfunc(st, JF_METHOD, M_KEYS, obj, "keys");
        if (name_is(name, len, "values")) return mkfunc(st, JF_METHOD, M_VALUES, obj, "values");
        if (name_is(name, len, "copy")) return mkfunc(st, JF_METHOD, M_COPY_D, obj, "copy");
        for (size_t i = 0; unsafe_dict[i]; i++)
            if (name_is(name, len, unsafe_dict[i])) {
                char *u = jx_alloc(st, len + 2);
                u[0] = '!';
                memcpy(u + 1, name, len);
                u[len + 1] = 0;
                return jv_undef(u);
            }
        jv r;
        if (jd_getn(obj.u.d, name, len, &r)) return r;
        break;
    }
    case JV_NS: {
        jv r;
        if (jd_getn(obj.u.d, name, len, &r)) return r;
        break;
    }
    case JV_LIST: case JV_TUPLE:
        if (name_is(name, len, "index")) return mkfunc(st, JF_METHOD, M_INDEX_L, obj, "index");
        if (name_is(name, len, "count")) return mkfunc(st, JF_METHOD, M_COUNT_L, obj, "count");
        if (obj.t == JV_LIST && name_is(name, len, "copy")) return mkfunc(st, JF_METHOD, M_COPY_L, obj, "copy");
        if (obj.t == JV_LIST)
            for (size_t i = 0; unsafe_list[i]; i++)
                if (name_is(name, len, unsafe_list[i])) {
                    char *u = jx_alloc(st, len + 2);
                    u[0] = '!';
                    memcpy(u + 1, name, len);
                    u[len + 1] = 0;
                    return jv_undef(u);
                }
        break;
    case JV_LOOP: {
        jloop *l = obj.u.loop;
        if (name_is(name, len, "index")) return jv_int(l->i + 1);
        if (name_is(name, len, "index0")) return jv_int(l->i);
        if (name_is(name, len, "revindex")) return jv_int(l->n - l->i);
        if (name_is(name, len, "revindex0")) return jv_int(l->n - l->i - 1);
        if (name_is(name, len, "first")) return jv_bool(l->i == 0);
        if (name_is(name, len, "last")) return jv_bool(l->i == l->n - 1);
        if (name_is(name, len, "length")) return jv_int(l->n);
        if (name_is(name, len, "depth")) return jv_int(1);
        if (name_is(name, len, "depth0")) return jv_int(0);
        if (name_is(name, len, "previtem")) return l->i > 0 ? l->items[l->i - 1] : jv_undef("previtem");
        if (name_is(name, len, "nextitem")) return l->i + 1 < l->n ? l->items[l->i + 1] : jv_undef("nextitem");
        if (name_is(name, len, "cycle")) return mkfunc(st, JF_CYCLE, 0, obj, "cycle");
        break;
    }
    default:
        break;
    }
    return jv_undef(NULL);
}

jv jb_global(jstate *st, const char *name, bool *found)
{
    static const struct { const char *name; int id; } g[] = {
        {"range", G_RANGE}, {"namespace", G_NAMESPACE}, {"raise_exception", G_RAISE},
        {"strftime_now", G_STRFTIME}, {"dict", G_DICT},
    };
    for (size_t i = 0; i < sizeof g / sizeof g[0]; i++)
        if (!strcmp(name, g[i].name)) {
            *found = true;
            return mkfunc(st, JF_BUILTIN, g[i].id, jv_none(), g[i].name);
        }
    *found = false;
    return jv_undef(name);
}

static bool str_all(jstr *s, int kind)
{
    if (!s->len) return false;
    bool any_cased = false;
    for (size_t i = 0; i < s->len;) {
        int32_t cp;
        i += ju_decode(s->p + i, s->len - i, &cp);
        utf8proc_category_t c = utf8proc_category(cp);
        bool alpha = c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_LO;
        bool digit = c == UTF8PROC_CATEGORY_ND;
        switch (kind) {
        case 0: if (!digit) return false; break;
        case 1: if (!alpha) return false; break;
        case 2: if (!alpha && !digit && c != UTF8PROC_CATEGORY_NL && c != UTF8PROC_CATEGORY_NO) return false; break;
        case 3: if (!ju_isspace(cp)) return false; break;
        default: (void)any_cased; break;
        }
    }
    return true;
}

static bool prefix_match(jstate *st, jstr *s, jv pre, bool end)
{
    if (pre.t == JV_TUPLE || pre.t == JV_LIST) {
        for (size_t i = 0; i < pre.u.l->n; i++)
            if (prefix_match(st, s, pre.u.l->v[i], end)) return true;
        return false;
    }
    jstr *p = want_str(st, pre, end ? "endswith arg" : "startswith arg");
    if (p->len > s->len) return false;
    return memcmp(end ? s->p + s->len - p->len : s->p, p->p, p->len) == 0;
}

static jv call_method(jstate *st, jfunc *fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    jv self = fn->self;
    const char *mname = fn->name;
    if (fn->id < M_STR_END_) {
        jstr *s = self.u.s;
        switch (fn->id) {
        case M_UPPER: no_kwargs(st, mname, nkw); return str_case(st, s, 1);
        case M_LOWER: no_kwargs(st, mname, nkw); return str_case(st, s, 0);
        case M_TITLE: return py_title(st, s);
        case M_CAPITALIZE: return py_capitalize(st, s);
        case M_SWAPCASE: {
            jsb b;
            jsb_init(st, &b, s->len + 1);
            for (size_t i = 0; i < s->len;) {
                int32_t cp;
                i += ju_decode(s->p + i, s->len - i, &cp);
                utf8proc_category_t c = utf8proc_category(cp);
                add_cp(st, &b, c == UTF8PROC_CATEGORY_LU ? utf8proc_tolower(cp) : c == UTF8PROC_CATEGORY_LL ? utf8proc_toupper(cp) : cp);
            }
            return jsb_take(st, &b);
        }
        case M_STRIP: case M_LSTRIP: case M_RSTRIP: {
            no_kwargs(st, mname, nkw);
            if (nargs > 1) jx_type(st, "TypeError: %s expected at most 1 argument", mname);
            jstr *chars = nargs && args[0].t != JV_NONE ? want_str(st, args[0], "strip arg") : NULL;
            return py_strip(st, s, chars, fn->id == M_STRIP ? 3 : fn->id == M_LSTRIP ? 1 : 2);
        }
        case M_SPLIT: case M_RSPLIT: {
            BIND(mname, "sep", "maxsplit");
            jstr *sep = g[0] && a[0].t != JV_NONE ? want_str(st, a[0], "sep") : NULL;
            int64_t mx = g[1] ? want_int(st, a[1], "maxsplit") : -1;
            return py_split(st, s, sep, mx, fn->id == M_RSPLIT);
        }
        case M_SPLITLINES: {
            BIND(mname, "keepends");
            bool keep = g[0] && jv_truthy(a[0]);
            jv l = jv_newlist(st, JV_LIST, 0);
            size_t i = 0;
            while (i < s->len) {
                size_t j = i;
                while (j < s->len && !strchr("\n\r\v\f\x1c\x1d\x1e", s->p[j])) j++;
                size_t e = j;
                if (j < s->len) {
                    e = j + 1;
                    if (s->p[j] == '\r' && e < s->len && s->p[e] == '\n') e++;
                }
                jl_push(st, l, jv_strn(st, s->p + i, (keep ? e : j) - i));
                jx_step(st, 1);
                i = e;
            }
            return l;
        }
        case M_STARTSWITH: case M_ENDSWITH:
            no_kwargs(st, mname, nkw);
            if (nargs != 1) jx_type(st, "TypeError: %s() takes exactly one argument", mname);
            return jv_bool(prefix_match(st, s, args[0], fn->id == M_ENDSWITH));
        case M_REPLACE: {
            no_kwargs(st, "str.replace", nkw);
            if (nargs < 2 || nargs > 3) jx_type(st, "TypeError: replace expected 2 or 3 arguments");
            int64_t count = nargs == 3 ? want_int(st, args[2], "count") : -1;
            return py_replace(st, s, want_str(st, args[0], "replace arg"), want_str(st, args[1], "replace arg"), count);
        }
        case M_FIND: case M_RFIND: case M_INDEX_S: case M_COUNT_S: {
            no_kwargs(st, mname, nkw);
            if (nargs != 1) jx_type(st, "TypeError: %s() takes exactly one argument", mname);
            jstr *sub = want_str(st, args[0], "substring");
            if (fn->id == M_COUNT_S) {
                if (!sub->len) return jv_int(js_ncp(s) + 1);
                int64_t c = 0;
                for (size_t i = 0; i + sub->len <= s->len;) {
                    const char *f = memmem(s->p + i, s->len - i, sub->p, sub->len);
                    if (!f) break;
                    c++;
                    i = (size_t)(f - s->p) + sub->len;
                }
                return jv_int(c);
            }
            size_t found = SIZE_MAX;
            if (fn->id == M_RFIND) {
                if (sub->len <= s->len)
                    for (size_t p = s->len - sub->len + 1; p-- > 0;)
                        if (!memcmp(s->p + p, sub->p, sub->len)) { found = p; break; }
            } else {
                const char *f = memmem(s->p, s->len, sub->p, sub->len);
                if (f || !sub->len) found = f ? (size_t)(f - s->p) : 0;
            }
            if (found == SIZE_MAX) {
                if (fn->id == M_INDEX_S) jx_type(st, "ValueError: substring not found");
                return jv_int(-1);
            }
            return jv_int(cp_index(s, found));
        }
        case M_JOIN: {
            no_kwargs(st, mname, nkw);
            if (nargs != 1) jx_type(st, "TypeError: join() takes exactly one argument");
            jv items = jx_iter_list(st, args[0]);
            jsb b;
            jsb_init(st, &b, 64);
            for (size_t i = 0; i < items.u.l->n; i++) {
                if (i) jsb_add(st, &b, s->p, s->len);
                jv x = items.u.l->v[i];
                if (x.t != JV_STR) jx_type(st, "TypeError: sequence item %zu: expected str instance, %s found", i, jv_typename(x));
                jsb_add(st, &b, x.u.s->p, x.u.s->len);
            }
            return jsb_take(st, &b);
        }
        case M_ISDIGIT: return jv_bool(str_all(s, 0));
        case M_ISALPHA: return jv_bool(str_all(s, 1));
        case M_ISALNUM: return jv_bool(str_all(s, 2));
        case M_ISSPACE: return jv_bool(str_all(s, 3));
        case M_ISUPPER: return jv_bool(str_cased_all(s, true));
        case M_ISLOWER: return jv_bool(str_cased_all(s, false));
        case M_FORMAT: return brace_format(st, s, args, nargs, kwn, kwv, nkw);
        case M_REMOVEPREFIX: case M_REMOVESUFFIX: {
            if (nargs != 1) jx_type(st, "TypeError: %s() takes exactly one argument", mname);
            jstr *p = want_str(st, args[0], "affix");
            bool end = fn->id == M_REMOVESUFFIX;
            if (p->len && prefix_match(st, s, args[0], end))
                return end ? jv_strn(st, s->p, s->len - p->len) : jv_strn(st, s->p + p->len, s->len - p->len);
            return self;
        }
        case M_ZFILL: case M_LJUST: case M_RJUST: case M_CENTER: {
            if (nargs < 1) jx_type(st, "TypeError: %s() missing width", mname);
            int64_t w = want_int(st, args[0], "width");
            int64_t n = js_ncp(s);
            if (w <= n) return self;
            if ((uint64_t)w > st->max_output) jx_fail(st, HR_ERR_LIMIT, "width exceeds the output limit");
            char fill = ' ';
            if (nargs > 1) {
                jstr *f = want_str(st, args[1], "fill character");
                if (f->len != 1) jx_type(st, "TypeError: The fill character must be exactly one character long");
                fill = f->p[0];
            }
            int64_t pad = w - n, left = 0;
            if (fn->id == M_RJUST || fn->id == M_ZFILL) left = pad;
            else if (fn->id == M_CENTER) left = pad / 2 + (pad & w & 1);
            jsb b;
            jsb_init(st, &b, s->len + (size_t)pad + 1);
            size_t start = 0;
            if (fn->id == M_ZFILL) {
                fill = '0';
                if (s->len && (s->p[0] == '-' || s->p[0] == '+')) {
                    jsb_addc(st, &b, s->p[0]);
                    start = 1;
                }
            }
            for (int64_t i = 0; i < left; i++) jsb_addc(st, &b, fill);
            jsb_add(st, &b, s->p + start, s->len - start);
            for (int64_t i = 0; i < pad - left; i++) jsb_addc(st, &b, fill);
            return jsb_take(st, &b);
        }
        }
    }
    switch (fn->id) {
    case M_GET: {
        no_kwargs(st, "get", nkw);
        if (nargs < 1 || nargs > 2) jx_type(st, "TypeError: get expected 1 or 2 arguments");
        jv r;
        if (jd_get(self.u.d, args[0], &r)) return r;
        return nargs == 2 ? args[1] : jv_none();
    }
    case M_ITEMS: case M_KEYS: case M_VALUES: {
        jdict *d = self.u.d;
        jv l = jv_newlist(st, JV_LIST, d->n);
        for (size_t i = 0; i < d->n; i++)
            l.u.l->v[i] = fn->id == M_ITEMS ? mktuple2(st, d->k[i], d->v[i]) : fn->id == M_KEYS ? d->k[i] : d->v[i];
        l.u.l->n = d->n;
        return l;
    }
    case M_COPY_D: {
        jv r = jv_newdict(st, JV_DICT, self.u.d->n);
        for (size_t i = 0; i < self.u.d->n; i++) jd_set(st, r.u.d, self.u.d->k[i], self.u.d->v[i]);
        return r;
    }
    case M_COPY_L:
        return copy_list(st, self, JV_LIST);
    case M_INDEX_L: case M_COUNT_L: {
        if (nargs != 1) jx_type(st, "TypeError: %s() takes exactly one argument", mname);
        int64_t c = 0;
        for (size_t i = 0; i < self.u.l->n; i++)
            if (jv_eq(self.u.l->v[i], args[0])) {
                if (fn->id == M_INDEX_L) return jv_int((int64_t)i);
                c++;
            }
        if (fn->id == M_INDEX_L) jx_type(st, "ValueError: value is not in list");
        return jv_int(c);
    }
    }
    jx_type(st, "TypeError: unsupported method '%s'", mname);
}

static jv call_impl(jstate *st, jfunc *fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw);

jv jb_call_builtin(jstate *st, jfunc *fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    jv r = call_impl(st, fn, args, nargs, kwn, kwv, nkw);
    if (!st->mark)
        return r;
    jv self = fn->kind == JF_METHOD ? fn->self : jv_none();
    return jt_derive(st, r, &self, 1, args, nargs, kwv, nkw);
}

static jv call_impl(jstate *st, jfunc *fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    if (fn->kind == JF_CYCLE) {
        if (!nargs) jx_type(st, "TypeError: no items for cycling given");
        return args[fn->self.u.loop->i % (int64_t)nargs];
    }
    if (fn->kind == JF_METHOD) return call_method(st, fn, args, nargs, kwn, kwv, nkw);
    switch (fn->id) {
    case G_RANGE: {
        no_kwargs(st, "range", nkw);
        if (nargs < 1 || nargs > 3) jx_type(st, "TypeError: range expected 1 to 3 arguments, got %zu", nargs);
        int64_t a = 0, b, k = 1;
        if (nargs == 1) b = want_int(st, args[0], "range() argument");
        else {
            a = want_int(st, args[0], "range() argument");
            b = want_int(st, args[1], "range() argument");
            if (nargs == 3) k = want_int(st, args[2], "range() argument");
        }
        if (k == 0) jx_type(st, "ValueError: range() arg 3 must not be zero");
        double cnt = k > 0 ? (b > a ? ceil(((double)b - (double)a) / (double)k) : 0)
                           : (a > b ? ceil(((double)a - (double)b) / (double)-k) : 0);
        if (cnt > 100000)
            jx_type(st, "OverflowError: Range too big. The sandbox blocks ranges larger than MAX_RANGE (100000).");
        jx_step(st, (uint64_t)cnt);
        jv l = jv_newlist(st, JV_LIST, (size_t)cnt);
        for (int64_t x = a; k > 0 ? x < b : x > b; x += k) l.u.l->v[l.u.l->n++] = jv_int(x);
        return l;
    }
    case G_NAMESPACE: case G_DICT: {
        jv d = jv_newdict(st, fn->id == G_NAMESPACE ? JV_NS : JV_DICT, nkw);
        if (nargs > 1) jx_type(st, "TypeError: %s expected at most 1 positional argument", fn->name);
        if (nargs == 1) {
            if (args[0].t == JV_DICT || args[0].t == JV_NS) {
                for (size_t i = 0; i < args[0].u.d->n; i++) jd_set(st, d.u.d, args[0].u.d->k[i], args[0].u.d->v[i]);
            } else {
                jv items = jx_iter_list(st, args[0]);
                for (size_t i = 0; i < items.u.l->n; i++) {
                    jv pr = jx_iter_list(st, items.u.l->v[i]);
                    if (pr.u.l->n != 2) jx_type(st, "ValueError: dictionary update sequence element has wrong length");
                    jd_set(st, d.u.d, pr.u.l->v[0], pr.u.l->v[1]);
                }
            }
        }
        for (size_t i = 0; i < nkw; i++) jd_set(st, d.u.d, jv_cstr(st, kwn[i]), kwv[i]);
        return d;
    }
    case G_RAISE: {
        jv m = nargs ? jv_to_str(st, args[0]) : jv_cstr(st, "");
        jx_fail(st, HR_ERR_FORMAT, "%s", m.u.s->p);
    }
    case G_STRFTIME: {
        if (nargs != 1) jx_type(st, "TypeError: strftime_now() takes exactly one argument");
        jstr *f = want_str(st, args[0], "format");
        if (f->len > 256) jx_type(st, "ValueError: strftime_now format too long");
        struct tm tm;
        if (st->clock) {
            st->clock(st->clock_ud, &tm);
        } else {
            time_t now = time(NULL);
            localtime_r(&now, &tm);
        }
        char out[1024];
        size_t k = f->len ? strftime(out, sizeof out, f->p, &tm) : 0;
        return jv_strn(st, out, k);
    }
    }
    jx_type(st, "TypeError: unknown builtin");
}
