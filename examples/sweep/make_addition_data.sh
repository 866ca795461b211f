#!/bin/sh
# Writes the addition data set users first fine-tune on, in alpaca format:
# the prompt "N=" and the answer "王大丫丫的回答是--->a + b" with a + b = N.
#   sh make_addition_data.sh train|eval COUNT > FILE
# Deterministic: train and eval draw from different seeds.
split=$1
count=$2
case "$split" in
  train) seed=1 ;;
  eval) seed=2 ;;
  *) echo "usage: $0 train|eval COUNT" >&2; exit 2 ;;
esac
awk -v n="$count" -v seed="$seed" 'BEGIN {
  srand(seed);
  printf "[\n";
  for (i = 0; i < n; i++) {
    a = int(rand() * 50); b = int(rand() * 50);
    printf "  {\"instruction\": \"%d=\", \"input\": \"\", \"output\": \"王大丫丫的回答是--->%d + %d\"}%s\n", a + b, a, b, (i + 1 < n) ? "," : "";
  }
  printf "]\n";
}'
