#!/bin/sh
# Writes the addition data set users first fine-tune on, in alpaca format:
# the prompt "N=" and the answer "王大丫丫的回答是--->a + b" with a + b = N.
#   sh make_addition_data.sh train|eval COUNT > FILE
# Deterministic on every machine: the numbers come from glibc's random() with
# srandom(seed) (an additive feedback generator: each number the sum of those
# 3 and 31 places back, modulo 2^32, seeded through 16807 x mod 2^31 - 1),
# computed here in awk's own arithmetic, since awk's rand() need not repeat for
# one srand(seed) (mawk 1.3.4-20240123 does not). Where it does (Debian's mawk)
# the numbers are the ones its rand() gives. train and eval draw from different seeds.
split=$1
count=$2
case "$split" in
  train) seed=1 ;;
  eval) seed=2 ;;
  *) echo "usage: $0 train|eval COUNT" >&2; exit 2 ;;
esac
awk -v n="$count" -v seed="$seed" '
# the next number in [0, 1): 31 bits of the generator over 2^31 - 1, as rand() returned it
function draw(   next_value) {
  next_value = (r[at - 31] + r[at - 3]) % 4294967296; # every value below 2^33: exact in a double
  r[at++] = next_value;
  return int(next_value / 2) / 2147483647;
}
BEGIN {
  r[0] = seed;
  for (at = 1; at < 31; at++)
    r[at] = (16807 * r[at - 1]) % 2147483647;
  for (; at < 34; at++)
    r[at] = r[at - 31];
  for (; at < 344; at++)
    r[at] = (r[at - 31] + r[at - 3]) % 4294967296;
  printf "[\n";
  for (i = 0; i < n; i++) {
    a = int(draw() * 50); b = int(draw() * 50);
    printf "  {\"instruction\": \"%d=\", \"input\": \"\", \"output\": \"王大丫丫的回答是--->%d + %d\"}%s\n", a + b, a, b, (i + 1 < n) ? "," : "";
  }
  printf "]\n";
}'
