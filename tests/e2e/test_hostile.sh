#!/bin/sh
# Hostile and clumsy input: paths that would leave the workspace, files that are
# not pipelines, downloads that never end, full disks and racing starts. Each case
# here was a defect once; nothing escapes, nothing grows without bound, and every
# failure keeps its reason.
. "$(dirname "$0")/lib.sh"

t_case "a target that climbs out through a/../.. is refused at its line, and nothing is written outside"
P=$(t_workspace); W="$P/ws"; mkdir "$W"
printf 'ok.txt: shell\n\trun = echo ok > $@\na/../../escape: shell\n\trun = echo escaped > $@\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "Ftpipe:3:1: target 'a/../../escape' must be a path inside the pipeline's folder"
[ ! -e "$P/escape" ] || t_fail "the stage published $P/escape"
touch "$P/escape"
t_run "$FTPIPE" -C "$W" clean
t_expect_fail
[ -e "$P/escape" ] || t_fail "ftpipe clean deleted $P/escape"
t_end

t_case "a/../b names the same target as b (normalised before the graph is built)"
W=$(t_workspace)
printf 'b.txt: shell\n\trun = echo b > $@\nc.txt: shell a/../b.txt\n\trun = cat $< > $@\nd: shell\n\trun = mkdir -p $@\nd/../d2.txt: shell\n\trun = echo x > $@\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/c.txt" 2>/dev/null)" = b ] || t_fail "c.txt: $(cat "$W/c.txt" 2>&1)"
[ -f "$W/d2.txt" ] || t_fail "d/../d2.txt was not made as d2.txt"
t_end

t_case "a stage may not target the pipeline file itself"
W=$(t_workspace)
printf 'Ftpipe: shell\n\trun = echo x > $@\n' > "$W/Ftpipe"
cp "$W/Ftpipe" "$W/before"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "Ftpipe:1:1: target 'Ftpipe' is the pipeline file"
cmp -s "$W/Ftpipe" "$W/before" || t_fail "the pipeline file changed"
t_end

t_case "a NUL byte in the pipeline file is refused at its line (it cut a run = line short)"
W=$(t_workspace)
printf 'a.txt: shell\n\trun = echo a > $@\0; echo hidden > b.txt\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "Ftpipe:2: a NUL byte: a pipeline file is text"
[ ! -e "$W/a.txt" ] || t_fail "the stage ran"
t_end

t_case "names with control bytes or invalid UTF-8 are printed escaped"
W=$(t_workspace)
printf 'x\033[31mred\377.txt: shell\n\trun = echo a > "$@"\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_contains 'x\x1b[31mred\xff.txt'
case "$T_OUT" in *"$(printf '\033')"*|*"$(printf '\377')"*) t_fail "a raw control or invalid byte reached the terminal" ;; esac
t_run "$FTPIPE" -C "$W" status
t_expect_contains 'x\x1b[31mred\xff.txt'
case "$T_OUT" in *"$(printf '\033')"*) t_fail "status printed a raw escape byte" ;; esac
t_end

t_case "an input that cannot be read is reported at its line"
W=$(t_workspace)
mkfifo "$W/pipe.in"
printf 'out.txt: shell\n\trun = echo > $@\n\nb.txt: shell out.txt pipe.in\n\trun = cat $< > $@\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
# The reason is on the stage's FAILED line, once, and the end points back to it
# (the reason was once lost: an empty "ftpipe: ").
t_expect_contains "FAILED   b.txt: $W/Ftpipe:4:22: stage b.txt: input pipe.in"
t_expect_contains "ftpipe: stage b.txt failed (the FAILED line above says why)"
t_end

t_case "include of a device or a huge file is refused before it is read"
W=$(t_workspace)
printf 'include /dev/zero\n' > "$W/Ftpipe"
t_run timeout 30 "$FTPIPE" -C "$W" -n
t_expect_fail
t_expect_contains "Ftpipe:1:9: cannot include /dev/zero: it is not a regular file"
head -c 5000000 /dev/zero | tr '\0' '#' > "$W/huge"
printf 'include huge\n' > "$W/Ftpipe"
t_run timeout 30 "$FTPIPE" -C "$W" -n
t_expect_fail
t_expect_contains "/huge: it is 5000000 bytes, more than a pipeline file's limit"
t_end

t_case "include of a file that is not a pipeline quotes none of it"
W=$(t_workspace)
printf 'root:$6$s3cr3tHash$abc:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n' > "$W/shadow"
printf 'root:x:0:0:root:/root:/bin/bash\n' > "$W/passwd"
for f in shadow passwd; do
  printf 'include %s\n' "$f" > "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W" -n
  t_expect_fail
  t_expect_contains "$f:1: this file does not read as a pipeline or rules file"
  t_expect_lacks "s3cr3t"
  t_expect_lacks "/bin/bash"
  t_expect_lacks "root"
done
t_end

t_case "an archive refused at max_size leaves none of its bytes in .ftpipe/work"
W=$(t_workspace)
mkdir "$W/src"
head -c 700000 /dev/urandom > "$W/src/one.bin"
head -c 700000 /dev/urandom > "$W/src/two.bin"
tar -cf "$W/data.tar" -C "$W/src" one.bin two.bin
printf 'unpacked: extract data.tar\n\tmax_size = 1M\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "past the size limit of 1.0 MiB"
kept=$(find "$W/.ftpipe/work" -name '*.bin' | head -3)
[ -z "$kept" ] || t_fail "unpacked bytes are kept: $kept"
t_end

# A server whose bodies never end.
python3 "$(dirname "$0")/endless_server.py" "$T_ROOT/endless.port" &
ENDLESS_PID=$!
trap 'kill $ENDLESS_PID 2>/dev/null; chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT
for _ in $(seq 100); do [ -s "$T_ROOT/endless.port" ] && break; sleep 0.1; done
ENDLESS="http://127.0.0.1:$(cat "$T_ROOT/endless.port")"
# Bytes the stage's work folder holds (what an endless body wrote).
work_bytes() { du -sb "$1/.ftpipe/work" 2>/dev/null | cut -f1; }

t_case "an endless body stops at the declared size, with a clear error"
W=$(t_workspace)
printf 'data: download\n\turl = %s/file.bin\n\tsize = 5000000\n\ttimeout = 20s\n' "$ENDLESS" > "$W/Ftpipe"
t_run timeout 60 "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the server sent more than the declared size of 5000000 bytes; stopped there"
[ "${T_STATUS}" != 124 ] || t_fail "still downloading after 60 s"
[ "$(work_bytes "$W")" -lt 20000000 ] || t_fail "the work folder holds $(work_bytes "$W") bytes"
t_end

t_case "an endless body with no declared size stops at max_size"
W=$(t_workspace)
printf 'data: download\n\turl = %s/file.bin\n\tmax_size = 8M\n\ttimeout = 20s\n' "$ENDLESS" > "$W/Ftpipe"
t_run timeout 60 "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "the server sent more than max_size (8.0 MiB) without saying how large the file is"
[ "${T_STATUS}" != 124 ] || t_fail "still downloading after 60 s"
[ "$(work_bytes "$W")" -lt 20000000 ] || t_fail "the work folder holds $(work_bytes "$W") bytes"
t_end

# A small tmpfs to fill (root only: mount).
FULL="$T_ROOT/full"
mkdir -p "$FULL"
if [ "$(id -u)" = 0 ] && mount -t tmpfs -o size=8M tmpfs "$FULL" 2>/dev/null; then
  trap 'kill $ENDLESS_PID 2>/dev/null; umount "$FULL" 2>/dev/null; chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT
  HAVE_TMPFS=1
else
  HAVE_TMPFS=0
fi
skip_without_tmpfs() { echo "ok $1 # SKIP needs root to mount a tmpfs"; }

CASE="a stage that fills the disk fails naming the file system, its out/ is freed, and an independent stage still finishes"
if [ "$HAVE_TMPFS" = 1 ]; then
  t_case "$CASE"
  W="$FULL/ws1"; mkdir "$W"
  printf 'big: shell\n\trun = mkdir $@ && dd if=/dev/zero of=$@/fill bs=64k count=1000\nsmall.txt: shell\n\trun = sleep 2; seq 1 100000 > $@\n' > "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W" -k -j2
  t_expect_fail
  t_expect_contains "FAILED   big: no space left on $FULL: free some space"
  t_expect_contains "done     small.txt"
  left=$(find "$W/.ftpipe/work" -path '*/out/*' | head -3)
  [ -z "$left" ] || t_fail "a failed stage's output is kept: $left"
  t_run "$FTPIPE" -C "$W" status
  t_expect_contains "the last run failed"
  t_expect_lacks "running (or killed)"
  t_end
  rm -rf "$W"
else
  skip_without_tmpfs "$CASE"
fi

CASE="a failure is recorded while the disk stays full"
if [ "$HAVE_TMPFS" = 1 ]; then
  t_case "$CASE"
  W="$FULL/ws2"; mkdir "$W"
  printf 'first.txt: shell\n\trun = dd if=/dev/zero of=filler bs=64k count=1000 2>/dev/null; exit 1\n' > "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W"
  t_expect_fail
  t_expect_contains "FAILED   first.txt: no space left on $FULL"
  t_run "$FTPIPE" -C "$W" status
  t_expect_contains "the last run failed"
  t_expect_lacks "running (or killed)"
  t_expect_lacks "never built"
  t_end
  rm -rf "$W"
else
  skip_without_tmpfs "$CASE"
fi

CASE="failures are recorded while another stage keeps the disk full, taking every byte freed"
if [ "$HAVE_TMPFS" = 1 ]; then
  t_case "$CASE"
  # hog fills the file system and goes on taking whatever is freed until both
  # other stages have ended (and 2 s more): space freed for the database by
  # deleting a file would be gone before the database could use it.
  W="$FULL/ws3"; mkdir "$W"
  MARK="$T_ROOT/late-ended"
  cat > "$W/hog.sh" <<EOF
mkdir "\$1"; n=0
while [ ! -e "$MARK" ] && [ \$n -lt 3000 ]; do cat /dev/zero >> "\$1/fill" 2>/dev/null; n=\$((n + 1)); sleep 0.01; done
end=\$((\$(date +%s) + 2))
while [ "\$(date +%s)" -lt \$end ]; do cat /dev/zero >> "\$1/fill" 2>/dev/null; sleep 0.01; done
exit 1
EOF
  printf 'hog: shell hog.sh\n\trun = sh $< $@\nlate1.txt: shell\n\trun = sleep 1; exit 3\nlate2.txt: shell\n\trun = sleep 2; echo > $@; touch %s; exit 1\n' "$MARK" > "$W/Ftpipe"
  t_run "$FTPIPE" -C "$W" -k -j3
  t_expect_fail
  t_expect_contains "FAILED   late1.txt"
  t_expect_contains "FAILED   late2.txt"
  t_expect_contains "FAILED   hog: no space left on $FULL"
  t_expect_lacks "state database"
  t_run "$FTPIPE" -C "$W" status
  [ "$(printf '%s\n' "$T_OUT" | grep -c 'the last run failed')" = 3 ] || t_fail "not every failure was recorded: $T_OUT"
  t_expect_lacks "running (or killed)"
  t_end
  rm -rf "$W" "$MARK"
else
  skip_without_tmpfs "$CASE"
fi

t_case "a run refused the instant after another took the lock still names the holder's pid"
# The holder has the lock and has written nothing yet: the moment in which the
# loser of a race used to read an empty file and say "pid unknown".
W=$(t_workspace)
printf 'a.txt: shell\n\trun = echo a > $@\n' > "$W/Ftpipe"
mkdir -p "$W/.ftpipe"
python3 -c '
import fcntl, os, sys, time
f = open(sys.argv[1], "a")
fcntl.flock(f, fcntl.LOCK_EX)  # either kind of lock a run may take
fcntl.lockf(f, fcntl.LOCK_EX)
open(sys.argv[1] + ".held", "w").close()
time.sleep(30)' "$W/.ftpipe/lock" &
HOLDER=$!
for _ in $(seq 100); do [ -e "$W/.ftpipe/lock.held" ] && break; sleep 0.1; done
t_run "$FTPIPE" -C "$W"
kill $HOLDER 2>/dev/null; wait $HOLDER 2>/dev/null
t_expect_fail
t_expect_contains "another ftpipe run (pid $HOLDER) is using the workspace"
t_expect_lacks "pid unknown"
[ ! -e "$W/a.txt" ] || t_fail "the stage ran while the lock was held"
t_end

t_case "of many simultaneous starts one runs, and every other names the holder's pid"
W=$(t_workspace)
printf 'slow.txt: shell\n\trun = sleep 3; echo done > $@; echo ran >> runs.log\n' > "$W/Ftpipe"
mkdir "$W/out"
i=0; pids=""
while [ $i -lt 20 ]; do "$FTPIPE" -C "$W" > "$W/out/$i" 2>&1 & pids="$pids $!"; i=$((i + 1)); done
for p in $pids; do wait "$p"; done
[ "$(wc -l < "$W/runs.log")" = 1 ] || t_fail "the stage ran $(wc -l < "$W/runs.log") times"
unknown=$(grep -l "pid unknown" "$W/out"/* | wc -l)
[ "$unknown" = 0 ] || t_fail "$unknown of 20 refusals say \"pid unknown\""
named=$(grep -l "another ftpipe run (pid [0-9][0-9]*) is using the workspace" "$W/out"/* | wc -l)
[ "$named" -ge 1 ] || t_fail "no refusal names a pid: $(cat "$W/out"/* | head -5)"
t_end
