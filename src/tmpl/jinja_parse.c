/* jinja_parse.c - lexer and parser: template text -> AST (jinja_impl.h).
 *
 * Lexing follows jinja2's rules with trim_blocks and lstrip_blocks on:
 * newlines are normalised to \n and one trailing newline is dropped; `-`
 * on a tag strips whitespace on that side, `+` keeps it; a block or comment
 * tag's end eats one following newline; whitespace from the start of a
 * line up to a block or comment tag is removed. Inside tags, `}}`/`%}`
 * only end the tag when brackets are balanced. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tmpl/jinja_impl.h"

enum { T_TEXT, T_VBEGIN, T_VEND, T_BBEGIN, T_BEND, T_NAME, T_STR, T_INT, T_FLOAT, T_OP, T_EOF };
enum { OPC_FLOORDIV = 256, OPC_POW, OPC_EQ, OPC_NE, OPC_LE, OPC_GE };

typedef struct {
    int type;
    int line;
    int op;
    const char *s; /* TEXT, NAME, STR: bytes (STR decoded, in the arena) */
    size_t n;
    int64_t i;
    double f;
} tok;

#define JP_MAX_DEPTH 200
/* The deepest AST the parser accepts. Chains (`x|f|f...`, `a.b.c...`,
 * `1+1+...`, `f()()...`, `a if b if c...`) are parsed by loops, not
 * recursion, so JP_MAX_DEPTH does not see them; every later walk of the tree
 * (the evaluator, uses_name) recurses once per level, so the height is
 * bounded here. The evaluator's own default depth limit (500) is lower. */
#define JP_MAX_TREE 1000

typedef struct {
    jarena *ar;
    hr_err *err;
    jmp_buf jb;
    tok *t;
    size_t nt, cap, pos;
    int depth;
    int loop_depth;
    /* lexer */
    const char *s;
    size_t n;
    size_t lpos;
    int lline;
} jparser;

static _Noreturn void pfail(jparser *p, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static _Noreturn void pfail(jparser *p, int line, const char *fmt, ...)
{
    char msg[HR_ERR_MSG_MAX - 40];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    hr_err_set(p->err, HR_ERR_FORMAT, "template syntax error, line %d: %s", line, msg);
    longjmp(p->jb, 1);
}

static void *palloc(jparser *p, size_t n)
{
    void *x = ja_alloc(p->ar, n);
    if (!x) {
        if (ja_full(p->ar, n))
            hr_err_set(p->err, HR_ERR_LIMIT, "template too large to parse");
        else
            hr_err_set(p->err, HR_ERR_NOMEM, "out of memory while parsing the template");
        longjmp(p->jb, 1);
    }
    memset(x, 0, n);
    return x;
}

static jv pstr(jparser *p, const char *s, size_t n)
{
    jstr *x = palloc(p, sizeof(jstr) + n + 1);
    x->len = n;
    memcpy(x->p, s, n);
    x->p[n] = 0;
    x->ncp = -1;
    js_ncp(x); /* precomputed: render threads never write to shared strings */
    jv v = {.t = JV_STR};
    v.u.s = x;
    return v;
}

static const char *pname(jparser *p, const char *s, size_t n)
{
    char *x = palloc(p, n + 1);
    memcpy(x, s, n);
    x[n] = 0;
    return x;
}

/* ================================================================ lexer */

static int line_at(jparser *p, size_t pos)
{
    if (pos < p->lpos) {
        p->lpos = 0;
        p->lline = 1;
    }
    for (size_t i = p->lpos; i < pos && i < p->n; i++)
        if (p->s[i] == '\n')
            p->lline++;
    p->lpos = pos;
    return p->lline;
}

static tok *emit(jparser *p, int type, size_t pos)
{
    if (p->nt == p->cap) {
        /* tokens live only during the parse: plain heap, freed by jp_parse */
        size_t nc = p->cap ? p->cap * 2 : 256;
        tok *nt = realloc(p->t, nc * sizeof(tok));
        if (!nt) {
            hr_err_set(p->err, HR_ERR_NOMEM, "out of memory");
            longjmp(p->jb, 1);
        }
        p->t = nt;
        p->cap = nc;
    }
    tok *t = &p->t[p->nt++];
    memset(t, 0, sizeof *t);
    t->type = type;
    t->line = line_at(p, pos);
    return t;
}

static bool isws(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'; }
static bool isid0(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool isdig(char c) { return c >= '0' && c <= '9'; }
static bool isid(char c) { return isid0(c) || isdig(c); }

static void emit_text(jparser *p, size_t a, size_t b)
{
    if (b > a) {
        tok *t = emit(p, T_TEXT, a);
        t->s = p->s + a;
        t->n = b - a;
    }
}

static int hexv(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes a string literal body with Python's unicode-escape rules. */
static void lex_string(jparser *p, size_t *posp)
{
    const char *s = p->s;
    size_t pos = *posp, start = pos;
    char q = s[pos++];
    size_t end = pos;
    while (end < p->n && s[end] != q) {
        if (s[end] == '\\' && end + 1 < p->n)
            end++;
        end++;
    }
    if (end >= p->n)
        pfail(p, line_at(p, start), "unexpected end of string");
    char *out = palloc(p, end - pos + 1);
    size_t o = 0;
    for (size_t i = pos; i < end; i++) {
        char c = s[i];
        if (c != '\\') { out[o++] = c; continue; }
        char e = s[++i];
        int32_t cp = -1;
        switch (e) {
        case '\n': break;
        case '\\': out[o++] = '\\'; break;
        case '\'': out[o++] = '\''; break;
        case '"': out[o++] = '"'; break;
        case 'a': out[o++] = '\a'; break;
        case 'b': out[o++] = '\b'; break;
        case 'f': out[o++] = '\f'; break;
        case 'n': out[o++] = '\n'; break;
        case 'r': out[o++] = '\r'; break;
        case 't': out[o++] = '\t'; break;
        case 'v': out[o++] = '\v'; break;
        case 'x': case 'u': case 'U': {
            int nd = e == 'x' ? 2 : e == 'u' ? 4 : 8;
            uint32_t v = 0; /* 8 hex digits fit; > 0x10FFFF is refused below */
            for (int k = 0; k < nd; k++) {
                int h = i + 1 + (size_t)k < end ? hexv(s[i + 1 + k]) : -1;
                if (h < 0)
                    pfail(p, line_at(p, i), "truncated \\%c escape in string", e);
                v = v * 16 + (uint32_t)h;
            }
            if (v > 0x10FFFF)
                pfail(p, line_at(p, i), "illegal Unicode character in string");
            i += (size_t)nd;
            cp = v;
            break;
        }
        default:
            if (e >= '0' && e <= '7') {
                int32_t v = e - '0';
                for (int k = 0; k < 2 && i + 1 < end && s[i + 1] >= '0' && s[i + 1] <= '7'; k++)
                    v = v * 8 + (s[++i] - '0');
                cp = v;
            } else {
                out[o++] = '\\';
                out[o++] = e;
            }
        }
        if (cp >= 0) {
            char buf[8];
            size_t k = ju_encode(cp, buf);
            /* an escape is at least 2 source bytes; \x/\u encode to <= their source length */
            memcpy(out + o, buf, k);
            o += k;
        }
    }
    tok *t = emit(p, T_STR, start);
    t->s = out;
    t->n = o;
    *posp = end + 1;
}

static void lex_number(jparser *p, size_t *posp)
{
    const char *s = p->s;
    size_t pos = *posp, st = pos;
    bool after_dot = pos > 0 && s[pos - 1] == '.';
    if (s[pos] == '0' && pos + 1 < p->n && (s[pos + 1] == 'x' || s[pos + 1] == 'X' || s[pos + 1] == 'b' ||
                                            s[pos + 1] == 'B' || s[pos + 1] == 'o' || s[pos + 1] == 'O')) {
        int base = (s[pos + 1] | 0x20) == 'x' ? 16 : (s[pos + 1] | 0x20) == 'b' ? 2 : 8;
        pos += 2;
        int64_t v = 0;
        bool any = false;
        for (; pos < p->n; pos++) {
            if (s[pos] == '_') continue;
            int h = hexv(s[pos]);
            if (h < 0 || h >= base) break;
            if (v > (INT64_MAX - h) / base)
                pfail(p, line_at(p, st), "integer literal too large");
            v = v * base + h;
            any = true;
        }
        if (!any)
            pfail(p, line_at(p, st), "invalid integer literal");
        tok *t = emit(p, T_INT, st);
        t->i = v;
        *posp = pos;
        return;
    }
    while (pos < p->n && (isdig(s[pos]) || (s[pos] == '_' && pos + 1 < p->n && isdig(s[pos + 1]))))
        pos++;
    bool isf = false;
    if (!after_dot) {
        if (pos + 1 < p->n && s[pos] == '.' && isdig(s[pos + 1])) {
            isf = true;
            pos++;
            while (pos < p->n && (isdig(s[pos]) || (s[pos] == '_' && pos + 1 < p->n && isdig(s[pos + 1]))))
                pos++;
        }
        if (pos < p->n && (s[pos] == 'e' || s[pos] == 'E')) {
            size_t q = pos + 1;
            if (q < p->n && (s[q] == '+' || s[q] == '-'))
                q++;
            if (q < p->n && isdig(s[q])) {
                isf = true;
                pos = q;
                while (pos < p->n && isdig(s[pos]))
                    pos++;
            }
        }
    }
    char buf[128];
    size_t k = 0;
    for (size_t i = st; i < pos && k < sizeof buf - 1; i++)
        if (s[i] != '_')
            buf[k++] = s[i];
    buf[k] = 0;
    if (pos - st >= sizeof buf - 1)
        pfail(p, line_at(p, st), "number literal too long");
    if (isf) {
        tok *t = emit(p, T_FLOAT, st);
        t->f = strtod(buf, NULL);
    } else {
        int64_t v = 0;
        for (size_t i = 0; i < k; i++) {
            if (v > (INT64_MAX - (buf[i] - '0')) / 10)
                pfail(p, line_at(p, st), "integer literal too large");
            v = v * 10 + (buf[i] - '0');
        }
        tok *t = emit(p, T_INT, st);
        t->i = v;
    }
    *posp = pos;
}

/* Lexes the inside of a {{ }} or {% %} tag starting at *posp; returns after the end marker. */
static void lex_tag(jparser *p, size_t *posp, bool block, bool *line_starting)
{
    const char *s = p->s;
    size_t pos = *posp;
    int depth = 0;
    char stack[JP_MAX_DEPTH];
    size_t open = pos;
    for (;;) {
        while (pos < p->n && isws(s[pos]))
            pos++;
        if (pos >= p->n)
            pfail(p, line_at(p, open), "unexpected end of template, expected '%s'", block ? "%}" : "}}");
        char c = s[pos];
        char e1 = block ? '%' : '}';
        if (depth == 0) {
            size_t q = pos;
            char sign = 0;
            if ((c == '-' || (block && c == '+')) && q + 2 < p->n + 1 && q + 1 < p->n && s[q + 1] == e1 &&
                q + 2 < p->n && s[q + 2] == '}') {
                sign = c;
                q++;
            }
            if (q + 1 < p->n && s[q] == e1 && s[q + 1] == '}') {
                emit(p, block ? T_BEND : T_VEND, pos);
                pos = q + 2;
                if (sign == '-') {
                    while (pos < p->n && isws(s[pos]))
                        pos++;
                } else if (block && sign != '+' && pos < p->n && s[pos] == '\n') {
                    pos++;
                }
                *line_starting = pos > 0 && s[pos - 1] == '\n';
                *posp = pos;
                return;
            }
        }
        if (c == '\'' || c == '"') {
            lex_string(p, &pos);
            continue;
        }
        if (isdig(c)) {
            lex_number(p, &pos);
            continue;
        }
        if (isid0(c)) {
            size_t a = pos;
            while (pos < p->n && isid(s[pos]))
                pos++;
            tok *t = emit(p, T_NAME, a);
            t->s = s + a;
            t->n = pos - a;
            continue;
        }
        int op = 0;
        char c2 = pos + 1 < p->n ? s[pos + 1] : 0;
        if (c == '/' && c2 == '/') op = OPC_FLOORDIV;
        else if (c == '*' && c2 == '*') op = OPC_POW;
        else if (c == '=' && c2 == '=') op = OPC_EQ;
        else if (c == '!' && c2 == '=') op = OPC_NE;
        else if (c == '<' && c2 == '=') op = OPC_LE;
        else if (c == '>' && c2 == '=') op = OPC_GE;
        if (op) {
            emit(p, T_OP, pos)->op = op;
            pos += 2;
            continue;
        }
        if (strchr("+-/*%~()[]{}<>=.:|,;", c) && c) {
            if (c == '(' || c == '[' || c == '{') {
                if (depth >= JP_MAX_DEPTH)
                    pfail(p, line_at(p, pos), "brackets nested too deeply");
                stack[depth++] = c;
            } else if (c == ')' || c == ']' || c == '}') {
                char want = c == ')' ? '(' : c == ']' ? '[' : '{';
                if (depth == 0 || stack[depth - 1] != want)
                    pfail(p, line_at(p, pos), "unexpected '%c'", c);
                depth--;
            }
            emit(p, T_OP, pos)->op = c;
            pos++;
            continue;
        }
        if ((unsigned char)c >= 0x20 && (unsigned char)c < 0x7f)
            pfail(p, line_at(p, pos), "unexpected char '%c'", c);
        pfail(p, line_at(p, pos), "unexpected char (byte 0x%02x)", (unsigned char)c);
    }
}

/* Tries `{%[-+]? raw [-]?%}` at pos (the '{'); handles the whole raw block. */
static bool lex_raw(jparser *p, size_t *posp, bool *line_starting)
{
    const char *s = p->s;
    size_t q = *posp + 2;
    if (q < p->n && (s[q] == '-' || s[q] == '+'))
        q++;
    while (q < p->n && isws(s[q]))
        q++;
    if (!(q + 3 <= p->n && memcmp(s + q, "raw", 3) == 0 && (q + 3 == p->n || !isid(s[q + 3]))))
        return false;
    q += 3;
    while (q < p->n && isws(s[q]))
        q++;
    bool strip = false;
    if (q < p->n && s[q] == '-') {
        strip = true;
        q++;
    }
    if (!(q + 1 < p->n && s[q] == '%' && s[q + 1] == '}'))
        return false;
    q += 2;
    if (strip)
        while (q < p->n && isws(s[q]))
            q++;
    /* find {%[-+]? endraw [-+]?%} */
    for (size_t i = q; i + 1 < p->n; i++) {
        if (!(s[i] == '{' && s[i + 1] == '%'))
            continue;
        size_t k = i + 2;
        char sign = 0;
        if (k < p->n && (s[k] == '-' || s[k] == '+'))
            sign = s[k++];
        while (k < p->n && isws(s[k]))
            k++;
        if (!(k + 6 <= p->n && memcmp(s + k, "endraw", 6) == 0))
            continue;
        k += 6;
        while (k < p->n && isws(s[k]))
            k++;
        char esign = 0;
        if (k < p->n && (s[k] == '-' || s[k] == '+'))
            esign = s[k++];
        if (!(k + 1 < p->n && s[k] == '%' && s[k + 1] == '}'))
            continue;
        k += 2;
        size_t tend = i;
        if (sign == '-') {
            while (tend > q && isws(s[tend - 1]))
                tend--;
        } else if (sign != '+') {
            size_t l = tend;
            while (l > q && s[l - 1] != '\n')
                l--;
            bool all = l < tend;
            for (size_t z = l; z < tend; z++)
                if (!isws(s[z]))
                    all = false;
            if (all && l > q)
                tend = l;
        }
        emit_text(p, q, tend);
        if (esign == '-') {
            while (k < p->n && isws(s[k]))
                k++;
        } else if (esign != '+' && k < p->n && s[k] == '\n') {
            k++;
        }
        *line_starting = s[k - 1] == '\n';
        *posp = k;
        return true;
    }
    pfail(p, line_at(p, *posp), "missing end of raw directive");
}

static void lex(jparser *p)
{
    const char *s = p->s;
    size_t pos = 0, n = p->n;
    bool line_starting = true;
    while (pos < n) {
        size_t i = pos;
        while (i + 1 < n && !(s[i] == '{' && (s[i + 1] == '{' || s[i + 1] == '%' || s[i + 1] == '#')))
            i++;
        if (i + 1 >= n) {
            emit_text(p, pos, n);
            break;
        }
        char kind = s[i + 1];
        char sign = i + 2 < n && (s[i + 2] == '-' || s[i + 2] == '+') ? s[i + 2] : 0;
        size_t tend = i;
        if (sign == '-') {
            while (tend > pos && isws(s[tend - 1]))
                tend--;
        } else if (sign != '+' && kind != '{') {
            size_t l = tend;
            while (l > pos && s[l - 1] != '\n')
                l--;
            if (l > pos || line_starting) {
                bool all = l < tend;
                for (size_t z = l; z < tend; z++)
                    if (!isws(s[z]))
                        all = false;
                if (all)
                    tend = l;
            }
        }
        emit_text(p, pos, tend);
        if (kind == '#') {
            size_t q = i + 2 + (sign ? 1 : 0);
            size_t j = q;
            while (j + 1 < n && !(s[j] == '#' && s[j + 1] == '}'))
                j++;
            if (j + 1 >= n)
                pfail(p, line_at(p, i), "missing end of comment tag");
            char esign = j > q && (s[j - 1] == '-' || s[j - 1] == '+') ? s[j - 1] : 0;
            pos = j + 2;
            if (esign == '-') {
                while (pos < n && isws(s[pos]))
                    pos++;
            } else if (esign != '+' && pos < n && s[pos] == '\n') {
                pos++;
            }
            line_starting = s[pos - 1] == '\n';
            continue;
        }
        if (kind == '%') {
            size_t q = i;
            if (lex_raw(p, &q, &line_starting)) {
                pos = q;
                continue;
            }
            emit(p, T_BBEGIN, i);
            pos = i + 2 + (sign ? 1 : 0);
            lex_tag(p, &pos, true, &line_starting);
            continue;
        }
        emit(p, T_VBEGIN, i);
        pos = i + 2 + (sign == '-' ? 1 : 0);
        lex_tag(p, &pos, false, &line_starting);
    }
    emit(p, T_EOF, n);
}

/* ================================================================ parser */

static tok *cur(jparser *p) { return &p->t[p->pos]; }
static tok *peekt(jparser *p, size_t k) { size_t i = p->pos + k; return &p->t[i < p->nt ? i : p->nt - 1]; }
static void adv(jparser *p) { if (p->pos + 1 < p->nt) p->pos++; }

static bool is_name(tok *t, const char *nm)
{
    size_t l = strlen(nm);
    return t->type == T_NAME && t->n == l && memcmp(t->s, nm, l) == 0;
}
static bool is_op(tok *t, int op) { return t->type == T_OP && t->op == op; }

static const char *tokdesc(tok *t, char *buf, size_t cap)
{
    switch (t->type) {
    case T_NAME: snprintf(buf, cap, "'%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s); break;
    case T_OP:
        if (t->op < 256) snprintf(buf, cap, "'%c'", t->op);
        else snprintf(buf, cap, "operator");
        break;
    case T_STR: snprintf(buf, cap, "string"); break;
    case T_INT: case T_FLOAT: snprintf(buf, cap, "number"); break;
    case T_BEND: snprintf(buf, cap, "end of statement block"); break;
    case T_VEND: snprintf(buf, cap, "end of print statement"); break;
    case T_EOF: snprintf(buf, cap, "end of template"); break;
    default: snprintf(buf, cap, "text"); break;
    }
    return buf;
}

static _Noreturn void unexpected(jparser *p, const char *what)
{
    char b[64];
    pfail(p, cur(p)->line, "expected %s, got %s", what, tokdesc(cur(p), b, sizeof b));
}

static void expect_op(jparser *p, int op)
{
    if (!is_op(cur(p), op)) {
        char w[8];
        snprintf(w, sizeof w, "'%c'", op);
        unexpected(p, w);
    }
    adv(p);
}

static const char *expect_name(jparser *p)
{
    if (cur(p)->type != T_NAME)
        unexpected(p, "a name");
    const char *nm = pname(p, cur(p)->s, cur(p)->n);
    adv(p);
    return nm;
}

static jnode *mk(jparser *p, int kind, int line)
{
    jnode *n = palloc(p, sizeof(jnode));
    n->kind = (uint16_t)kind;
    n->line = line;
    return n;
}

typedef struct {
    jnode **v;
    size_t n, cap;
} nvec;

static void nv_push(jparser *p, nvec *v, jnode *x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 4;
        jnode **nn = palloc(p, nc * sizeof(jnode *));
        if (v->n)
            memcpy(nn, v->v, v->n * sizeof(jnode *));
        v->v = nn;
        v->cap = nc;
    }
    v->v[v->n++] = x;
}

typedef struct {
    const char **v;
    size_t n, cap;
} svec;

static void sv_push(jparser *p, svec *v, const char *x)
{
    if (v->n == v->cap) {
        size_t nc = v->cap ? v->cap * 2 : 4;
        const char **nn = palloc(p, nc * sizeof(char *));
        if (v->n)
            memcpy(nn, v->v, v->n * sizeof(char *));
        v->v = nn;
        v->cap = nc;
    }
    v->v[v->n++] = x;
}

static void enter(jparser *p)
{
    if (++p->depth > JP_MAX_DEPTH)
        pfail(p, cur(p)->line, "template nested too deeply");
}
static void leave(jparser *p) { p->depth--; }

static jnode *parse_expr(jparser *p, bool with_condexpr);
static jnode *parse_unary(jparser *p, bool with_filter);
static jnode *parse_primary(jparser *p);
static jnode *parse_postfix(jparser *p, jnode *n);
static jnode *parse_filter(jparser *p, jnode *n, bool start_inline);

static bool tuple_end(jparser *p, const char *extra)
{
    tok *t = cur(p);
    if (t->type == T_VEND || t->type == T_BEND || t->type == T_EOF || is_op(t, ')'))
        return true;
    return extra && is_name(t, extra);
}

/* parse_tuple: expr (, expr)* ; simplified: primaries only (assignment targets) */
static jnode *parse_tuple(jparser *p, bool simplified, bool with_condexpr, const char *extra, bool explicit_parens)
{
    int line = cur(p)->line;
    nvec items = {0};
    bool comma = false;
    for (;;) {
        if (items.n) {
            if (!is_op(cur(p), ','))
                break;
            adv(p);
            comma = true;
        }
        if (tuple_end(p, extra))
            break;
        jnode *e;
        if (simplified) {
            enter(p);
            e = parse_primary(p);
            leave(p);
        } else {
            e = parse_expr(p, with_condexpr);
        }
        nv_push(p, &items, e);
    }
    if (!comma) {
        if (items.n == 1)
            return items.v[0];
        if (!explicit_parens)
            unexpected(p, "an expression");
    }
    jnode *t = mk(p, N_TUPLE, line);
    t->list = items.v;
    t->n = items.n;
    return t;
}

static void parse_call_args(jparser *p, jnode *n)
{
    expect_op(p, '(');
    nvec pos = {0}, kwv = {0};
    svec kwn = {0};
    bool first = true;
    while (!is_op(cur(p), ')')) {
        if (!first)
            expect_op(p, ',');
        first = false;
        if (is_op(cur(p), ')'))
            break;
        if (is_op(cur(p), '*')) {
            adv(p);
            if (n->d)
                pfail(p, cur(p)->line, "only one *args allowed");
            n->d = parse_expr(p, true);
        } else if (is_op(cur(p), OPC_POW)) {
            adv(p);
            if (n->e)
                pfail(p, cur(p)->line, "only one **kwargs allowed");
            n->e = parse_expr(p, true);
        } else if (cur(p)->type == T_NAME && is_op(peekt(p, 1), '=')) {
            sv_push(p, &kwn, expect_name(p));
            adv(p);
            nv_push(p, &kwv, parse_expr(p, true));
        } else {
            if (kwn.n)
                pfail(p, cur(p)->line, "positional argument follows keyword argument");
            nv_push(p, &pos, parse_expr(p, true));
        }
    }
    adv(p);
    n->list = pos.v;
    n->n = pos.n;
    n->names = kwn.v;
    n->nnames = kwn.n;
    n->list2 = kwv.v;
    n->n2 = kwv.n;
}

static jnode *parse_primary(jparser *p)
{
    tok *t = cur(p);
    int line = t->line;
    jnode *n;
    switch (t->type) {
    case T_NAME:
        n = mk(p, N_CONST, line);
        if (is_name(t, "true") || is_name(t, "True")) n->val = jv_bool(true);
        else if (is_name(t, "false") || is_name(t, "False")) n->val = jv_bool(false);
        else if (is_name(t, "none") || is_name(t, "None")) n->val = jv_none();
        else {
            n->kind = N_NAME;
            n->name = pname(p, t->s, t->n);
        }
        adv(p);
        return n;
    case T_STR: {
        size_t total = 0;
        for (size_t k = 0; peekt(p, k)->type == T_STR; k++)
            total += peekt(p, k)->n;
        char *buf = palloc(p, total + 1);
        size_t o = 0;
        while (cur(p)->type == T_STR) {
            memcpy(buf + o, cur(p)->s, cur(p)->n);
            o += cur(p)->n;
            adv(p);
        }
        n = mk(p, N_CONST, line);
        n->val = pstr(p, buf, o);
        return n;
    }
    case T_INT:
        n = mk(p, N_CONST, line);
        n->val = jv_int(t->i);
        adv(p);
        return n;
    case T_FLOAT:
        n = mk(p, N_CONST, line);
        n->val = jv_float(t->f);
        adv(p);
        return n;
    case T_OP:
        if (t->op == '(') {
            adv(p);
            n = parse_tuple(p, false, true, NULL, true);
            expect_op(p, ')');
            return n;
        }
        if (t->op == '[') {
            adv(p);
            nvec items = {0};
            while (!is_op(cur(p), ']')) {
                if (items.n)
                    expect_op(p, ',');
                if (is_op(cur(p), ']'))
                    break;
                nv_push(p, &items, parse_expr(p, true));
            }
            adv(p);
            n = mk(p, N_LIST, line);
            n->list = items.v;
            n->n = items.n;
            return n;
        }
        if (t->op == '{') {
            adv(p);
            nvec items = {0};
            while (!is_op(cur(p), '}')) {
                if (items.n)
                    expect_op(p, ',');
                if (is_op(cur(p), '}'))
                    break;
                nv_push(p, &items, parse_expr(p, true));
                expect_op(p, ':');
                nv_push(p, &items, parse_expr(p, true));
            }
            adv(p);
            n = mk(p, N_DICT, line);
            n->list = items.v;
            n->n = items.n;
            return n;
        }
        break;
    default:
        break;
    }
    unexpected(p, "an expression");
}

static jnode *parse_subscript(jparser *p)
{
    int line = cur(p)->line;
    jnode *args[3] = {NULL, NULL, NULL};
    if (is_op(cur(p), ':')) {
        adv(p);
    } else {
        jnode *e = parse_expr(p, true);
        if (!is_op(cur(p), ':'))
            return e;
        adv(p);
        args[0] = e;
    }
    if (!is_op(cur(p), ']') && !is_op(cur(p), ',') && !is_op(cur(p), ':'))
        args[1] = parse_expr(p, true);
    if (is_op(cur(p), ':')) {
        adv(p);
        if (!is_op(cur(p), ']') && !is_op(cur(p), ','))
            args[2] = parse_expr(p, true);
    }
    jnode *s = mk(p, N_SLICE, line);
    s->a = args[0];
    s->b = args[1];
    s->c = args[2];
    return s;
}

static jnode *parse_postfix(jparser *p, jnode *n)
{
    for (;;) {
        tok *t = cur(p);
        int line = t->line;
        if (is_op(t, '.')) {
            adv(p);
            t = cur(p);
            if (t->type == T_NAME) {
                jnode *a = mk(p, N_ATTR, line);
                a->a = n;
                a->name = pname(p, t->s, t->n);
                adv(p);
                n = a;
            } else if (t->type == T_INT) {
                jnode *a = mk(p, N_ITEM, line);
                a->a = n;
                a->b = mk(p, N_CONST, line);
                a->b->val = jv_int(t->i);
                adv(p);
                n = a;
            } else {
                unexpected(p, "an attribute name");
            }
        } else if (is_op(t, '[')) {
            adv(p);
            nvec idx = {0};
            while (!is_op(cur(p), ']')) {
                if (idx.n)
                    expect_op(p, ',');
                if (is_op(cur(p), ']'))
                    break;
                nv_push(p, &idx, parse_subscript(p));
            }
            adv(p);
            if (idx.n == 0)
                pfail(p, line, "expected subscript expression");
            jnode *a = mk(p, N_ITEM, line);
            a->a = n;
            if (idx.n == 1) {
                a->b = idx.v[0];
            } else {
                a->b = mk(p, N_TUPLE, line);
                a->b->list = idx.v;
                a->b->n = idx.n;
            }
            n = a;
        } else if (is_op(t, '(')) {
            jnode *c = mk(p, N_CALL, line);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *parse_test(jparser *p, jnode *n)
{
    int line = cur(p)->line;
    adv(p); /* is */
    jnode *t = mk(p, N_TEST, line);
    t->a = n;
    if (is_name(cur(p), "not")) {
        t->neg = true;
        adv(p);
    }
    const char *name = expect_name(p);
    t->name = name;
    t->id = jb_test_id(name);
    if (t->id < 0)
        pfail(p, line, "no test named '%s'", name);
    tok *c = cur(p);
    if (is_op(c, '(')) {
        parse_call_args(p, t);
    } else if ((c->type == T_NAME || c->type == T_STR || c->type == T_INT || c->type == T_FLOAT ||
                is_op(c, '[') || is_op(c, '{')) &&
               !is_name(c, "else") && !is_name(c, "or") && !is_name(c, "and")) {
        if (is_name(c, "is"))
            pfail(p, line, "you cannot chain multiple tests with is");
        jnode *arg = parse_postfix(p, parse_primary(p));
        t->list = palloc(p, sizeof(jnode *));
        t->list[0] = arg;
        t->n = 1;
    }
    return t;
}

/* A filter chain: `| name(args) | name2 ...`; start_inline: the first `|` was already consumed. */
static jnode *parse_filter(jparser *p, jnode *n, bool start_inline)
{
    while (is_op(cur(p), '|') || start_inline) {
        if (!start_inline)
            adv(p);
        start_inline = false;
        int line = cur(p)->line;
        char nm[128];
        if (cur(p)->type != T_NAME)
            unexpected(p, "a filter name");
        snprintf(nm, sizeof nm, "%.*s", (int)cur(p)->n, cur(p)->s);
        adv(p);
        while (is_op(cur(p), '.') && peekt(p, 1)->type == T_NAME) {
            adv(p);
            size_t l = strlen(nm);
            snprintf(nm + l, sizeof nm - l, ".%.*s", (int)cur(p)->n, cur(p)->s);
            adv(p);
        }
        jnode *f = mk(p, N_FILTER, line);
        f->a = n;
        f->name = pname(p, nm, strlen(nm));
        f->id = jb_filter_id(nm);
        if (f->id < 0)
            pfail(p, line, "no filter named '%s'", nm);
        if (is_op(cur(p), '('))
            parse_call_args(p, f);
        n = f;
    }
    return n;
}

static jnode *parse_filter_expr(jparser *p, jnode *n)
{
    for (;;) {
        if (is_op(cur(p), '|')) {
            n = parse_filter(p, n, false);
        } else if (is_name(cur(p), "is")) {
            n = parse_test(p, n);
        } else if (is_op(cur(p), '(')) {
            jnode *c = mk(p, N_CALL, cur(p)->line);
            c->a = n;
            parse_call_args(p, c);
            n = c;
        } else {
            return n;
        }
    }
}

static jnode *parse_unary(jparser *p, bool with_filter)
{
    enter(p);
    tok *t = cur(p);
    jnode *n;
    if (is_op(t, '-') || is_op(t, '+')) {
        adv(p);
        n = mk(p, N_UNARY, t->line);
        n->op = t->op == '-' ? OP_NEG : OP_POS;
        n->a = parse_unary(p, false);
    } else {
        n = parse_primary(p);
    }
    n = parse_postfix(p, n);
    if (with_filter)
        n = parse_filter_expr(p, n);
    leave(p);
    return n;
}

static jnode *mkbin(jparser *p, int op, jnode *a, jnode *b, int line)
{
    jnode *n = mk(p, N_BIN, line);
    n->op = (int16_t)op;
    n->a = a;
    n->b = b;
    return n;
}

static jnode *parse_pow(jparser *p)
{
    jnode *l = parse_unary(p, true);
    while (is_op(cur(p), OPC_POW)) {
        int line = cur(p)->line;
        adv(p);
        l = mkbin(p, OP_POW, l, parse_unary(p, true), line);
    }
    return l;
}

static jnode *parse_math2(jparser *p)
{
    jnode *l = parse_pow(p);
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, '*') ? OP_MUL : is_op(t, '/') ? OP_DIV : is_op(t, OPC_FLOORDIV) ? OP_FLOORDIV
               : is_op(t, '%') ? OP_MOD : -1;
        if (op < 0)
            return l;
        adv(p);
        l = mkbin(p, op, l, parse_pow(p), t->line);
    }
}

static jnode *parse_concat(jparser *p)
{
    jnode *l = parse_math2(p);
    if (!is_op(cur(p), '~'))
        return l;
    nvec items = {0};
    nv_push(p, &items, l);
    int line = cur(p)->line;
    while (is_op(cur(p), '~')) {
        adv(p);
        nv_push(p, &items, parse_math2(p));
    }
    jnode *n = mk(p, N_CONCAT, line);
    n->list = items.v;
    n->n = items.n;
    return n;
}

static jnode *parse_math1(jparser *p)
{
    jnode *l = parse_concat(p);
    for (;;) {
        tok *t = cur(p);
        int op = is_op(t, '+') ? OP_ADD : is_op(t, '-') ? OP_SUB : -1;
        if (op < 0)
            return l;
        adv(p);
        l = mkbin(p, op, l, parse_concat(p), t->line);
    }
}

static jnode *parse_compare(jparser *p)
{
    int line = cur(p)->line;
    jnode *first = parse_math1(p);
    nvec rhs = {0};
    int ops[64];
    size_t nops = 0;
    for (;;) {
        tok *t = cur(p);
        int op = -1;
        if (is_op(t, OPC_EQ)) op = OP_EQ;
        else if (is_op(t, OPC_NE)) op = OP_NE;
        else if (is_op(t, '<')) op = OP_LT;
        else if (is_op(t, OPC_LE)) op = OP_LE;
        else if (is_op(t, '>')) op = OP_GT;
        else if (is_op(t, OPC_GE)) op = OP_GE;
        else if (is_name(t, "in")) op = OP_IN;
        else if (is_name(t, "not") && is_name(peekt(p, 1), "in")) {
            adv(p);
            op = OP_NOTIN;
        }
        if (op < 0)
            break;
        adv(p);
        if (nops == 64)
            pfail(p, t->line, "comparison chain too long");
        ops[nops++] = op;
        nv_push(p, &rhs, parse_math1(p));
    }
    if (!nops)
        return first;
    jnode *n = mk(p, N_CMP, line);
    n->a = first;
    n->list2 = rhs.v;
    n->n2 = rhs.n;
    n->ops = palloc(p, nops * sizeof(int));
    memcpy(n->ops, ops, nops * sizeof(int));
    return n;
}

static jnode *parse_not(jparser *p)
{
    if (is_name(cur(p), "not")) {
        int line = cur(p)->line;
        adv(p);
        enter(p);
        jnode *n = mk(p, N_NOT, line);
        n->a = parse_not(p);
        leave(p);
        return n;
    }
    return parse_compare(p);
}

static jnode *parse_and(jparser *p)
{
    jnode *l = parse_not(p);
    while (is_name(cur(p), "and")) {
        int line = cur(p)->line;
        adv(p);
        jnode *n = mk(p, N_AND, line);
        n->a = l;
        n->b = parse_not(p);
        l = n;
    }
    return l;
}

static jnode *parse_or(jparser *p)
{
    jnode *l = parse_and(p);
    while (is_name(cur(p), "or")) {
        int line = cur(p)->line;
        adv(p);
        jnode *n = mk(p, N_OR, line);
        n->a = l;
        n->b = parse_and(p);
        l = n;
    }
    return l;
}

static jnode *parse_expr(jparser *p, bool with_condexpr)
{
    enter(p);
    jnode *e = parse_or(p);
    if (with_condexpr) {
        while (is_name(cur(p), "if")) {
            int line = cur(p)->line;
            adv(p);
            jnode *c = mk(p, N_COND, line);
            c->b = e;
            c->a = parse_or(p);
            if (is_name(cur(p), "else")) {
                adv(p);
                c->c = parse_expr(p, true);
            }
            e = c;
        }
    }
    leave(p);
    return e;
}

/* ---------------------------------------------------------------- statements */

static void check_target(jparser *p, jnode *t)
{
    if (t->kind == N_NAME) {
        return;
    }
    if (t->kind == N_TUPLE) {
        for (size_t i = 0; i < t->n; i++)
            if (t->list[i]->kind != N_NAME)
                pfail(p, t->line, "can't assign to this expression");
        return;
    }
    pfail(p, t->line, "can't assign to this expression");
}

static jnode *parse_target(jparser *p, const char *extra, bool with_ns)
{
    if (with_ns && cur(p)->type == T_NAME && is_op(peekt(p, 1), '.') && peekt(p, 2)->type == T_NAME) {
        jnode *n = mk(p, N_NSREF, cur(p)->line);
        n->name = expect_name(p);
        adv(p);
        n->attr = expect_name(p);
        return n;
    }
    jnode *t = parse_tuple(p, true, false, extra, false);
    check_target(p, t);
    return t;
}

static void expect_bend(jparser *p)
{
    if (cur(p)->type != T_BEND)
        unexpected(p, "end of statement block");
    adv(p);
}

static jnode **parse_body(jparser *p, const char *const *ends, size_t *n_out, const char **which);

/* Does the subtree read the name `nm`? (macros accept extra arguments only
 * when their body uses varargs / kwargs, as in jinja2) */
static bool uses_name(const jnode *n, const char *nm)
{
    if (!n)
        return false;
    if (n->kind == N_NAME && !strcmp(n->name, nm))
        return true;
    if (uses_name(n->a, nm) || uses_name(n->b, nm) || uses_name(n->c, nm) || uses_name(n->d, nm) ||
        uses_name(n->e, nm))
        return true;
    for (size_t i = 0; i < n->n; i++)
        if (uses_name(n->list[i], nm))
            return true;
    for (size_t i = 0; i < n->n2; i++)
        if (uses_name(n->list2[i], nm))
            return true;
    for (size_t i = 0; i < n->nbody; i++)
        if (uses_name(n->body[i], nm))
            return true;
    for (size_t i = 0; i < n->nels; i++)
        if (uses_name(n->els[i], nm))
            return true;
    return false;
}

/* Fails when the subtree under n is deeper than JP_MAX_TREE. The recursion
 * stops at the limit, so it is itself bounded. */
static void check_height(jparser *p, const jnode *n, int d)
{
    if (!n)
        return;
    if (d > JP_MAX_TREE)
        pfail(p, n->line, "expression nested too deeply (more than %d levels: a chain of filters, "
              "attributes, calls or operators?)", JP_MAX_TREE);
    const jnode *kids[] = {n->a, n->b, n->c, n->d, n->e};
    for (size_t i = 0; i < 5; i++)
        check_height(p, kids[i], d + 1);
    for (size_t i = 0; i < n->n; i++)
        check_height(p, n->list[i], d + 1);
    for (size_t i = 0; i < n->n2; i++)
        check_height(p, n->list2[i], d + 1);
    for (size_t i = 0; i < n->nbody; i++)
        check_height(p, n->body[i], d + 1);
    for (size_t i = 0; i < n->nels; i++)
        check_height(p, n->els[i], d + 1);
}

static void macro_flags(jparser *p, jnode *n)
{
    check_height(p, n, 0); /* before uses_name walks it */
    n->id = 0;
    for (size_t i = 0; i < n->nbody; i++) {
        if (uses_name(n->body[i], "varargs"))
            n->id |= 1;
        if (uses_name(n->body[i], "kwargs"))
            n->id |= 2;
    }
}

static void parse_params(jparser *p, jnode *n)
{
    /* (a, b=default, ...) -> names / list (defaults, NULL when none) */
    svec names = {0};
    nvec defs = {0};
    expect_op(p, '(');
    while (!is_op(cur(p), ')')) {
        if (names.n)
            expect_op(p, ',');
        if (is_op(cur(p), ')'))
            break;
        const char *nm = expect_name(p);
        sv_push(p, &names, nm);
        if (is_op(cur(p), '=')) {
            adv(p);
            nv_push(p, &defs, parse_expr(p, true));
        } else {
            if (defs.n && defs.v[defs.n - 1])
                pfail(p, cur(p)->line, "non-default argument follows default argument");
            nv_push(p, &defs, NULL);
        }
    }
    adv(p);
    n->names = names.v;
    n->nnames = names.n;
    n->list = defs.v;
    n->n = defs.n;
}

static jnode *parse_stmt(jparser *p)
{
    int line = cur(p)->line;
    adv(p); /* {% */
    tok *t = cur(p);
    if (t->type != T_NAME)
        unexpected(p, "a statement name");
    enter(p);
    jnode *n = NULL;
    if (is_name(t, "if")) {
        adv(p);
        n = mk(p, N_IF, line);
        jnode *ifn = n;
        for (;;) {
            ifn->a = parse_tuple(p, false, false, NULL, false);
            expect_bend(p);
            static const char *const ends[] = {"elif", "else", "endif", NULL};
            const char *w;
            ifn->body = parse_body(p, ends, &ifn->nbody, &w);
            if (!strcmp(w, "elif")) {
                jnode *e = mk(p, N_IF, cur(p)->line);
                ifn->els = palloc(p, sizeof(jnode *));
                ifn->els[0] = e;
                ifn->nels = 1;
                ifn = e;
                continue;
            }
            if (!strcmp(w, "else")) {
                expect_bend(p);
                static const char *const ends2[] = {"endif", NULL};
                ifn->els = parse_body(p, ends2, &ifn->nels, &w);
            }
            break;
        }
    } else if (is_name(t, "for")) {
        adv(p);
        n = mk(p, N_FOR, line);
        n->a = parse_target(p, "in", false);
        if (!is_name(cur(p), "in"))
            unexpected(p, "'in'");
        adv(p);
        n->b = parse_tuple(p, false, false, "recursive", false);
        if (is_name(cur(p), "if")) {
            adv(p);
            n->c = parse_expr(p, true);
        }
        if (is_name(cur(p), "recursive"))
            pfail(p, cur(p)->line, "recursive loops are not supported");
        expect_bend(p);
        static const char *const ends[] = {"endfor", "else", NULL};
        const char *w;
        p->loop_depth++;
        n->body = parse_body(p, ends, &n->nbody, &w);
        p->loop_depth--;
        if (!strcmp(w, "else")) {
            expect_bend(p);
            static const char *const ends2[] = {"endfor", NULL};
            n->els = parse_body(p, ends2, &n->nels, &w);
        }
    } else if (is_name(t, "set")) {
        adv(p);
        jnode *target = parse_target(p, NULL, true);
        if (is_op(cur(p), '=')) {
            adv(p);
            n = mk(p, N_SET, line);
            n->a = target;
            n->b = parse_tuple(p, false, true, NULL, false);
        } else {
            if (target->kind != N_NAME && target->kind != N_NSREF)
                pfail(p, line, "block set needs a single name");
            n = mk(p, N_SETBLOCK, line);
            n->a = target;
            if (is_op(cur(p), '|'))
                n->c = parse_filter(p, NULL, false);
            expect_bend(p);
            static const char *const ends[] = {"endset", NULL};
            const char *w;
            n->body = parse_body(p, ends, &n->nbody, &w);
        }
    } else if (is_name(t, "macro")) {
        adv(p);
        n = mk(p, N_MACRO, line);
        n->name = expect_name(p);
        parse_params(p, n);
        expect_bend(p);
        static const char *const ends[] = {"endmacro", NULL};
        const char *w;
        int ld = p->loop_depth;
        p->loop_depth = 0;
        n->body = parse_body(p, ends, &n->nbody, &w);
        p->loop_depth = ld;
        macro_flags(p, n);
    } else if (is_name(t, "call")) {
        adv(p);
        n = mk(p, N_CALLBLOCK, line);
        if (is_op(cur(p), '('))
            parse_params(p, n);
        jnode *call = parse_expr(p, true);
        if (call->kind != N_CALL)
            pfail(p, line, "expected a call expression in a call block");
        n->a = call;
        expect_bend(p);
        static const char *const ends[] = {"endcall", NULL};
        const char *w;
        int ld = p->loop_depth;
        p->loop_depth = 0;
        n->body = parse_body(p, ends, &n->nbody, &w);
        p->loop_depth = ld;
        macro_flags(p, n);
    } else if (is_name(t, "filter")) {
        adv(p);
        n = mk(p, N_FILTERBLOCK, line);
        n->c = parse_filter(p, NULL, true);
        expect_bend(p);
        static const char *const ends[] = {"endfilter", NULL};
        const char *w;
        n->body = parse_body(p, ends, &n->nbody, &w);
    } else if (is_name(t, "break") || is_name(t, "continue")) {
        bool brk = is_name(t, "break");
        if (!p->loop_depth)
            pfail(p, line, "'%s' outside of a loop", brk ? "break" : "continue");
        adv(p);
        n = mk(p, brk ? N_BREAK : N_CONTINUE, line);
    } else if (is_name(t, "generation")) {
        adv(p);
        n = mk(p, N_BODY, line);
        expect_bend(p);
        static const char *const ends[] = {"endgeneration", NULL};
        const char *w;
        n->body = parse_body(p, ends, &n->nbody, &w);
    } else if (is_name(t, "with")) {
        adv(p);
        n = mk(p, N_WITH, line);
        svec names = {0};
        nvec vals = {0};
        while (cur(p)->type != T_BEND) {
            if (names.n)
                expect_op(p, ',');
            sv_push(p, &names, expect_name(p));
            expect_op(p, '=');
            nv_push(p, &vals, parse_expr(p, true));
        }
        n->names = names.v;
        n->nnames = names.n;
        n->list = vals.v;
        n->n = vals.n;
        expect_bend(p);
        static const char *const ends[] = {"endwith", NULL};
        const char *w;
        n->body = parse_body(p, ends, &n->nbody, &w);
    } else {
        pfail(p, line, "encountered unknown tag '%.*s'", (int)(t->n > 40 ? 40 : t->n), t->s);
    }
    expect_bend(p); /* the statement's (or its end tag's) %} */
    leave(p);
    return n;
}

/* Parses statements until `{% <one of ends>`; consumes `{%` and the end name. */
static jnode **parse_body(jparser *p, const char *const *ends, size_t *n_out, const char **which)
{
    nvec body = {0};
    for (;;) {
        tok *t = cur(p);
        if (t->type == T_EOF) {
            if (ends)
                pfail(p, t->line, "unexpected end of template, expected '%s'", ends[0]);
            break;
        }
        if (t->type == T_TEXT) {
            jnode *n = mk(p, N_TEXT, t->line);
            n->val = pstr(p, t->s, t->n);
            nv_push(p, &body, n);
            adv(p);
        } else if (t->type == T_VBEGIN) {
            adv(p);
            jnode *n = mk(p, N_OUT, t->line);
            n->a = parse_tuple(p, false, true, NULL, false);
            if (cur(p)->type != T_VEND)
                unexpected(p, "end of print statement");
            adv(p);
            nv_push(p, &body, n);
        } else if (t->type == T_BBEGIN) {
            tok *nm = peekt(p, 1);
            if (ends) {
                for (size_t i = 0; ends[i]; i++)
                    if (is_name(nm, ends[i])) {
                        *which = ends[i];
                        adv(p);
                        adv(p);
                        goto done;
                    }
            }
            if (nm->type == T_NAME) {
                static const char *const stray[] = {"endif", "endfor", "endset", "endmacro", "endcall",
                                                    "endfilter", "elif", "else", "endgeneration",
                                                    "endwith", NULL};
                for (size_t i = 0; stray[i]; i++)
                    if (is_name(nm, stray[i]))
                        pfail(p, nm->line, "unexpected '%s'%s%s", stray[i], ends ? ", expected " : "",
                              ends ? ends[0] : "");
            }
            nv_push(p, &body, parse_stmt(p));
        } else {
            unexpected(p, "template data");
        }
    }
done:
    *n_out = body.n;
    return body.v;
}

hr_status jp_parse(hr_tmpl *t, const char *src, size_t len, hr_err *err)
{
    jparser *p = calloc(1, sizeof *p);
    if (!p)
        return hr_err_set(err, HR_ERR_NOMEM, "out of memory");
    p->ar = &t->arena;
    p->err = err;
    if (setjmp(p->jb)) {
        free(p->t);
        free(p);
        return err ? err->status : HR_ERR_FORMAT;
    }
    /* normalise newlines; drop one trailing newline (keep_trailing_newline=False) */
    char *s = palloc(p, len + 1);
    size_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (src[i] == '\r') {
            s[n++] = '\n';
            if (i + 1 < len && src[i + 1] == '\n')
                i++;
        } else {
            s[n++] = src[i];
        }
    }
    if (n && s[n - 1] == '\n')
        n--;
    s[n] = 0;
    p->s = s;
    p->n = n;
    p->lline = 1;
    lex(p);
    const char *w = NULL;
    t->body = parse_body(p, NULL, &t->nbody, &w);
    for (size_t i = 0; i < t->nbody; i++)
        check_height(p, t->body[i], 0);
    free(p->t);
    free(p);
    return HR_OK;
}
