#!/bin/sh
# A large input (a 2 GiB sparse file, so the test stays fast) is hashed once;
# a rerun answers it from the stat cache and reads none of it; `touch` costs one
# rehash, then nothing. Measured with FTPIPE_STATS=1: the bytes of files the
# process hashed (its reads of inputs are mapped) and rchar from /proc/self/io
# (every byte read() returned).
. "$(dirname "$0")/lib.sh"

W=$(t_workspace)
truncate -s 2G "$W/model.bin"
# A file changed in the last 50 ms is hashed but not remembered (its mtime could
# still move within one tick of the file system's clock): wait that out.
sleep 0.2
cat > "$W/Ftpipe" <<'P'
summary.txt: shell model.bin
	run = ls -l $< | wc -l > $@
P
hashed() { echo "$T_OUT" | sed -n 's/.* hashed \([0-9]*\) bytes of files.*/\1/p'; }
read_bytes() { echo "$T_OUT" | sed -n 's/.* read \([0-9]*\) bytes.*/\1/p'; }

t_case "the first run hashes the 2 GiB input"
T_OUT=$(FTPIPE_STATS=1 "$FTPIPE" -C "$W" 2>&1); T_STATUS=$?
t_expect_status 0
t_expect_contains "ftpipe: 1 run, 0 restored, 0 up to date"
# The input, and the stage's few-byte output when it is stored.
[ "$(hashed)" -ge 2147483648 ] && [ "$(hashed)" -lt 2147487744 ] ||
  t_fail "hashed $(hashed) bytes, expected the 2 GiB input: $T_OUT"
t_end

t_case "a rerun reads none of it"
T_OUT=$(FTPIPE_STATS=1 "$FTPIPE" -C "$W" 2>&1); T_STATUS=$?
t_expect_status 0
t_expect_contains "nothing to do (1 up to date)"
[ "$(hashed)" = 0 ] || t_fail "hashed $(hashed) bytes: $T_OUT"
[ "$(read_bytes)" -lt 1048576 ] || t_fail "read $(read_bytes) bytes"
t_end

t_case "touch costs one rehash, then nothing"
touch "$W/model.bin"
sleep 0.2
T_OUT=$(FTPIPE_STATS=1 "$FTPIPE" -C "$W" 2>&1); T_STATUS=$?
t_expect_status 0
t_expect_contains "nothing to do (1 up to date)"
[ "$(hashed)" = 2147483648 ] || t_fail "hashed $(hashed) bytes after touch, expected one rehash: $T_OUT"
T_OUT=$(FTPIPE_STATS=1 "$FTPIPE" -C "$W" 2>&1); T_STATUS=$?
t_expect_contains "nothing to do (1 up to date)"
[ "$(hashed)" = 0 ] || t_fail "hashed $(hashed) bytes after the rehash: $T_OUT"
[ "$(read_bytes)" -lt 1048576 ] || t_fail "read $(read_bytes) bytes"
t_end
