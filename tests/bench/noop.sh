#!/bin/sh
# The no-op build: a 10,000-stage pipeline of shell stages over small files
# (chains of ten), built once, then a rerun that has nothing to do — ftpipe
# against GNU make on the equivalent Makefile, in the same run. Prints the
# medians and the ratio ftpipe/make (below 1: ftpipe is faster), and the first
# build's time against make's running the same recipes; then `ftpipe -n` and
# `ftpipe status` on the built pipeline, the CPU times of the no-op (both tools)
# and of status where perf is installed, and the no-op's phases (FTPIPE_STATS=1).
#   STAGES=10000 RUNS=7 FIRST_RUNS=7 sh tests/bench/noop.sh
set -e
cd "$(dirname "$0")/../.."
FTPIPE=${FTPIPE:-$(pwd)/build/ftpipe}
STAGES=${STAGES:-10000}
RUNS=${RUNS:-7}
FIRST_RUNS=${FIRST_RUNS:-1}
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/ftpipe-noop.XXXXXX")
trap 'chmod -R u+w "$DIR"; rm -rf "$DIR"' EXIT
mkdir -p "$DIR/ft/in" "$DIR/mk/in"
# The Makefile names all targets on one `all:` line: make 4.3 merges a target's
# prerequisites given on separate lines in time quadratic in their number (30,000
# `all: out/N.txt` lines: 12 s of CPU to parse, against 0.09 s for one line).
awk -v n="$STAGES" -v dir="$DIR" 'BEGIN {
  ft = dir "/ft/Ftpipe"; mk = dir "/mk/Makefile";
  printf "MAKEFLAGS += -r\n.SUFFIXES:\nall:" > mk;
  for (i = 0; i < n; i++)
    printf " out/%d.txt", i > mk;
  print "" > mk;
  for (i = 0; i < n; i++) {
    printf "in %d\n", i > (dir "/ft/in/" i ".txt"); close(dir "/ft/in/" i ".txt");
    printf "in %d\n", i > (dir "/mk/in/" i ".txt"); close(dir "/mk/in/" i ".txt");
    prev = (i % 10) ? sprintf(" out/%d.txt", i - 1) : "";
    printf "out/%d.txt: shell in/%d.txt%s\n\trun = cat $^ > $@\n", i, i, prev > ft;
    printf "out/%d.txt: in/%d.txt%s\n\t@mkdir -p out; cat $^ > $@\n", i, i, prev > mk;
  }
}'
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The first build, FIRST_RUNS times each, alternating (each run starts from no
# outputs and, for ftpipe, no .ftpipe; it forks STAGES shells, so the default is once).
: > "$DIR/ft.first"; : > "$DIR/mk.first"
echo "building $STAGES stages $FIRST_RUNS time(s) with each tool (-j 2)..."
for r in $(seq "$FIRST_RUNS"); do
  chmod -R u+w "$DIR/ft"; rm -rf "$DIR/ft/.ftpipe" "$DIR/ft/out" "$DIR/mk/out"; sync
  s=$(now_ns); (cd "$DIR/mk" && make -s -j2 all); e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$DIR/mk.first"
  s=$(now_ns)
  "$FTPIPE" -C "$DIR/ft" -j 2 > "$DIR/first.log" 2>&1 || { tail "$DIR/first.log"; exit 1; }
  e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$DIR/ft.first"
done
tail -1 "$DIR/first.log"
ft_first=$(median < "$DIR/ft.first"); mk_first=$(median < "$DIR/mk.first")
echo "first build of $STAGES stages, median of $FIRST_RUNS: ftpipe $((ft_first / 1000)) ms, make $((mk_first / 1000)) ms"
awk -v a="$ft_first" -v b="$mk_first" 'BEGIN { printf "first build ratio ftpipe/make: %.2f (target: <= 1.50)\n", a / b }'

: > "$DIR/ft.times"; : > "$DIR/mk.times"
for r in $(seq "$RUNS"); do
  s=$(now_ns); "$FTPIPE" -C "$DIR/ft" > "$DIR/noop.log"; e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$DIR/ft.times"
  grep -q "nothing to do" "$DIR/noop.log" || { echo "ftpipe rerun was not a no-op:"; tail "$DIR/noop.log"; exit 1; }
  s=$(now_ns); (cd "$DIR/mk" && make -s all); e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$DIR/mk.times"
done
ft=$(median < "$DIR/ft.times"); mk=$(median < "$DIR/mk.times")
echo "no-op rerun of $STAGES stages, median of $RUNS: ftpipe $((ft / 1000)) ms, make $((mk / 1000)) ms"
awk -v a="$ft" -v b="$mk" 'BEGIN { printf "no-op ratio ftpipe/make: %.2f (target: <= 0.50)\n", a / b }'
FTPIPE_STATS=1 "$FTPIPE" -C "$DIR/ft" 2>&1 >/dev/null | sed 's/^/no-op: /'

# `ftpipe -n` and `ftpipe status` on the same built pipeline.
for command in -n status; do
  : > "$DIR/cmd.times"
  for r in $(seq "$RUNS"); do
    s=$(now_ns); "$FTPIPE" -C "$DIR/ft" $command > /dev/null; e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$DIR/cmd.times"
  done
  t=$(median < "$DIR/cmd.times")
  awk -v a="$t" -v b="$mk" -v c="$command" 'BEGIN { printf "ftpipe %s, median of '"$RUNS"':  %d ms (%.2f of make'"'"'s no-op)\n", c, a / 1000, a / b }'
done
# CPU time (perf's task-clock: user + system), which other work on the machine
# disturbs far less than wall time: medians of RUNS, the two tools alternating,
# and status's beside the no-op's. perf runs a command in its own environment,
# a new question for the record, so one run under perf comes first.
if command -v perf > /dev/null 2>&1; then
  cpu_ms() { perf stat -x, -e task-clock "$@" 2>&1 > /dev/null | awk -F, '/task-clock/ { print $1 }'; }
  perf stat -o /dev/null "$FTPIPE" -C "$DIR/ft" > /dev/null
  FTPIPE_STATS=1 perf stat -o /dev/null "$FTPIPE" -C "$DIR/ft" 2>&1 > /dev/null | grep -q "answered from" ||
    { echo "no-op CPU time: ftpipe under perf was not answered from .ftpipe/up-to-date"; exit 1; }
  : > "$DIR/ft.cpu"; : > "$DIR/mk.cpu"; : > "$DIR/status.cpu"
  for r in $(seq "$RUNS"); do
    cpu_ms "$FTPIPE" -C "$DIR/ft" >> "$DIR/ft.cpu"
    (cd "$DIR/mk" && cpu_ms make -s all) >> "$DIR/mk.cpu"
    cpu_ms "$FTPIPE" -C "$DIR/ft" status >> "$DIR/status.cpu"
  done
  ft_cpu=$(median < "$DIR/ft.cpu"); mk_cpu=$(median < "$DIR/mk.cpu"); status_cpu=$(median < "$DIR/status.cpu")
  awk -v a="$ft_cpu" -v b="$mk_cpu" -v s="$status_cpu" 'BEGIN {
    printf "no-op CPU time, median of '"$RUNS"': ftpipe %.1f ms, make %.1f ms, ratio %.2f; ftpipe status %.1f ms (%.2f of the no-op)\n", a, b, a / b, s, s / a }'
else
  echo "no-op CPU time: skipped (no perf; Debian: linux-perf)"
fi

# The planned no-op's phases: another question (a VAR=value word) is not answered
# from .ftpipe/up-to-date, so this run parses, builds the graph and plans.
FTPIPE_STATS=1 "$FTPIPE" -C "$DIR/ft" BENCH_PLANNED=1 2>&1 >/dev/null | sed 's/^/planned no-op: /'
