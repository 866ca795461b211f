#!/bin/sh
# Checks that every #include "ftpipe/..." points down the layers, never up or
# sideways:  sh tests/check_layers.sh [ROOT]   (default: this checkout)
# Prints each offending include as FILE:LINE: SUBSYSTEM includes HEADER, then
# "layers: N files, N bad includes"; exits 1 when there is a bad one.
#
# The layers, as the README's Layout section draws them: a subsystem may include
# itself and those listed after it. The command line (cli) joins everything.
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT" || exit 2
ALLOWED='
base:
formats: base
transfer: base
engine: base
text: base formats
backend: base
backend/cpu: base backend
backend/cuda: base backend
model: base formats text backend
eval: base formats text backend model
stages: base formats text transfer backend model eval engine
cli: base formats text transfer backend model eval engine stages
'
# The subsystem of a source or header path: ftpipe/SUB/..., include/ftpipe/SUB/...,
# stages/...; the backends' folders are subsystems of their own.
subsystem_of() {
  case "$1" in
    stages/*) echo stages ;;
    ftpipe/backend/cpu/*|include/ftpipe/backend/cpu/*) echo backend/cpu ;;
    ftpipe/backend/cuda/*|include/ftpipe/backend/cuda/*) echo backend/cuda ;;
    ftpipe/*/*) echo "$1" | cut -d/ -f2 ;;
    include/ftpipe/*/*) echo "$1" | cut -d/ -f3 ;;
    *) echo "?" ;;
  esac
}
files=$(find ftpipe include stages -type f \( -name '*.c' -o -name '*.h' -o -name '*.cu' \) | sort)
n_files=0
n_bad=0
report=$(mktemp)
for file in $files; do
  n_files=$((n_files + 1))
  from=$(subsystem_of "$file")
  if [ "$from" = "?" ]; then
    echo "$file: not in a subsystem folder (ftpipe/SUBSYSTEM/ or include/ftpipe/SUBSYSTEM/)" >> "$report"
    n_bad=$((n_bad + 1))
    continue
  fi
  allowed=" $from $(echo "$ALLOWED" | sed -n "s|^$from:||p") "
  grep -n '^[[:space:]]*#[[:space:]]*include[[:space:]]*"ftpipe/' "$file" |
    sed 's|^\([0-9]*\):.*"ftpipe/\([^"]*\)".*|\1 \2|' > "$report.includes"
  while read -r line header; do
    to=$(subsystem_of "include/ftpipe/$header")
    case "$allowed" in
      *" $to "*) ;;
      *) echo "$file:$line: $from includes ftpipe/$header ($to is not below $from)" >> "$report"
         n_bad=$((n_bad + 1)) ;;
    esac
  done < "$report.includes"
done
cat "$report"
rm -f "$report" "$report.includes"
echo "layers: $n_files files, $n_bad bad includes"
[ "$n_bad" -eq 0 ]
