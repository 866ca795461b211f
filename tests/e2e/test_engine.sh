#!/bin/sh
# The engine end to end: what reruns and what does not, the cache, the lock,
# interruption, failures, resources and the inspection commands.
. "$(dirname "$0")/lib.sh"

# A three-stage pipeline: a <- b <- c, plus an independent d.
write_pipeline() {
  cat > "$1/Ftpipe" <<'P'
GREETING ?= hello
a.txt: shell in.txt
	run = cat $< > $@; echo "$(GREETING)" >> $@; echo ran-a >> runs.log
b.txt: shell a.txt
	run = tr a-z A-Z < $< > $@; echo ran-b >> runs.log
	gpus = 0
c: shell b.txt in.txt
	run = mkdir $@ && cp $^ $@/ && echo ran-c >> runs.log
d.txt: shell
	run = echo independent > $@; echo ran-d >> runs.log
P
  echo "some input" > "$1/in.txt"
}
runs() { tr '\n' ' ' < "$W/runs.log" 2>/dev/null; : > "$W/runs.log"; }

t_case "first run builds every stage, in dependency order"
W=$(t_workspace); write_pipeline "$W"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "ftpipe: 4 run, 0 restored, 0 up to date"
r=$(runs)
case "$r" in *ran-a*ran-b*ran-c*) ;; *) t_fail "not in dependency order: $r" ;; esac
case "$r" in *ran-d*) ;; *) t_fail "d did not run: $r" ;; esac
[ "$(cat "$W/c/b.txt")" = "SOME INPUT
HELLO" ] || t_fail "c/b.txt: $(cat "$W/c/b.txt")"
t_end

t_case "a second run does nothing"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "nothing to do (4 up to date)"
[ -z "$(runs)" ] || t_fail "something ran"
t_end

t_case "outputs are read-only hard links into the cache"
[ -w "$W/a.txt" ] && [ "$(id -u)" != 0 ] && t_fail "a.txt is writable"
mode=$(stat -c %a "$W/a.txt"); [ "$mode" = 444 ] || t_fail "a.txt mode $mode"
links=$(stat -c %h "$W/a.txt"); [ "$links" -ge 2 ] || t_fail "a.txt has $links links"
t_end

t_case "touch on an input with unchanged content reruns nothing"
sleep 0.01; touch "$W/in.txt"
t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do"
[ -z "$(runs)" ] || t_fail "something ran"
t_end

t_case "a changed input file reruns exactly its dependents"
echo "other input" > "$W/in.txt"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "run      a.txt (shell): input in.txt changed"
r=$(runs); [ "$r" = "ran-a ran-b ran-c " ] || t_fail "runs: $r"
t_end

t_case "changing one parameter reruns that stage and its dependents only"
sed -i 's/tr a-z A-Z/tr a-z A-Z | rev/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" -n
t_expect_contains "would run b.txt: parameter run changed"
t_expect_contains "would run c: input b.txt will be rebuilt first"
t_expect_lacks "would run a.txt"
[ -z "$(runs)" ] || t_fail "-n ran something"
t_run "$FTPIPE" -C "$W"
r=$(runs); [ "$r" = "ran-b ran-c " ] || t_fail "runs: $r"
t_end

t_case "a non-key parameter change reruns nothing"
sed -i 's/gpus = 0/memory = 1M/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do"
[ -z "$(runs)" ] || t_fail "something ran"
t_end

t_case "a command-line variable enters the key; going back restores from the cache"
t_run "$FTPIPE" -C "$W" GREETING=bonjour
r=$(runs); [ "$r" = "ran-a ran-b ran-c " ] || t_fail "runs: $r"
t_run "$FTPIPE" -C "$W"
t_expect_contains "restored a.txt from the cache"
t_expect_contains "0 run, 3 restored"
[ -z "$(runs)" ] || t_fail "something ran"
grep -q hello "$W/a.txt" || t_fail "a.txt not restored"
t_end

t_case "why names what changed"
sed -i 's/^GREETING ?= hello/GREETING ?= hi/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" why a.txt
t_expect_status 0
t_expect_contains "a.txt would run:"
t_expect_contains "parameter run changed"
t_run "$FTPIPE" -C "$W" why d.txt
t_expect_contains "d.txt is up to date"
t_end

t_case "status lists every stage with what it would do"
t_run "$FTPIPE" -C "$W" status
t_expect_status 0
t_expect_contains "a.txt"
t_expect_contains "d.txt"
t_expect_contains "up to date"
t_expect_contains "last run"
t_end

t_case "log shows a stage's last log"
t_run "$FTPIPE" -C "$W" log d.txt
t_expect_status 0
t_expect_contains "$ echo independent"
t_end

t_case "clean removes targets; the next run restores them from the cache"
t_run "$FTPIPE" -C "$W" clean
t_expect_status 0
[ -e "$W/d.txt" ] && t_fail "d.txt still there"
t_run "$FTPIPE" -C "$W" d.txt
t_expect_contains "restored d.txt from the cache"
[ "$(cat "$W/d.txt")" = independent ] || t_fail "d.txt: $(cat "$W/d.txt")"
t_end

t_case "gc --all-unreferenced frees what no current target needs"
t_run "$FTPIPE" -C "$W"
t_run "$FTPIPE" -C "$W" gc --all-unreferenced
t_expect_status 0
t_expect_contains "ftpipe gc: removed"
case "$T_OUT" in *"removed 0 cached files"*) t_fail "gc removed nothing: $T_OUT" ;; esac
t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do"
t_end

t_case "a failing stage publishes nothing, keeps its log and shows its tail"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
bad.txt: shell
	run = echo partial > $@; echo "the reason it broke" >&2; exit 3
good.txt: shell
	run = echo fine > $@
after.txt: shell bad.txt
	run = cp $< $@
P
t_run "$FTPIPE" -C "$W" -k
t_expect_status 1
t_expect_contains "FAILED   bad.txt: bad.txt: the command exited with status 3"
t_expect_contains "the reason it broke"
n=$(printf '%s\n' "$T_OUT" | grep -c "the command exited with status 3")
[ "$n" = 1 ] || t_fail "the failure message is printed $n times, not once"
t_expect_contains "log: $W/.ftpipe/work/"
t_expect_contains "ftpipe: stage bad.txt failed (the FAILED line above says why)"
t_expect_contains "1 run, 0 restored, 0 up to date, 1 failed, 1 not run because an input failed"
[ -e "$W/bad.txt" ] && t_fail "bad.txt was published"
[ -e "$W/good.txt" ] || t_fail "-k did not build good.txt"
ls "$W/.ftpipe/cache/manifests" | wc -l | grep -qx 1 || t_fail "cache holds more than good.txt"
t_run "$FTPIPE" -C "$W" log bad.txt
t_expect_contains "the reason it broke"
t_end

t_case "without -k the run stops at the first failure"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
a: shell
	run = exit 1
b: shell a
	run = touch $@
P
t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "FAILED   a"
t_end

t_case "kill -9 in the middle of a shell stage: the rerun completes, the cache never holds a partial result"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
slow.txt: shell
	run = echo first-half > $@; touch started; sleep 30; echo second-half >> $@
P
"$FTPIPE" -C "$W" > "$W/out.log" 2>&1 &
pid=$!
i=0; while [ ! -e "$W/started" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -9 $pid; wait $pid 2>/dev/null
[ -e "$W/slow.txt" ] && t_fail "a partial slow.txt was published"
[ -z "$(ls "$W/.ftpipe/cache/manifests" 2>/dev/null)" ] || t_fail "the cache holds a result"
sed -i 's/sleep 30/sleep 0/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/slow.txt")" = "first-half
second-half" ] || t_fail "slow.txt: $(cat "$W/slow.txt")"
t_end

t_case "a second concurrent run is refused, naming the process that holds the lock"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
wait.txt: shell
	run = touch started; sleep 5; touch $@
P
"$FTPIPE" -C "$W" > /dev/null 2>&1 &
pid=$!
i=0; while [ ! -e "$W/started" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "another ftpipe run (pid $pid) is using the workspace"
kill -TERM $pid; wait $pid
t_end

t_case "SIGTERM stops the running stage and keeps it resumable"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
r.txt: shell
	run = touch started; sleep 30; touch $@
P
"$FTPIPE" -C "$W" > "$W/out.log" 2>&1 &
pid=$!
i=0; while [ ! -e "$W/started" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
kill -TERM $pid; wait $pid; status=$?
[ $status = 130 ] || t_fail "exit status $status, expected 130"
grep -q "stopped  r.txt" "$W/out.log" || t_fail "no stopped line: $(cat "$W/out.log")"
ls "$W/.ftpipe/work" | grep -q . || t_fail "the work folder was not kept"
sed -i 's/sleep 30/true/' "$W/Ftpipe"
t_run "$FTPIPE" -C "$W" -n
t_expect_contains "would run r.txt"
t_end

t_case "-j 2 runs independent stages at once"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
x: shell
	run = sleep 1; touch $@
y: shell
	run = sleep 1; touch $@
P
start=$(date +%s%N)
t_run "$FTPIPE" -C "$W" -j 2
elapsed=$(( ($(date +%s%N) - start) / 1000000 ))
t_expect_status 0
[ $elapsed -lt 1900 ] || t_fail "took $elapsed ms: not in parallel"
t_end

t_case "resources are never oversubscribed"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
m1: shell
	run = date +%s%N > $@; sleep 0.5
	memory = 600M
m2: shell
	run = date +%s%N > $@; sleep 0.5
	memory = 600M
P
FTPIPE_MEMORY=1G t_run "$FTPIPE" -C "$W" -j 2
t_expect_status 0
d=$(( $(cat "$W/m1") - $(cat "$W/m2") )); d=${d#-}
[ $d -ge 450000000 ] || t_fail "started $d ns apart: ran together in 1G"
t_end

t_case "a stage needing more GPUs than the machine has fails before anything runs"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
g: shell
	run = touch $@
	gpus = 2
P
FTPIPE_GPUS=1 t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "stage g needs 2 GPUs but this machine has 1"
t_end

t_case "a stage's GPUs are taken from the engine's own CUDA_VISIBLE_DEVICES"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
one.txt: shell
	run = echo "$$CUDA_VISIBLE_DEVICES" > $@
	gpus = 1
two.txt: shell one.txt
	run = echo "$$CUDA_VISIBLE_DEVICES" > $@
	gpus = 2
P
CUDA_VISIBLE_DEVICES=2,3 t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/one.txt")" = 2 ] || t_fail "gpus = 1 got device $(cat "$W/one.txt"), not 2"
[ "$(cat "$W/two.txt")" = 2,3 ] || t_fail "gpus = 2 got devices $(cat "$W/two.txt"), not 2,3"
t_end

t_case "declared environment variables enter the key"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
e.txt: shell
	run = echo "$$MY_SETTING" > $@
	env = MY_SETTING
P
MY_SETTING=one t_run "$FTPIPE" -C "$W"
MY_SETTING=one t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do"
MY_SETTING=two t_run "$FTPIPE" -C "$W"
t_expect_contains "1 run"
[ "$(cat "$W/e.txt")" = two ] || t_fail "e.txt: $(cat "$W/e.txt")"
t_end

t_case "a path ftpipe did not make is never replaced"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
mine.txt: shell
	run = echo generated > $@
P
echo "precious" > "$W/mine.txt"
t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "mine.txt already exists and was not made by ftpipe"
[ "$(cat "$W/mine.txt")" = precious ] || t_fail "mine.txt was overwritten"
t_end

t_case "a cycle is refused with its path"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
a: shell c
	run = touch $@
b: shell a
	run = touch $@
c: shell b
	run = touch $@
P
t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "dependency cycle:"
t_expect_contains "Ftpipe:1:1) needs"
t_end

t_case "a missing input file is named with the stage that needs it"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
out: shell data/missing.json
	run = cp $< $@
P
t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "Ftpipe:1:12: input 'data/missing.json' of stage out does not exist, and no stage makes it"
t_end

t_case "an unknown target suggests the nearest"
W=$(t_workspace); write_pipeline "$W"
t_run "$FTPIPE" -C "$W" b.tx
t_expect_status 1
t_expect_contains "no stage makes 'b.tx'"
t_expect_contains "did you mean 'b.txt'?"
t_end

t_case "a terminal gets a live line per running stage; a pipe gets plain lines"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
slow: shell
	run = sleep 1.2; touch $@
P
script -qec "$FTPIPE -C $W" /dev/null > "$W/tty.log" 2>&1
grep -q "$(printf '\033')\[2K" "$W/tty.log" || t_fail "no live line on a terminal: $(cat -v "$W/tty.log")"
grep -q "slow .*shell, 1 s" "$W/tty.log" || t_fail "the live line lacks the time spent: $(cat -v "$W/tty.log")"
"$FTPIPE" -C "$W" clean > /dev/null
t_run "$FTPIPE" -C "$W"
case "$T_OUT" in *"$(printf '\033')"*) t_fail "escape codes on a pipe" ;; esac
t_expect_contains "restored slow from the cache"
t_end

t_case "no pipeline file says so"
W=$(t_workspace)
t_run "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "no pipeline file"
t_end
