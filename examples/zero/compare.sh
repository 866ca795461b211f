# compare.sh RUN... EVAL...: a Markdown table, one row per train output (a
# folder with train_results.json) and the evaluation of the same name (a folder
# with metrics.json), from those two files.
value() { sed -n "s/^ *\"$2\": \([^,]*\),\{0,1\}$/\1/p" "$1"; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "| run | time | tokens/s | peak device memory (rank 0) | peak host memory (rank 0) | accuracy |"
echo "| --- | --- | --- | --- | --- | --- |"
for run in "$@"; do
  results="$run/train_results.json"
  [ -f "$results" ] || continue
  accuracy=
  for evaluation in "$@"; do
    [ "${evaluation##*/}" = "${run##*/}" ] && [ -f "$evaluation/metrics.json" ] &&
      accuracy=$(value "$evaluation/metrics.json" accuracy)
  done
  printf '| %s | %.2f s | %.0f | %s | %s | %s |\n' "${run##*/}" "$(value "$results" train_runtime)" \
    "$(value "$results" train_tokens_per_second)" "$(mib "$(value "$results" peak_device_bytes)")" \
    "$(mib "$(value "$results" peak_host_bytes)")" "$accuracy"
done
