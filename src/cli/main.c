/* main.c - the `hearth` binary: dispatches to one subcommand per file
 * (cmd_*.c). Only the CLI prints errors and chooses exit codes. */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} commands[] = {
    /* one line per subcommand; keep sorted by name */
    {"bench", cmd_bench, "prompt-processing and generation speed (like llama-bench)"},
    {"cost", cmd_cost, "monthly cost of self-hosting vs APIs, from the usage log"},
    {"detokenize", cmd_detokenize, "print the text of token ids"},
    {"fit", cmd_fit, "memory, max users and decode speed of a model on given hardware"},
    {"inspect", cmd_inspect, "show a GGUF model's architecture, tensors and metadata"},
    {"logits", cmd_logits, "teacher-forced logits of a token sequence, as raw float32"},
    {"models", cmd_models, "the model catalog, hardware tiers and API prices"},
    {"pilot", cmd_pilot, "parallel pilot report: agreement, latency, errors, cost per route, and a verdict"},
    {"run", cmd_run, "generate text from a prompt"},
    {"serve", cmd_serve, "OpenAI-compatible HTTP server"},
    {"synth", cmd_synth, "write a GGUF with a real model's shapes and random weights"},
    {"template", cmd_template, "render a chat template"},
    {"tokenize", cmd_tokenize, "print the token ids of a text"},
};

static void usage(FILE *f)
{
    fprintf(f, "usage: hearth <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-12s %s\n", commands[i].name, commands[i].help);
    fprintf(f, "\n'hearth <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("hearth 0.1.0\n");
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "hearth: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
