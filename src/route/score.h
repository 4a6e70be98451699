/* score.h - agreement between a primary answer and a shadow answer (the
 * parallel pilot). Pure functions over NUL-terminated UTF-8 text.
 *
 * Normalisation (for exact match and F1): ASCII letters lower-cased,
 * every run of whitespace one space, leading/trailing whitespace and
 * punctuation removed. F1 is over whitespace tokens (a multiset; both empty
 * is 1). JSON agreement parses both answers (a ```json fence is allowed)
 * and compares their leaves as path=value pairs: |common| / |union|. */
#ifndef HR_ROUTE_SCORE_H
#define HR_ROUTE_SCORE_H

#include <stddef.h>

/* Normalised copy (malloc'd), or NULL when out of memory. */
char *hr_score_normalize(const char *s);
/* 1 when equal after normalisation, else 0. */
double hr_score_exact(const char *a, const char *b);
/* Token-level F1 in [0, 1]. */
double hr_score_f1(const char *a, const char *b);
/* Key/value agreement in [0, 1]; -1 unless both parse as JSON objects or arrays. */
double hr_score_json(const char *a, const char *b);

/* The judge prompt: which of answers A and B to `question` is better.
 * malloc'd; the texts are embedded as they are. */
char *hr_score_judge_prompt(const char *question, const char *answer_a, const char *answer_b);
/* The verdict in a judge's reply: 'A', 'B', 'T' (tie) or 0 when unclear. */
int hr_score_judge_verdict(const char *reply);

#endif
