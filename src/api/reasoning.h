/* reasoning.h - splitting a model's reply into reasoning_content and
 * content, as text streams in.
 *
 * Two formats:
 * - THINK: text between <think> and </think> is reasoning (Qwen3, QwQ, the
 *   R1 distills). Newlines right after </think> are dropped.
 * - HARMONY (gpt-oss): the reply is a sequence of messages
 *   `<|start|>ROLE<|channel|>NAME<|message|>BODY<|end|>`; the last one ends
 *   with <|return|> or <|call|> instead of <|end|>. Bodies of the `analysis`
 *   channel are reasoning, bodies of any other channel (`final`,
 *   `commentary`) content; headers and markers are dropped. Text outside a
 *   message goes to content, so nothing the model wrote is lost; a header
 *   that never reaches <|message|> is content too.
 *
 * Markers may be cut anywhere between feeds (a partial marker is held back
 * until it completes or cannot). The splitter is a plain value: no
 * allocation of its own; output goes to the caller's buffers.
 *
 * Choosing the splitter: hr_reason_kind_for() from the model's vocabulary
 * and chat template; the server stores it in hr_api_model.reasoning. */
#ifndef HR_API_REASONING_H
#define HR_API_REASONING_H

#include <stdbool.h>
#include <stddef.h>

#include "tok/vocab.h"

struct hr_api_buf;

typedef enum {
    HR_REASON_OFF = 0,  /* all text is content */
    HR_REASON_THINK = 1,
    HR_REASON_HARMONY = 2,
} hr_reason_kind;

/* HARMONY when the vocabulary has the harmony markers <|start|>,
 * <|channel|>, <|message|> and <|end|> as control tokens; else THINK when
 * the template (may be NULL) or the vocabulary has <think>; else OFF. */
hr_reason_kind hr_reason_kind_for(const hr_vocab *v, const char *tmpl_src);

/* THINK splitter (also used alone). */
typedef struct {
    bool in_think;
    bool after_close;
    char hold[16];
    size_t n_hold;
} hr_think;

void hr_think_init(hr_think *t, bool start_in_think);
bool hr_think_feed(hr_think *t, const char *s, size_t n, struct hr_api_buf *content, struct hr_api_buf *reasoning);
bool hr_think_flush(hr_think *t, struct hr_api_buf *content, struct hr_api_buf *reasoning);

/* Either splitter. */
typedef struct {
    hr_reason_kind kind;
    hr_think think;
    /* harmony */
    int state;           /* outside a message, in a header, in a body */
    bool to_reasoning;   /* the body being read is the analysis channel's */
    bool in_channel;     /* header: reading the channel name */
    bool discard;        /* while replaying the prompt: no output */
    char hold[16];       /* a partial marker */
    size_t n_hold;
    char chan[16];       /* the channel name so far (truncated) */
    size_t n_chan;
    char head[128];      /* header text, given back as content if no <|message|> follows */
    size_t n_head;
} hr_reason;

/* `prompt` (may be NULL) is the rendered prompt the reply continues: for
 * THINK the reply starts inside <think> when the prompt's last <think> is
 * not closed; for HARMONY the prompt's last message sets the state (the
 * usual generation prompt `<|start|>assistant` leaves a header open). */
void hr_reason_init(hr_reason *r, hr_reason_kind kind, const char *prompt);
/* false: an output buffer refused the bytes (its cap). */
bool hr_reason_feed(hr_reason *r, const char *s, size_t n, struct hr_api_buf *content,
                    struct hr_api_buf *reasoning);
/* End of the reply: what is held back is text. */
bool hr_reason_flush(hr_reason *r, struct hr_api_buf *content, struct hr_api_buf *reasoning);

#endif
