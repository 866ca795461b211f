#!/bin/sh
# The command line (ftpipe/cli/main.c): options anywhere among the words, as make
# takes them; VAR=value words; "--"; the messages of a usage error (exit 2); and
# `ftpipe help`, which lists every command, encode and decode included.
. "$(dirname "$0")/lib.sh"

W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
WORD ?= plain
out.txt: shell
	run = echo $(WORD) > $@
P

t_case "help lists the commands, encode and decode included, then the stage kinds"
t_run "$FTPIPE" help
t_expect_status 0
t_expect_contains "encode --tokenizer PATH [--jsonl] [--threads N]"
t_expect_contains "decode --tokenizer PATH [--jsonl]"
t_expect_contains "hash [--threads N] PATH..."
t_expect_contains "Stage kinds"
t_end

t_case "options after words, joined or apart, and long forms"
t_run "$FTPIPE" WORD=late out.txt -C "$W" --dry-run -j2
t_expect_status 0
t_expect_contains "would run out.txt: new: never built"
t_run "$FTPIPE" -C "$W" -j 2 -k WORD=given
t_expect_status 0
[ "$(cat "$W/out.txt")" = "given" ] || t_fail "out.txt: $(cat "$W/out.txt")"
t_end

t_case "after --, words are still targets and VAR=value overrides"
t_run "$FTPIPE" -C "$W" -- WORD=after out.txt
t_expect_status 0
[ "$(cat "$W/out.txt")" = "after" ] || t_fail "out.txt: $(cat "$W/out.txt")"
t_end

t_case "usage errors name the option and exit 2"
t_run "$FTPIPE" -C "$W" -x
t_expect_status 2
t_expect_contains "ftpipe: unknown option -x"
t_expect_contains "usage: ftpipe [options]"
t_run "$FTPIPE" -C "$W" --no-such-option
t_expect_status 2
t_expect_contains "ftpipe: unknown option --no-such-option"
t_run "$FTPIPE" -C "$W" -j 0
t_expect_status 2
t_expect_contains "-j needs a number of jobs between 1 and 1024"
t_run "$FTPIPE" -C "$W" -j
t_expect_status 2
t_expect_contains "-j needs a number of jobs between 1 and 1024"
t_run "$FTPIPE" -C
t_expect_status 2
t_expect_contains "-C needs a folder"
t_run "$FTPIPE" -C "$W" -f
t_expect_status 2
t_expect_contains "-f needs a file"
t_end

t_case "--help prints the usage and exits 0"
t_run "$FTPIPE" --help
t_expect_status 0
t_expect_contains "usage: ftpipe [options] [TARGET...] [VAR=value...]"
t_end
