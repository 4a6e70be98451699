/* cli.h - the `hearth` subcommands. Each returns the process exit status
 * (0 ok, 1 error with a one-line message on stderr, 2 usage). */
#ifndef HR_CLI_CLI_H
#define HR_CLI_CLI_H

int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_template(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_fit(int argc, char **argv);
int cmd_cost(int argc, char **argv);
int cmd_models(int argc, char **argv);
int cmd_pilot(int argc, char **argv);

#endif
