/* commands: the subcommands of the ftpipe program besides running a pipeline.
 * Each takes the arguments after its name and returns the process exit status;
 * it prints its own output and, on failure, leaves the reason in ft_error. */
#ifndef FTPIPE_COMMANDS_H
#define FTPIPE_COMMANDS_H

#include "ftpipe/engine/session.h"

/* ftpipe hash [--threads N] PATH...: content hashes (a file's equals xxh128sum's for files up to
 * 64 MiB; a folder's is its manifest hash, as stage keys use). */
int ft_command_hash(int argc, char **argv);
/* ftpipe encode --tokenizer PATH [--jsonl]: text on stdin -> token ids. */
int ft_command_encode(int argc, char **argv);
/* ftpipe decode --tokenizer PATH: token ids on stdin -> text. */
int ft_command_decode(int argc, char **argv);
/* ftpipe render --tokenizer PATH --template NAME: a conversation (JSON on stdin)
 * -> its text, ids and loss mask as tokenize encodes it. */
int ft_command_render(int argc, char **argv);
/* ftpipe import CONFIG.yaml [-o FILE]: a LLaMA-Factory training YAML -> a
 * pipeline; ftpipe import --keys: what each key becomes. */
int ft_command_import(int argc, char **argv);
/* ftpipe push|pull [TARGET...], ftpipe remote status [TARGET...]: the remote cache
 * by hand (invocation->command is push, pull or remote). */
int ft_command_remote(const ft_invocation *invocation);
/* ftpipe lock [--update] [TARGET...]: writes PIPELINE.lock (lock_file.h). */
int ft_command_lock(const ft_invocation *invocation);

#endif
