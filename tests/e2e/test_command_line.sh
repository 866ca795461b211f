#!/bin/sh
# The command line's own words: help, --version, dag, targets named like
# commands, and the live line's overall progress.
. "$(dirname "$0")/lib.sh"

t_case "help shows the usage, the commands and the kinds"
t_run "$FTPIPE" help
t_expect_status 0
t_expect_contains "usage: ftpipe [options] [TARGET...] [VAR=value...]"
t_expect_contains "metrics [--all] [--json|--csv] [TARGET...]"
t_expect_contains "dag [--dot]"
t_expect_contains "train"
t_expect_contains "evaluate"
t_end

t_case "--version prints the version"
t_run "$FTPIPE" --version
t_expect_status 0
echo "$T_OUT" | grep -Eq '^ftpipe [0-9]+\.[0-9]+\.[0-9]+$' || t_fail "--version: $T_OUT"
t_end

W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
a.txt: shell in.txt
	run = cp $< $@
"b".txt: shell a.txt in.txt
	run = cat $^ > $@
P
echo in > "$W/in.txt"

t_case "dag prints each stage with its kind and inputs, inputs first"
t_run "$FTPIPE" -C "$W" dag
t_expect_status 0
[ "$T_OUT" = 'a.txt (shell) <- in.txt
"b".txt (shell) <- a.txt in.txt' ] || t_fail "dag: $T_OUT"
t_end

t_case "dag --dot prints a Graphviz graph with quotes escaped"
t_run "$FTPIPE" -C "$W" dag --dot
t_expect_status 0
t_expect_contains 'digraph ftpipe {'
t_expect_contains '"a.txt" -> "\"b\".txt";'
t_expect_contains '"in.txt" [shape=note];'
t_run "$FTPIPE" -C "$W" dag --svg
t_expect_status 1
t_expect_contains "dag takes --dot"
t_end

t_case "a target named like a command is built; -- makes any word a target"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
clean: shell
	run = mkdir $@ && echo tidy > $@/note
P
t_run "$FTPIPE" -C "$W" clean
t_expect_status 0
t_expect_contains "done     clean"
[ "$(cat "$W/clean/note")" = tidy ] || t_fail "clean/note missing"
t_run "$FTPIPE" -C "$W" -- status
t_expect_status 1
t_expect_contains "no stage makes 'status'"
t_end

t_case "the live line shows the stages settled of all and the time elapsed"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
first.txt: shell
	run = echo 1 > $@
slow.txt: shell first.txt
	run = sleep 1.5; cp $< $@
P
T_OUT=$(TERM=xterm script -qec "$FTPIPE -C $W" /dev/null 2>&1)
t_expect_contains "[1/2 stages] 0m0"
t_expect_contains "s elapsed"
t_end
