#!/bin/sh
# The no-op build: a 10,000-stage pipeline of shell stages over small files
# (chains of ten), built once, then a rerun that has nothing to do — ftpipe
# against GNU make on the equivalent Makefile, in the same run. Prints the
# medians and the ratio ftpipe/make (below 1: ftpipe is faster), and the first
# build's time against make's running the same recipes.
#   STAGES=10000 RUNS=7 sh tests/bench/noop.sh
set -e
cd "$(dirname "$0")/../.."
FTPIPE=${FTPIPE:-$(pwd)/build/ftpipe}
STAGES=${STAGES:-10000}
RUNS=${RUNS:-7}
DIR=$(mktemp -d "${BENCH_DIR:-/tmp}/ftpipe-noop.XXXXXX")
trap 'chmod -R u+w "$DIR"; rm -rf "$DIR"' EXIT
mkdir -p "$DIR/ft/in" "$DIR/mk/in"
awk -v n="$STAGES" -v dir="$DIR" 'BEGIN {
  ft = dir "/ft/Ftpipe"; mk = dir "/mk/Makefile";
  print "MAKEFLAGS += -r\n.SUFFIXES:\nall:" > mk;
  for (i = 0; i < n; i++) {
    printf "in %d\n", i > (dir "/ft/in/" i ".txt"); close(dir "/ft/in/" i ".txt");
    printf "in %d\n", i > (dir "/mk/in/" i ".txt"); close(dir "/mk/in/" i ".txt");
    prev = (i % 10) ? sprintf(" out/%d.txt", i - 1) : "";
    printf "out/%d.txt: shell in/%d.txt%s\n\trun = cat $^ > $@\n", i, i, prev > ft;
    printf "all: out/%d.txt\nout/%d.txt: in/%d.txt%s\n\t@mkdir -p out; cat $^ > $@\n", i, i, i, prev > mk;
  }
}'
now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The first build, once each (it forks 10,000 shells: too long to repeat 7 times).
echo "building $STAGES stages once with each tool (-j 2)..."
s=$(now_ns); (cd "$DIR/mk" && make -s -j2 all); e=$(now_ns); mk_first=$(( (e - s) / 1000 ))
s=$(now_ns)
"$FTPIPE" -C "$DIR/ft" -j 2 > "$DIR/first.log" 2>&1 || { tail "$DIR/first.log"; exit 1; }
e=$(now_ns); ft_first=$(( (e - s) / 1000 ))
tail -1 "$DIR/first.log"
echo "first build of $STAGES stages: ftpipe $((ft_first / 1000)) ms, make $((mk_first / 1000)) ms"
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
