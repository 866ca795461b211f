#!/bin/sh
# Writes the addition data set users first fine-tune on, in alpaca format:
# the prompt "N=" and the answer "王大丫丫的回答是--->a + b" with a + b = N.
#   sh make_addition_data.sh train|eval COUNT > FILE
# Deterministic on every machine: the numbers come from a Park-Miller generator
# written out here, since awk's own rand() need not repeat for one srand(seed)
# (mawk 1.3.4-20240123 does not). train and eval draw from different seeds.
split=$1
count=$2
case "$split" in
  train) seed=1 ;;
  eval) seed=2 ;;
  *) echo "usage: $0 train|eval COUNT" >&2; exit 2 ;;
esac
awk -v n="$count" -v seed="$seed" '
# the next number of the sequence below 50 (products stay below 2^53: exact)
function draw() { state = (state * 16807) % 2147483647; return int(state * 50 / 2147483647) }
BEGIN {
  state = seed * 1000003 % 2147483647;
  printf "[\n";
  for (i = 0; i < n; i++) {
    a = draw(); b = draw();
    printf "  {\"instruction\": \"%d=\", \"input\": \"\", \"output\": \"王大丫丫的回答是--->%d + %d\"}%s\n", a + b, a, b, (i + 1 < n) ? "," : "";
  }
  printf "]\n";
}'
