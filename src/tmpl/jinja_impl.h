/* jinja_impl.h - internals of the Jinja interpreter (not a public API).
 *
 * Memory: everything a parse or a render allocates comes from an arena
 * (jarena) with a byte limit and is freed at once at the end, so values need
 * no reference counting and an error can unwind with longjmp. */
#ifndef HR_TMPL_JINJA_IMPL_H
#define HR_TMPL_JINJA_IMPL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "base/status.h"
#include "tmpl/jinja.h"

/* ---- arena ---- */
typedef struct jchunk jchunk;
typedef struct {
    jchunk *head;
    size_t total; /* bytes obtained from malloc */
    size_t limit;
} jarena;

void *ja_alloc(jarena *a, size_t n); /* NULL when over the limit or out of memory */
bool ja_full(const jarena *a, size_t n); /* after a NULL from ja_alloc: true if it was the limit */
void ja_free(jarena *a);

/* ---- values ---- */
typedef enum {
    JV_UNDEF, JV_NONE, JV_BOOL, JV_INT, JV_FLOAT, JV_STR,
    JV_LIST, JV_TUPLE, JV_DICT, JV_NS, JV_GEN, JV_FUNC, JV_LOOP,
} jv_type;

typedef struct jstr jstr;
typedef struct jlist jlist;
typedef struct jdict jdict;
typedef struct jfunc jfunc;
typedef struct jloop jloop;

typedef struct {
    uint8_t t;
    union {
        bool b;
        int64_t i;
        double f;
        jstr *s;
        jlist *l; /* LIST, TUPLE, GEN */
        jdict *d; /* DICT, NS */
        jfunc *fn;
        jloop *loop;
        const char *uname; /* UNDEF: the missing name (may be NULL) */
    } u;
} jv;

/* Untrusted byte ranges of a string (sorted, disjoint, not adjacent). */
typedef struct {
    size_t off, len;
} jspan;
typedef struct {
    size_t n;
    jspan r[];
} jspans;

struct jstr {
    size_t len;
    int64_t ncp;          /* code points, -1 if not yet known */
    const jspans *taint;  /* bytes from untrusted context strings; NULL: none */
    char p[];             /* NUL-terminated */
};

struct jlist {
    size_t n, cap;
    jv *v;
    bool consumed; /* GEN: iterated once already */
};

struct jdict {
    size_t n, cap;
    jv *k;
    jv *v;
};

typedef struct jnode jnode;
typedef struct jscope jscope;

enum { JF_BUILTIN, JF_METHOD, JF_MACRO, JF_CYCLE };

struct jfunc {
    int kind;
    int id;            /* BUILTIN/METHOD: which */
    jv self;           /* METHOD: the receiver; CYCLE: the loop */
    const jnode *node; /* MACRO: the definition (or the call block) */
    jscope *closure;   /* MACRO: scope it was defined in */
    jv caller;         /* MACRO: `caller` for a call block, else UNDEF */
    const char *name;
};

struct jloop {
    const jv *items;
    int64_t n, i;
};

/* ---- AST ---- */
enum {
    /* statements */
    N_TEXT, N_OUT, N_IF, N_FOR, N_SET, N_SETBLOCK, N_MACRO, N_CALLBLOCK, N_FILTERBLOCK,
    N_BREAK, N_CONTINUE, N_BODY, N_WITH,
    /* expressions */
    N_CONST, N_NAME, N_LIST, N_TUPLE, N_DICT, N_ATTR, N_ITEM, N_SLICE, N_CALL, N_FILTER,
    N_TEST, N_BIN, N_UNARY, N_CMP, N_AND, N_OR, N_NOT, N_COND, N_CONCAT, N_NSREF,
};

enum { OP_ADD, OP_SUB, OP_MUL, OP_DIV, OP_FLOORDIV, OP_MOD, OP_POW,
       OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE, OP_IN, OP_NOTIN, OP_NEG, OP_POS };

/* One node type for everything; the fields used depend on kind:
 *  TEXT: val(str)          OUT: a             IF: a cond, body, els
 *  FOR: a target, b iter, c filter, body, els  SET: a target, b value
 *  SETBLOCK: a target, c filter chain (N_FILTER with a NULL base), body
 *  MACRO: name, params(names,nparams) defaults(list/n: may hold NULL), body
 *  CALLBLOCK: a the call, names/nparams + list/n caller params+defaults, body
 *  FILTERBLOCK: c filter chain, body       BODY: body (generation, raw)
 *  WITH: names/list/n assignments, body
 *  CONST: val   NAME: name   LIST/TUPLE: list/n   DICT: list/n (k0,v0,k1,v1..)
 *  ATTR: a obj, name        ITEM: a obj, b index   SLICE: a,b,c (may be NULL)
 *  CALL: a callee, list/n positional, names/kw list2/n2, d *args, e **kwargs
 *  FILTER/TEST: a operand, id, name, args as CALL, neg (TEST: is not)
 *  BIN/UNARY: op, a, b     CMP: a first, list2/n2 operands, ops
 *  AND/OR: a, b   NOT: a   COND: a cond, b then, c else (may be NULL)
 *  CONCAT: list/n          NSREF (set target ns.attr): name (ns var), attr */
struct jnode {
    uint16_t kind;
    int16_t op;
    int id;
    int line;
    bool neg;
    jnode *a, *b, *c, *d, *e;
    jnode **list;
    size_t n;
    jnode **list2;
    size_t n2;
    const char **names; /* keyword names / parameter names */
    size_t nnames;
    int *ops;
    jnode **body;
    size_t nbody;
    jnode **els;
    size_t nels;
    const char *name;
    const char *attr;
    jv val;
};

struct hr_tmpl {
    jarena arena;
    jnode **body;
    size_t nbody;
};

/* ---- string builder (arena-backed, bounded) ---- */
typedef struct jstate jstate;
typedef struct {
    char *p;
    size_t n, cap;
    jspan *sp; /* untrusted ranges of p (marked renders only) */
    size_t nsp, capsp;
} jsb;

/* ---- render state ---- */
struct jscope {
    jscope *parent;
    size_t n, cap;
    const char **names;
    jv *vals;
};

struct jstate {
    jarena arena;
    jmp_buf jb;
    hr_err *err;
    hr_status st;
    const jdict *ctx;
    jsb *out;
    size_t max_output;
    uint64_t iters, max_iters;
    unsigned depth, max_depth, macro_depth, max_macro_depth;
    hr_tmpl_clock_fn clock;
    void *clock_ud;
    int line;
    int loopctl; /* 0, 1 break, 2 continue */
    bool mark;   /* track untrusted text (hr_tmpl_render_marked) */
};

/* ---- errors (never return) ---- */
_Noreturn void jx_fail(jstate *st, hr_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
_Noreturn void jx_type(jstate *st, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jx_step(jstate *st, uint64_t n); /* count builtin work against max_iterations */

/* ---- value helpers (jinja_value.c) ---- */
void *jx_alloc(jstate *st, size_t n);
jv jv_undef(const char *name);
jv jv_none(void);
jv jv_bool(bool b);
jv jv_int(int64_t i);
jv jv_float(double f);
jv jv_strn(jstate *st, const char *s, size_t n);
jv jv_cstr(jstate *st, const char *s);
jv jv_newlist(jstate *st, uint8_t type, size_t cap);
void jl_push(jstate *st, jv list, jv item);
jv jv_newdict(jstate *st, uint8_t type, size_t cap);
void jd_set(jstate *st, jdict *d, jv key, jv val);
bool jd_get(const jdict *d, jv key, jv *out);
bool jd_getn(const jdict *d, const char *key, size_t klen, jv *out);
jv jv_from_json(jstate *st, const json_t *j);
jv jv_parse_json(jstate *st, const char *s, size_t n); /* JSON text (NUL in keys allowed) */

const char *jv_typename(jv v);
bool jv_truthy(jv v);
bool jv_is_num(jv v);       /* BOOL, INT, FLOAT */
double jv_num(jv v);
bool jv_eq(jv a, jv b);
int jv_cmp(jstate *st, jv a, jv b, const char *op); /* <0,0,>0; TypeError if unordered */
int64_t js_ncp(jstr *s);    /* code points */

void jsb_init(jstate *st, jsb *b, size_t cap);
void jsb_add(jstate *st, jsb *b, const char *s, size_t n);
void jsb_addc(jstate *st, jsb *b, char c);
void jsb_addf(jstate *st, jsb *b, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
jv jsb_take(jstate *st, jsb *b);

void jv_write_str(jstate *st, jsb *b, jv v);  /* Python str() */
void jv_write_repr(jstate *st, jsb *b, jv v); /* Python repr() */
jv jv_to_str(jstate *st, jv v);

/* ---- untrusted text (marked renders; no-ops otherwise) ----
 * Strings of the context are untrusted (but for the names the caller
 * trusts); the template's own text is not. Concatenation and output keep
 * the ranges exact; anything else that makes a new string out of inputs of
 * which any is untrusted makes it wholly untrusted (jt_derive). */
jv jv_strn_untrusted(jstate *st, const char *s, size_t n);
void jsb_mark(jstate *st, jsb *b, size_t from, size_t to); /* [from, to) untrusted */
bool jt_has(jv v);                                         /* any untrusted string inside (shallow for str) */
/* r computed from the inputs: every string inside r that is not one of
 * the inputs' own strings becomes wholly untrusted if any input has
 * untrusted text. Returns r or a copy. */
jv jt_derive(jstate *st, jv r, const jv *in1, size_t n1, const jv *in2, size_t n2, const jv *in3, size_t n3);
void jfmt_float(char *buf, size_t cap, double f); /* Python repr of a float */

typedef struct {
    bool ensure_ascii, sort_keys;
    const char *indent; /* NULL: none */
    size_t indent_len;
    const char *item_sep, *key_sep;
    size_t item_sep_len, key_sep_len;
} jjson_opts;
void jv_write_json(jstate *st, jsb *b, jv v, const jjson_opts *o, int level);

/* utf-8 */
size_t ju_decode(const char *s, size_t n, int32_t *cp); /* bytes used (>=1) */
size_t ju_encode(int32_t cp, char *out);
bool ju_isspace(int32_t cp);

/* ---- builtins (jinja_builtins.c) ---- */
int jb_filter_id(const char *name); /* -1 if unknown */
int jb_test_id(const char *name);
jv jb_filter(jstate *st, int id, jv v, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw);
bool jb_test(jstate *st, int id, jv v, jv *args, size_t nargs);
jv jb_global(jstate *st, const char *name, bool *found);
jv jb_percent_format(jstate *st, jstr *fmt, jv args); /* Python str % args */
jv jb_getattr(jstate *st, jv obj, const char *name, size_t len); /* method or member */
jv jb_call_builtin(jstate *st, jfunc *fn, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw);

/* evaluator entry points used by builtins */
jv jx_iter_list(jstate *st, jv v); /* any iterable -> LIST (consumes generators) */
jv jx_getitem(jstate *st, jv obj, jv key);
jv jx_call(jstate *st, jv callee, jv *args, size_t nargs, const char **kwn, jv *kwv, size_t nkw);

/* ---- parser (jinja_parse.c) ---- */
hr_status jp_parse(hr_tmpl *t, const char *src, size_t len, hr_err *err);

#endif
