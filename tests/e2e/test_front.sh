#!/bin/sh
# The two programs (ftpipe/cli/front_main.c): `ftpipe` answers a no-op, -n and
# `ftpipe status` from the last complete build's record without loading the
# libraries stages use, and hands everything else to ftpipe-full beside it, which
# does not read the record a second time and leaves no trace of the handing in a
# stage's environment. Without a runnable ftpipe-full, the record still answers,
# and anything else stops with a message that says where ftpipe-full belongs.
. "$(dirname "$0")/lib.sh"
DIR=$(dirname "$FTPIPE")
FULL="$DIR/ftpipe-full"

t_case "ftpipe loads none of the libraries stages use; ftpipe-full does"
front=$(ldd "$FTPIPE")
full=$(ldd "$FULL")
for lib in libcurl libarchive libopenblas libpcre2 libjpeg libyaml; do
  case "$front" in *"$lib"*) t_fail "ftpipe loads $lib" ;; esac
  case "$full" in *"$lib"*) ;; *) t_fail "ftpipe-full does not load $lib: is this the whole program?" ;; esac
done
t_end

# Two programs in a folder of their own, so that ftpipe-full can be taken away.
BIN="$T_ROOT/bin"
mkdir -p "$BIN"
cp -p "$FTPIPE" "$FULL" "$BIN/"
W=$(t_workspace)
printf 'one\n' > "$W/in.txt"
cat > "$W/Ftpipe" <<'P'
mid.txt: shell in.txt
	run = cat $< > $@
out.txt: shell mid.txt
	run = env > $@
P

t_case "a run ftpipe cannot answer is handed to ftpipe-full, which builds; the hand-over is not in a stage's environment"
t_run "$BIN/ftpipe" -C "$W"
t_expect_status 0
t_expect_contains "2 run"
grep -q FTPIPE_RECORD_CHECKED "$W/out.txt" && t_fail "a stage saw FTPIPE_RECORD_CHECKED"
t_end

# ftpipe-full made unrunnable: its stat, which the question holds, stays as it was.
t_case "the no-op, -n and status are answered by ftpipe alone: ftpipe-full cannot run"
chmod a-x "$BIN/ftpipe-full"
t_run "$BIN/ftpipe" -C "$W"
t_expect_status 0
t_expect_contains "nothing to do (2 up to date)"
t_run "$BIN/ftpipe" -C "$W" -n
t_expect_status 0
t_expect_contains "nothing to do (2 up to date)"
t_run "$BIN/ftpipe" -C "$W" status
t_expect_status 0
t_expect_contains "out.txt                          shell    up to date"
t_expect_contains ": done in "
t_end

t_case "without a runnable ftpipe-full, what the record cannot answer stops with a message"
printf 'two\n' > "$W/in.txt"
t_run "$BIN/ftpipe" -C "$W"
t_expect_status 127
t_expect_contains "ftpipe: cannot run $BIN/ftpipe-full (Permission denied): it belongs beside ftpipe"
t_run "$BIN/ftpipe" --version
t_expect_status 127
t_end

t_case "status answered from the record prints what the planned status prints"
chmod a+x "$BIN/ftpipe-full"
t_run "$BIN/ftpipe" -C "$W"
t_expect_status 0
t_expect_contains "2 run"
"$BIN/ftpipe" -C "$W" status > "$T_ROOT/answered" 2>&1 || t_fail "status failed"
FTPIPE_RECORD_CHECKED=1 "$BIN/ftpipe-full" -C "$W" status > "$T_ROOT/planned" 2>&1 || t_fail "planned status failed"
cmp -s "$T_ROOT/answered" "$T_ROOT/planned" ||
  t_fail "they differ: $(diff "$T_ROOT/answered" "$T_ROOT/planned" | head -6)"
grep -q "last run" "$T_ROOT/answered" || t_fail "no last run in: $(cat "$T_ROOT/answered")"
t_end

t_case "ftpipe-full run by itself answers from the record too"
t_run "$BIN/ftpipe-full" -C "$W"
t_expect_status 0
t_expect_contains "nothing to do (2 up to date)"
t_end
