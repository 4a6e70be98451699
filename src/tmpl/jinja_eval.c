/* jinja_eval.c - the tree-walking evaluator and the public render API. */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tmpl/jinja_impl.h"

static jv eval(jstate *st, jscope *sc, const jnode *n);
static void exec_body(jstate *st, jscope *sc, jnode *const *body, size_t n);

/* ---------------------------------------------------------------- scopes */

static jscope *scope_new(jstate *st, jscope *parent)
{
    jscope *s = jx_alloc(st, sizeof(jscope));
    memset(s, 0, sizeof *s);
    s->parent = parent;
    return s;
}

static void scope_set(jstate *st, jscope *s, const char *name, jv v)
{
    for (size_t i = 0; i < s->n; i++)
        if (!strcmp(s->names[i], name)) {
            s->vals[i] = v;
            return;
        }
    if (s->n == s->cap) {
        size_t nc = s->cap ? s->cap * 2 : 4;
        const char **nn = jx_alloc(st, nc * sizeof(char *));
        jv *nv = jx_alloc(st, nc * sizeof(jv));
        if (s->n) {
            memcpy(nn, s->names, s->n * sizeof(char *));
            memcpy(nv, s->vals, s->n * sizeof(jv));
        }
        s->names = nn;
        s->vals = nv;
        s->cap = nc;
    }
    s->names[s->n] = name;
    s->vals[s->n++] = v;
}

static jv lookup(jstate *st, jscope *sc, const char *name)
{
    for (jscope *s = sc; s; s = s->parent)
        for (size_t i = 0; i < s->n; i++)
            if (s->names[i][0] == name[0] && !strcmp(s->names[i], name))
                return s->vals[i];
    jv v;
    if (jd_getn(st->ctx, name, strlen(name), &v))
        return v;
    bool found = false;
    v = jb_global(st, name, &found);
    if (found)
        return v;
    return jv_undef(name);
}

/* ---------------------------------------------------------------- helpers */

static _Noreturn void undefined_error(jstate *st, jv v)
{
    if (v.u.uname && v.u.uname[0] == '!')
        jx_type(st, "SecurityError: access to attribute '%s' is unsafe", v.u.uname + 1);
    jx_type(st, "UndefinedError: '%s' is undefined", v.u.uname ? v.u.uname : "value");
}

static void enter(jstate *st)
{
    if (++st->depth > st->max_depth)
        jx_fail(st, HR_ERR_LIMIT, "template nesting exceeded the depth limit (%u)", st->max_depth);
}

jv jx_iter_list(jstate *st, jv v)
{
    switch (v.t) {
    case JV_LIST: case JV_TUPLE: return v;
    case JV_GEN: {
        if (v.u.l->consumed) return jv_newlist(st, JV_LIST, 0);
        v.u.l->consumed = true;
        jv l = v;
        l.t = JV_LIST;
        return l;
    }
    case JV_DICT: {
        jv l = jv_newlist(st, JV_LIST, v.u.d->n);
        for (size_t i = 0; i < v.u.d->n; i++) l.u.l->v[i] = v.u.d->k[i];
        l.u.l->n = v.u.d->n;
        return l;
    }
    case JV_STR: {
        jstr *s = v.u.s;
        jv l = jv_newlist(st, JV_LIST, (size_t)js_ncp(s));
        for (size_t i = 0; i < s->len;) {
            int32_t cp;
            size_t k = ju_decode(s->p + i, s->len - i, &cp);
            jl_push(st, l, s->taint ? jv_strn_untrusted(st, s->p + i, k) : jv_strn(st, s->p + i, k));
            i += k;
        }
        return l;
    }
    case JV_UNDEF: return jv_newlist(st, JV_LIST, 0);
    default:
        jx_type(st, "TypeError: '%s' object is not iterable", jv_typename(v));
    }
}

static void assign(jstate *st, jscope *sc, const jnode *t, jv v)
{
    if (t->kind == N_NAME) {
        scope_set(st, sc, t->name, v);
        return;
    }
    /* tuple unpacking */
    jv l = jx_iter_list(st, v);
    if (l.u.l->n != t->n)
        jx_type(st, "ValueError: %s values to unpack (expected %zu, got %zu)",
                l.u.l->n > t->n ? "too many" : "not enough", t->n, l.u.l->n);
    for (size_t i = 0; i < t->n; i++)
        scope_set(st, sc, t->list[i]->name, l.u.l->v[i]);
}

/* Python floor division / modulo on ints */
static int64_t ifloordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

static jv arith_impl(jstate *st, int op, jv a, jv b);

/* str + str keeps the untrusted ranges of both; any other result made from
 * an untrusted string is untrusted as a whole */
static jv arith(jstate *st, int op, jv a, jv b)
{
    if (st->mark && op == OP_ADD && a.t == JV_STR && b.t == JV_STR) {
        jsb sb;
        jsb_init(st, &sb, a.u.s->len + b.u.s->len + 1);
        jv_write_str(st, &sb, a);
        jv_write_str(st, &sb, b);
        return jsb_take(st, &sb);
    }
    jv r = arith_impl(st, op, a, b);
    if (!st->mark)
        return r;
    jv in[2] = {a, b};
    return jt_derive(st, r, in, 2, NULL, 0, NULL, 0);
}

static jv arith_impl(jstate *st, int op, jv a, jv b)
{
    if (a.t == JV_UNDEF) undefined_error(st, a);
    if (b.t == JV_UNDEF) undefined_error(st, b);
    static const char *const opname[] = {"+", "-", "*", "/", "//", "%", "**"};
    if (jv_is_num(a) && jv_is_num(b)) {
        bool fl = a.t == JV_FLOAT || b.t == JV_FLOAT;
        if (!fl) {
            int64_t x = a.t == JV_BOOL ? a.u.b : a.u.i, y = b.t == JV_BOOL ? b.u.b : b.u.i, r;
            switch (op) {
            case OP_ADD: if (__builtin_add_overflow(x, y, &r)) goto ovf; return jv_int(r);
            case OP_SUB: if (__builtin_sub_overflow(x, y, &r)) goto ovf; return jv_int(r);
            case OP_MUL: if (__builtin_mul_overflow(x, y, &r)) goto ovf; return jv_int(r);
            case OP_DIV:
                if (y == 0) jx_type(st, "ZeroDivisionError: division by zero");
                return jv_float((double)x / (double)y);
            case OP_FLOORDIV:
                if (y == 0) jx_type(st, "ZeroDivisionError: integer division or modulo by zero");
                if (x == INT64_MIN && y == -1) goto ovf;
                return jv_int(ifloordiv(x, y));
            case OP_MOD:
                if (y == 0) jx_type(st, "ZeroDivisionError: integer modulo by zero");
                if (y == -1) return jv_int(0);
                return jv_int(x - ifloordiv(x, y) * y);
            case OP_POW:
                if (y < 0) return jv_float(pow((double)x, (double)y));
                r = 1;
                for (int64_t i = 0; i < y; i++) {
                    if (__builtin_mul_overflow(r, x, &r)) goto ovf;
                    if (r == 0 || r == 1 || (r == -1 && i > 64)) {
                        if (r == -1) r = ((y - i - 1) % 2) ? 1 : -1;
                        break;
                    }
                }
                return jv_int(r);
            }
        }
        double x = jv_num(a), y = jv_num(b);
        switch (op) {
        case OP_ADD: return jv_float(x + y);
        case OP_SUB: return jv_float(x - y);
        case OP_MUL: return jv_float(x * y);
        case OP_DIV:
            if (y == 0) jx_type(st, "ZeroDivisionError: float division by zero");
            return jv_float(x / y);
        case OP_FLOORDIV:
            if (y == 0) jx_type(st, "ZeroDivisionError: float floor division by zero");
            return jv_float(floor(x / y));
        case OP_MOD: {
            if (y == 0) jx_type(st, "ZeroDivisionError: float modulo");
            double m = fmod(x, y);
            if (m != 0 && ((m < 0) != (y < 0))) m += y;
            return jv_float(m);
        }
        case OP_POW: return jv_float(pow(x, y));
        }
    }
    if (op == OP_ADD) {
        if (a.t == JV_STR && b.t == JV_STR) {
            size_t n = a.u.s->len + b.u.s->len;
            jstr *x = jx_alloc(st, sizeof(jstr) + n + 1);
            x->len = n;
            x->ncp = -1;
            x->taint = NULL;
            memcpy(x->p, a.u.s->p, a.u.s->len);
            memcpy(x->p + a.u.s->len, b.u.s->p, b.u.s->len);
            x->p[n] = 0;
            jv r = {.t = JV_STR};
            r.u.s = x;
            return r;
        }
        if ((a.t == JV_LIST || a.t == JV_TUPLE) && a.t == b.t) {
            jv r = jv_newlist(st, a.t, a.u.l->n + b.u.l->n);
            memcpy(r.u.l->v, a.u.l->v, a.u.l->n * sizeof(jv));
            memcpy(r.u.l->v + a.u.l->n, b.u.l->v, b.u.l->n * sizeof(jv));
            r.u.l->n = a.u.l->n + b.u.l->n;
            return r;
        }
        if (a.t == JV_STR && b.t != JV_STR)
            jx_type(st, "TypeError: can only concatenate str (not \"%s\") to str", jv_typename(b));
        if ((a.t == JV_LIST || a.t == JV_TUPLE) && b.t != a.t)
            jx_type(st, "TypeError: can only concatenate %s (not \"%s\") to %s", jv_typename(a), jv_typename(b),
                    jv_typename(a));
    }
    if (op == OP_MUL) {
        jv s = a, k = b;
        if (b.t == JV_STR || b.t == JV_LIST || b.t == JV_TUPLE) { s = b; k = a; }
        if ((s.t == JV_STR || s.t == JV_LIST || s.t == JV_TUPLE) && (k.t == JV_INT || k.t == JV_BOOL)) {
            int64_t cnt = k.t == JV_BOOL ? k.u.b : k.u.i;
            if (cnt < 0) cnt = 0;
            if (s.t == JV_STR) {
                size_t unit = s.u.s->len;
                if (unit && (uint64_t)cnt > st->max_output / unit)
                    jx_fail(st, HR_ERR_LIMIT, "string repetition exceeds the output limit");
                jsb b2;
                jsb_init(st, &b2, unit * (size_t)cnt + 1);
                for (int64_t i = 0; i < cnt; i++) jsb_add(st, &b2, s.u.s->p, unit);
                return jsb_take(st, &b2);
            }
            size_t unit = s.u.l->n;
            if (unit && (uint64_t)cnt > (st->max_iters - st->iters) / unit)
                jx_fail(st, HR_ERR_LIMIT, "list repetition exceeds the iteration limit");
            jx_step(st, unit * (uint64_t)cnt);
            jv r = jv_newlist(st, s.t, unit * (size_t)cnt);
            for (int64_t i = 0; i < cnt; i++) memcpy(r.u.l->v + (size_t)i * unit, s.u.l->v, unit * sizeof(jv));
            r.u.l->n = unit * (size_t)cnt;
            return r;
        }
    }
    if (op == OP_MOD && a.t == JV_STR)
        return jb_percent_format(st, a.u.s, b);
    jx_type(st, "TypeError: unsupported operand type(s) for %s: '%s' and '%s'", opname[op], jv_typename(a),
            jv_typename(b));
ovf:
    jx_type(st, "OverflowError: integer result out of the supported range");
}

static bool contains(jstate *st, jv item, jv container)
{
    switch (container.t) {
    case JV_STR:
        if (item.t != JV_STR)
            jx_type(st, "TypeError: 'in <string>' requires string as left operand, not %s", jv_typename(item));
        if (item.u.s->len == 0) return true;
        return memmem(container.u.s->p, container.u.s->len, item.u.s->p, item.u.s->len) != NULL;
    case JV_LIST: case JV_TUPLE:
        for (size_t i = 0; i < container.u.l->n; i++)
            if (jv_eq(item, container.u.l->v[i])) return true;
        return false;
    case JV_GEN: {
        jv l = jx_iter_list(st, container);
        for (size_t i = 0; i < l.u.l->n; i++)
            if (jv_eq(item, l.u.l->v[i])) return true;
        return false;
    }
    case JV_DICT: case JV_NS: {
        jv o;
        return jd_get(container.u.d, item, &o);
    }
    case JV_UNDEF: return false;
    default:
        jx_type(st, "TypeError: argument of type '%s' is not iterable", jv_typename(container));
    }
}

static bool compare(jstate *st, int op, jv a, jv b)
{
    switch (op) {
    case OP_EQ: return jv_eq(a, b);
    case OP_NE: return !jv_eq(a, b);
    case OP_LT: return jv_cmp(st, a, b, "<") < 0;
    case OP_LE: return jv_cmp(st, a, b, "<=") <= 0;
    case OP_GT: return jv_cmp(st, a, b, ">") > 0;
    case OP_GE: return jv_cmp(st, a, b, ">=") >= 0;
    case OP_IN: return contains(st, a, b);
    case OP_NOTIN: return !contains(st, a, b);
    }
    return false;
}

/* Python slice index normalisation */
static void slice_indices(int64_t len, jv *s, int64_t *start, int64_t *stop, int64_t *step, jstate *st)
{
    for (int i = 0; i < 3; i++)
        if (s[i].t != JV_NONE && s[i].t != JV_INT && s[i].t != JV_BOOL)
            jx_type(st, "TypeError: slice indices must be integers or None");
    *step = s[2].t == JV_NONE ? 1 : (s[2].t == JV_BOOL ? s[2].u.b : s[2].u.i);
    if (*step == 0) jx_type(st, "ValueError: slice step cannot be zero");
    int64_t lo, hi;
    if (*step > 0) { lo = 0; hi = len; } else { lo = -1; hi = len - 1; }
    for (int i = 0; i < 2; i++) {
        int64_t *o = i == 0 ? start : stop;
        if (s[i].t == JV_NONE) {
            *o = (i == 0) == (*step > 0) ? lo : hi;
            if (i == 0 && *step < 0) *o = hi;
            if (i == 1 && *step < 0) *o = lo;
            continue;
        }
        int64_t v = s[i].t == JV_BOOL ? s[i].u.b : s[i].u.i;
        if (v < 0) {
            v += len;
            if (v < lo) v = lo;
        } else if (v > hi) {
            v = hi;
        }
        *o = v;
    }
}

static jv do_slice(jstate *st, jv obj, jv *s)
{
    if (obj.t == JV_UNDEF) undefined_error(st, obj);
    if (obj.t == JV_LIST || obj.t == JV_TUPLE) {
        int64_t a, b, k;
        slice_indices((int64_t)obj.u.l->n, s, &a, &b, &k, st);
        jv r = jv_newlist(st, obj.t, 0);
        for (int64_t i = a; k > 0 ? i < b : i > b; i += k) jl_push(st, r, obj.u.l->v[i]);
        return r;
    }
    if (obj.t == JV_STR) {
        jstr *x = obj.u.s;
        bool ascii = js_ncp(x) == (int64_t)x->len;
        int64_t n = js_ncp(x), a, b, k;
        slice_indices(n, s, &a, &b, &k, st);
        size_t *off = NULL;
        if (!ascii) {
            off = jx_alloc(st, ((size_t)n + 1) * sizeof(size_t));
            size_t ci = 0;
            for (size_t i = 0; i < x->len; i++)
                if (((unsigned char)x->p[i] & 0xC0) != 0x80) off[ci++] = i;
            off[n] = x->len;
        }
        jsb b2;
        jsb_init(st, &b2, 16);
        for (int64_t i = a; k > 0 ? i < b : i > b; i += k) {
            if (ascii) jsb_addc(st, &b2, x->p[i]);
            else jsb_add(st, &b2, x->p + off[i], off[i + 1] - off[i]);
        }
        return jsb_take(st, &b2);
    }
    jx_type(st, "TypeError: '%s' object is not subscriptable", jv_typename(obj));
}

jv jx_getitem(jstate *st, jv obj, jv key)
{
    if (obj.t == JV_UNDEF) undefined_error(st, obj);
    switch (obj.t) {
    case JV_LIST: case JV_TUPLE: case JV_STR:
        if (key.t == JV_INT || key.t == JV_BOOL) {
            int64_t i = key.t == JV_BOOL ? key.u.b : key.u.i;
            if (obj.t == JV_STR) {
                jstr *x = obj.u.s;
                int64_t n = js_ncp(x);
                if (i < 0) i += n;
                if (i < 0 || i >= n) return jv_undef(NULL);
                if (n == (int64_t)x->len) return jv_strn(st, x->p + i, 1);
                size_t pos = 0;
                for (int64_t c = 0; c < i; c++) {
                    int32_t cp;
                    pos += ju_decode(x->p + pos, x->len - pos, &cp);
                }
                int32_t cp;
                return jv_strn(st, x->p + pos, ju_decode(x->p + pos, x->len - pos, &cp));
            }
            int64_t n = (int64_t)obj.u.l->n;
            if (i < 0) i += n;
            if (i < 0 || i >= n) return jv_undef(NULL);
            return obj.u.l->v[i];
        }
        break;
    case JV_DICT: case JV_NS: {
        jv o;
        if (jd_get(obj.u.d, key, &o)) return o;
        if (obj.t == JV_NS) return jv_undef(key.t == JV_STR ? key.u.s->p : NULL);
        break;
    }
    default:
        break;
    }
    if (key.t == JV_STR) {
        jv r = jb_getattr(st, obj, key.u.s->p, key.u.s->len);
        if (r.t == JV_UNDEF && !r.u.uname) r.u.uname = key.u.s->p;
        return r;
    }
    return jv_undef(NULL);
}

/* ---------------------------------------------------------------- calls */

typedef struct {
    jv *pos;
    size_t npos;
    const char **kwn;
    jv *kwv;
    size_t nkw;
} jargs;

static void eval_args(jstate *st, jscope *sc, const jnode *n, jargs *a)
{
    size_t extra = 0;
    jv star = jv_none(), dstar = jv_none();
    if (n->d) {
        star = jx_iter_list(st, eval(st, sc, n->d));
        extra = star.u.l->n;
    }
    a->npos = n->n + extra;
    a->pos = a->npos ? jx_alloc(st, a->npos * sizeof(jv)) : NULL;
    for (size_t i = 0; i < n->n; i++) a->pos[i] = eval(st, sc, n->list[i]);
    for (size_t i = 0; i < extra; i++) a->pos[n->n + i] = star.u.l->v[i];
    size_t dn = 0;
    if (n->e) {
        dstar = eval(st, sc, n->e);
        if (dstar.t != JV_DICT) jx_type(st, "TypeError: argument after ** must be a mapping, not %s", jv_typename(dstar));
        dn = dstar.u.d->n;
    }
    a->nkw = n->n2 + dn;
    a->kwn = a->nkw ? jx_alloc(st, a->nkw * sizeof(char *)) : NULL;
    a->kwv = a->nkw ? jx_alloc(st, a->nkw * sizeof(jv)) : NULL;
    for (size_t i = 0; i < n->n2; i++) {
        a->kwn[i] = n->names[i];
        a->kwv[i] = eval(st, sc, n->list2[i]);
    }
    for (size_t i = 0; i < dn; i++) {
        jv k = dstar.u.d->k[i];
        if (k.t != JV_STR) jx_type(st, "TypeError: keywords must be strings");
        a->kwn[n->n2 + i] = k.u.s->p;
        a->kwv[n->n2 + i] = dstar.u.d->v[i];
    }
}

static jv call_macro(jstate *st, jfunc *fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    const jnode *m = fn->node;
    if (++st->macro_depth > st->max_macro_depth)
        jx_fail(st, HR_ERR_LIMIT, "macro calls nested deeper than the limit (%u)", st->max_macro_depth);
    int saved_line = st->line;
    jscope *sc = scope_new(st, fn->closure);
    size_t np = m->nnames;
    bool catch_var = m->id & 1, catch_kw = m->id & 2;
    const char *mname = fn->name ? fn->name : "caller";
    if (nargs > np && !catch_var)
        jx_type(st, "TypeError: macro '%s' takes not more than %zu argument(s)", mname, np);
    bool *set = np ? jx_alloc(st, np * sizeof(bool)) : NULL;
    for (size_t i = 0; i < np; i++) set[i] = false;
    for (size_t i = 0; i < nargs && i < np; i++) {
        scope_set(st, sc, m->names[i], args[i]);
        set[i] = true;
    }
    jv kwd = jv_newdict(st, JV_DICT, 0);
    jv caller = fn->caller;
    for (size_t k = 0; k < nkw; k++) {
        size_t i;
        for (i = 0; i < np; i++)
            if (!strcmp(m->names[i], kwn[k])) break;
        if (i < np) {
            if (set[i]) jx_type(st, "TypeError: macro '%s' got multiple values for argument '%s'", mname, kwn[k]);
            scope_set(st, sc, m->names[i], kwv[k]);
            set[i] = true;
        } else if (!strcmp(kwn[k], "caller")) {
            caller = kwv[k];
        } else {
            if (!catch_kw) jx_type(st, "TypeError: macro '%s' takes no keyword argument '%s'", mname, kwn[k]);
            jd_set(st, kwd.u.d, jv_cstr(st, kwn[k]), kwv[k]);
        }
    }
    for (size_t i = 0; i < np; i++) {
        if (set[i]) continue;
        if (m->list[i]) scope_set(st, sc, m->names[i], eval(st, sc, m->list[i]));
        else scope_set(st, sc, m->names[i], jv_undef(m->names[i]));
    }
    jv va = jv_newlist(st, JV_TUPLE, 0);
    for (size_t i = np; i < nargs; i++) jl_push(st, va, args[i]);
    scope_set(st, sc, "varargs", va);
    scope_set(st, sc, "kwargs", kwd);
    if (caller.t != JV_UNDEF) scope_set(st, sc, "caller", caller);
    jsb *saved = st->out, buf;
    jsb_init(st, &buf, 256);
    st->out = &buf;
    int saved_ctl = st->loopctl;
    exec_body(st, sc, m->body, m->nbody);
    st->loopctl = saved_ctl;
    st->out = saved;
    st->macro_depth--;
    st->line = saved_line;
    return jsb_take(st, &buf);
}

jv jx_call(jstate *st, jv callee, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw)
{
    if (callee.t == JV_UNDEF) undefined_error(st, callee);
    if (callee.t != JV_FUNC)
        jx_type(st, "TypeError: '%s' object is not callable", jv_typename(callee));
    jfunc *fn = callee.u.fn;
    if (fn->kind == JF_MACRO) return call_macro(st, fn, args, nargs, kwn, kwv, nkw);
    return jb_call_builtin(st, fn, args, nargs, kwn, kwv, nkw);
}

/* A filter chain: f->a is the operand expression, another filter of the
 * chain, or NULL for a filter block / block set, whose operand is `base`. */
/* Applied in a loop, innermost first: a chain is as long as the parser allows
 * (JP_MAX_TREE), and one C frame per filter is not needed. */
static jv apply_filter(jstate *st, jscope *sc, const jnode *f, jv base)
{
    enter(st);
    size_t k = 0;
    for (const jnode *g = f; g && g->kind == N_FILTER; g = g->a)
        k++;
    const jnode **chain = jx_alloc(st, k * sizeof *chain);
    k = 0;
    const jnode *g = f;
    for (; g && g->kind == N_FILTER; g = g->a)
        chain[k++] = g;
    jv v = g ? eval(st, sc, g) : base;
    while (k--) {
        jargs a;
        eval_args(st, sc, chain[k], &a);
        st->line = chain[k]->line;
        v = jb_filter(st, chain[k]->id, v, a.pos, a.npos, a.kwn, a.kwv, a.nkw);
    }
    st->depth--;
    return v;
}

/* ---------------------------------------------------------------- eval */

static jv eval(jstate *st, jscope *sc, const jnode *n)
{
    enter(st);
    jv r;
    switch (n->kind) {
    case N_CONST:
        r = n->val;
        break;
    case N_NAME:
        r = lookup(st, sc, n->name);
        break;
    case N_LIST: case N_TUPLE: {
        r = jv_newlist(st, n->kind == N_LIST ? JV_LIST : JV_TUPLE, n->n);
        for (size_t i = 0; i < n->n; i++) r.u.l->v[i] = eval(st, sc, n->list[i]);
        r.u.l->n = n->n;
        break;
    }
    case N_DICT: {
        r = jv_newdict(st, JV_DICT, n->n / 2);
        for (size_t i = 0; i + 1 < n->n; i += 2) {
            jv k = eval(st, sc, n->list[i]);
            if (k.t == JV_LIST || k.t == JV_DICT || k.t == JV_NS)
                jx_type(st, "TypeError: unhashable type: '%s'", jv_typename(k));
            jd_set(st, r.u.d, k, eval(st, sc, n->list[i + 1]));
        }
        break;
    }
    case N_ATTR: {
        jv o = eval(st, sc, n->a);
        st->line = n->line;
        if (o.t == JV_UNDEF) undefined_error(st, o);
        r = jb_getattr(st, o, n->name, strlen(n->name));
        if (r.t == JV_UNDEF && !r.u.uname) r.u.uname = n->name;
        break;
    }
    case N_ITEM: {
        jv o = eval(st, sc, n->a);
        if (n->b->kind == N_SLICE) {
            jv s[3];
            s[0] = n->b->a ? eval(st, sc, n->b->a) : jv_none();
            s[1] = n->b->b ? eval(st, sc, n->b->b) : jv_none();
            s[2] = n->b->c ? eval(st, sc, n->b->c) : jv_none();
            st->line = n->line;
            r = do_slice(st, o, s);
            if (st->mark) r = jt_derive(st, r, &o, 1, s, 3, NULL, 0);
        } else {
            jv k = eval(st, sc, n->b);
            st->line = n->line;
            r = jx_getitem(st, o, k);
            if (st->mark) r = jt_derive(st, r, &o, 1, &k, 1, NULL, 0);
        }
        break;
    }
    case N_CALL: {
        jv c = eval(st, sc, n->a);
        jargs a;
        eval_args(st, sc, n, &a);
        st->line = n->line;
        r = jx_call(st, c, a.pos, a.npos, a.kwn, a.kwv, a.nkw);
        break;
    }
    case N_FILTER:
        r = apply_filter(st, sc, n, jv_undef(NULL));
        break;
    case N_TEST: {
        jv v = eval(st, sc, n->a);
        jargs a;
        eval_args(st, sc, n, &a);
        st->line = n->line;
        bool b = jb_test(st, n->id, v, a.pos, a.npos);
        r = jv_bool(n->neg ? !b : b);
        break;
    }
    case N_BIN: {
        jv a = eval(st, sc, n->a), b = eval(st, sc, n->b);
        st->line = n->line;
        r = arith(st, n->op, a, b);
        break;
    }
    case N_UNARY: {
        jv a = eval(st, sc, n->a);
        st->line = n->line;
        if (a.t == JV_UNDEF) undefined_error(st, a);
        if (a.t == JV_BOOL) a = jv_int(a.u.b);
        if (a.t == JV_INT) {
            if (n->op == OP_NEG && a.u.i == INT64_MIN) jx_type(st, "OverflowError: integer out of range");
            r = n->op == OP_NEG ? jv_int(-a.u.i) : a;
        } else if (a.t == JV_FLOAT) {
            r = n->op == OP_NEG ? jv_float(-a.u.f) : a;
        } else {
            jx_type(st, "TypeError: bad operand type for unary %s: '%s'", n->op == OP_NEG ? "-" : "+",
                    jv_typename(a));
        }
        break;
    }
    case N_CMP: {
        jv left = eval(st, sc, n->a);
        r = jv_bool(true);
        for (size_t i = 0; i < n->n2; i++) {
            jv right = eval(st, sc, n->list2[i]);
            st->line = n->line;
            if (!compare(st, n->ops[i], left, right)) {
                r = jv_bool(false);
                break;
            }
            left = right;
        }
        break;
    }
    case N_AND: {
        jv a = eval(st, sc, n->a);
        r = jv_truthy(a) ? eval(st, sc, n->b) : a;
        break;
    }
    case N_OR: {
        jv a = eval(st, sc, n->a);
        r = jv_truthy(a) ? a : eval(st, sc, n->b);
        break;
    }
    case N_NOT:
        r = jv_bool(!jv_truthy(eval(st, sc, n->a)));
        break;
    case N_COND:
        if (jv_truthy(eval(st, sc, n->a))) r = eval(st, sc, n->b);
        else r = n->c ? eval(st, sc, n->c) : jv_undef(NULL);
        break;
    case N_CONCAT: {
        jsb b;
        jsb_init(st, &b, 64);
        for (size_t i = 0; i < n->n; i++) jv_write_str(st, &b, eval(st, sc, n->list[i]));
        r = jsb_take(st, &b);
        break;
    }
    default:
        jx_fail(st, HR_ERR_FORMAT, "internal error: bad expression node %d", n->kind);
    }
    st->depth--;
    return r;
}

/* ---------------------------------------------------------------- statements */

static jv capture(jstate *st, jscope *sc, jnode *const *body, size_t nbody)
{
    jsb *saved = st->out, buf;
    jsb_init(st, &buf, 128);
    st->out = &buf;
    exec_body(st, sc, body, nbody);
    st->out = saved;
    return jsb_take(st, &buf);
}

/* Each iteration runs in a fresh scope over the enclosing one: as in jinja2,
 * names set in a loop body neither leak out nor carry over to the next
 * iteration (a read before the set sees the enclosing value). */
static void exec_for(jstate *st, jscope *sc, const jnode *n)
{
    jv it = eval(st, sc, n->b);
    st->line = n->line;
    jv items = jx_iter_list(st, it);
    if (n->c) {
        jscope *fs = scope_new(st, sc);
        jv filtered = jv_newlist(st, JV_LIST, 0);
        for (size_t i = 0; i < items.u.l->n; i++) {
            jx_step(st, 1);
            assign(st, fs, n->a, items.u.l->v[i]);
            if (jv_truthy(eval(st, fs, n->c))) jl_push(st, filtered, items.u.l->v[i]);
        }
        items = filtered;
    }
    jloop *lp = jx_alloc(st, sizeof(jloop));
    lp->items = items.u.l->v;
    lp->n = (int64_t)items.u.l->n;
    jv lv = {.t = JV_LOOP};
    lv.u.loop = lp;
    for (int64_t i = 0; i < lp->n; i++) {
        jx_step(st, 1);
        lp->i = i;
        jscope *ls = scope_new(st, sc);
        assign(st, ls, n->a, lp->items[i]);
        scope_set(st, ls, "loop", lv);
        exec_body(st, ls, n->body, n->nbody);
        if (st->loopctl == 1) {
            st->loopctl = 0;
            break;
        }
        st->loopctl = 0;
    }
    if (lp->n == 0 && n->nels) exec_body(st, scope_new(st, sc), n->els, n->nels);
}

static void exec_stmt(jstate *st, jscope *sc, const jnode *n)
{
    st->line = n->line;
    switch (n->kind) {
    case N_TEXT:
        jsb_add(st, st->out, n->val.u.s->p, n->val.u.s->len);
        return;
    case N_OUT: {
        jv v = eval(st, sc, n->a);
        jv_write_str(st, st->out, v);
        return;
    }
    case N_IF:
        if (jv_truthy(eval(st, sc, n->a))) exec_body(st, sc, n->body, n->nbody);
        else exec_body(st, sc, n->els, n->nels);
        return;
    case N_FOR:
        exec_for(st, sc, n);
        return;
    case N_SET: {
        jv v = eval(st, sc, n->b);
        st->line = n->line;
        if (n->a->kind == N_NSREF) {
            jv ns = lookup(st, sc, n->a->name);
            if (ns.t != JV_NS) jx_type(st, "TemplateRuntimeError: cannot assign attribute on non-namespace object");
            jd_set(st, ns.u.d, jv_cstr(st, n->a->attr), v);
        } else {
            assign(st, sc, n->a, v);
        }
        return;
    }
    case N_SETBLOCK: {
        jv v = capture(st, sc, n->body, n->nbody);
        if (n->c) v = apply_filter(st, sc, n->c, v);
        if (n->a->kind == N_NSREF) {
            jv ns = lookup(st, sc, n->a->name);
            if (ns.t != JV_NS) jx_type(st, "TemplateRuntimeError: cannot assign attribute on non-namespace object");
            jd_set(st, ns.u.d, jv_cstr(st, n->a->attr), v);
        } else {
            assign(st, sc, n->a, v);
        }
        return;
    }
    case N_MACRO: {
        jfunc *fn = jx_alloc(st, sizeof(jfunc));
        memset(fn, 0, sizeof *fn);
        fn->kind = JF_MACRO;
        fn->node = n;
        fn->closure = sc;
        fn->caller = jv_undef(NULL);
        fn->name = n->name;
        jv v = {.t = JV_FUNC};
        v.u.fn = fn;
        scope_set(st, sc, n->name, v);
        return;
    }
    case N_CALLBLOCK: {
        jfunc *cf = jx_alloc(st, sizeof(jfunc));
        memset(cf, 0, sizeof *cf);
        cf->kind = JF_MACRO;
        cf->node = n;
        cf->closure = sc;
        cf->caller = jv_undef(NULL);
        cf->name = "caller";
        jv cv = {.t = JV_FUNC};
        cv.u.fn = cf;
        const jnode *call = n->a;
        jv callee = eval(st, sc, call->a);
        jargs a;
        eval_args(st, sc, call, &a);
        st->line = n->line;
        jv r;
        if (callee.t == JV_FUNC && callee.u.fn->kind == JF_MACRO) {
            jfunc copy = *callee.u.fn;
            copy.caller = cv;
            r = call_macro(st, &copy, a.pos, a.npos, a.kwn, a.kwv, a.nkw);
        } else {
            r = jx_call(st, callee, a.pos, a.npos, a.kwn, a.kwv, a.nkw);
        }
        jv_write_str(st, st->out, r);
        return;
    }
    case N_FILTERBLOCK: {
        jscope *fs = scope_new(st, sc);
        jv v = capture(st, fs, n->body, n->nbody);
        v = apply_filter(st, fs, n->c, v);
        jv_write_str(st, st->out, v);
        return;
    }
    case N_BREAK:
        st->loopctl = 1;
        return;
    case N_CONTINUE:
        st->loopctl = 2;
        return;
    case N_BODY:
        exec_body(st, sc, n->body, n->nbody);
        return;
    case N_WITH: {
        jscope *ws = scope_new(st, sc);
        for (size_t i = 0; i < n->n; i++) scope_set(st, ws, n->names[i], eval(st, sc, n->list[i]));
        exec_body(st, ws, n->body, n->nbody);
        return;
    }
    default:
        jx_fail(st, HR_ERR_FORMAT, "internal error: bad statement node %d", n->kind);
    }
}

static void exec_body(jstate *st, jscope *sc, jnode *const *body, size_t n)
{
    enter(st);
    for (size_t i = 0; i < n && !st->loopctl; i++) exec_stmt(st, sc, body[i]);
    st->depth--;
}

/* ---------------------------------------------------------------- API */

void hr_tmpl_fixed_clock(void *ud, struct tm *out) { *out = *(const struct tm *)ud; }

hr_status hr_tmpl_parse(const char *src, size_t len, hr_tmpl **out, hr_err *err)
{
    *out = NULL;
    if (!src && len)
        return hr_err_set(err, HR_ERR_INVALID, "no template text");
    if (len > 16u * 1024 * 1024)
        return hr_err_set(err, HR_ERR_LIMIT, "template larger than 16 MiB");
    hr_tmpl *t = calloc(1, sizeof *t);
    if (!t)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    t->arena.limit = 64u * 1024 * 1024 + len * 16;
    hr_status s = jp_parse(t, src ? src : "", len, err);
    if (s != HR_OK) {
        hr_tmpl_free(t);
        return s;
    }
    *out = t;
    return HR_OK;
}

void hr_tmpl_free(hr_tmpl *t)
{
    if (!t)
        return;
    ja_free(&t->arena);
    free(t);
}

static hr_status render(const hr_tmpl *t, const json_t *ctx, const char *ctx_text, size_t ctx_len,
                        const hr_tmpl_opts *opts, const char *const *trusted, hr_span **spans, size_t *n_spans,
                        char **out, size_t *out_len, hr_err *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    if (spans)
        *spans = NULL;
    if (n_spans)
        *n_spans = 0;
    if (!t)
        return hr_err_set(err, HR_ERR_INVALID, "no template");
    if (ctx && !json_is_object(ctx))
        return hr_err_set(err, HR_ERR_INVALID, "template context must be a JSON object");
    hr_tmpl_opts o = {0};
    if (opts)
        o = *opts;
    jstate *st = calloc(1, sizeof *st);
    if (!st)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    hr_err local;
    st->err = err ? err : &local;
    st->arena.limit = o.max_memory ? o.max_memory : 256u * 1024 * 1024;
    st->max_output = o.max_output ? o.max_output : 4u * 1024 * 1024;
    st->max_iters = o.max_iterations ? o.max_iterations : 1000000;
    st->max_depth = o.max_depth ? o.max_depth : 500;
    st->max_macro_depth = o.max_macro_depth ? o.max_macro_depth : 100;
    st->clock = o.clock;
    st->clock_ud = o.clock_ud;
    st->mark = spans != NULL;
    if (setjmp(st->jb)) {
        hr_status s = st->st;
        ja_free(&st->arena);
        free(st);
        return s;
    }
    jv c;
    if (ctx_text) {
        c = jv_parse_json(st, ctx_text, ctx_len);
        if (c.t != JV_DICT)
            jx_fail(st, HR_ERR_INVALID, "template context must be a JSON object");
    } else {
        c = ctx ? jv_from_json(st, ctx) : jv_newdict(st, JV_DICT, 0);
    }
    for (size_t i = 0; st->mark && trusted && trusted[i]; i++) {
        jv tv;
        if (jd_getn(c.u.d, trusted[i], strlen(trusted[i]), &tv) && tv.t == JV_STR)
            jd_set(st, c.u.d, jv_cstr(st, trusted[i]), jv_strn(st, tv.u.s->p, tv.u.s->len));
    }
    st->ctx = c.u.d;
    jsb buf;
    jsb_init(st, &buf, 4096);
    st->out = &buf;
    jscope *root = scope_new(st, NULL);
    exec_body(st, root, t->body, t->nbody);
    char *res = malloc(buf.n + 1);
    hr_span *sp = NULL;
    if (res && spans && buf.nsp) {
        sp = malloc(buf.nsp * sizeof *sp);
        if (sp) {
            for (size_t i = 0; i < buf.nsp; i++) {
                sp[i].off = buf.sp[i].off;
                sp[i].len = buf.sp[i].len;
            }
            *spans = sp;
            *n_spans = buf.nsp;
        }
    }
    if (!res || (spans && buf.nsp && !sp)) {
        free(res);
        ja_free(&st->arena);
        free(st);
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    }
    memcpy(res, buf.p, buf.n);
    res[buf.n] = 0;
    *out = res;
    if (out_len)
        *out_len = buf.n;
    ja_free(&st->arena);
    free(st);
    return HR_OK;
}

hr_status hr_tmpl_render(const hr_tmpl *t, const json_t *ctx, const hr_tmpl_opts *opts, char **out,
                         size_t *out_len, hr_err *err)
{
    return render(t, ctx, NULL, 0, opts, NULL, NULL, NULL, out, out_len, err);
}

hr_status hr_tmpl_render_marked(const hr_tmpl *t, const json_t *ctx, const hr_tmpl_opts *opts,
                                const char *const *trusted, char **out, size_t *out_len, hr_span **spans,
                                size_t *n_spans, hr_err *err)
{
    if (!spans || !n_spans) {
        *out = NULL;
        return hr_err_set(err, HR_ERR_INVALID, "hr_tmpl_render_marked: no place for the spans");
    }
    return render(t, ctx, NULL, 0, opts, trusted, spans, n_spans, out, out_len, err);
}

hr_status hr_tmpl_render_json(const hr_tmpl *t, const char *ctx_json, size_t len, const hr_tmpl_opts *opts,
                              char **out, size_t *out_len, hr_err *err)
{
    if (!ctx_json)
        return render(t, NULL, NULL, 0, opts, NULL, NULL, NULL, out, out_len, err);
    return render(t, NULL, ctx_json, len, opts, NULL, NULL, NULL, out, out_len, err);
}
