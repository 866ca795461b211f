#!/bin/sh
# Checks that the code's dependencies point down the layers, never up or sideways:
#   sh tests/check_layers.sh [ROOT [OBJECTS]]   (default: this checkout, build/obj-asan)
# - every #include "ftpipe/..." of a source or header;
# - with the built objects (OBJECTS, when it exists): every function or variable one
#   module uses from another, read with nm, so a call through a declaration that
#   some other header makes counts too; and no two modules use each other, in a
#   loop of any length (tsort finds them).
# Prints each offence, then "layers: N files, N bad includes, N bad uses, N loops";
# exits 1 when there is one.
#
# The layers, as the README's Layout section draws them: a subsystem may include
# itself and those listed after it. The command line (cli) joins everything.
ROOT=${1:-$(cd "$(dirname "$0")/.." && pwd)}
cd "$ROOT" || exit 2
ALLOWED='
base:
formats: base
transfer: base
engine: base transfer
text: base formats
backend: base
backend/cpu: base backend
backend/cuda: base backend
model: base formats text backend
eval: base formats text backend model
stages: base formats text transfer backend backend/cpu backend/cuda model eval engine
cli: base formats text transfer backend backend/cpu backend/cuda model eval engine stages
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
# Uses between modules, from the objects: "USER DEFINER" per line.
OBJECTS=${2:-build/obj-asan}
n_uses=0
n_loops=0
if [ -d "$OBJECTS/ftpipe" ]; then
  for object in $(find "$OBJECTS/ftpipe" "$OBJECTS/stages" -name '*.o' 2>/dev/null | sort); do
    module=${object#"$OBJECTS"/}
    module=${module%.o}
    # an object left from a source since moved or deleted is not the code
    [ -f "$module.c" ] || [ -f "$module.cu" ] || continue
    nm --defined-only -g "$object" | awk -v m="$module" 'NF == 3 {print "D", $3, m}'
    nm -u "$object" | awk -v m="$module" '{print "U", $2, m}'
  done | awk '$1 == "D" {definer[$2] = $3; next}
              {use[++n] = $2 " " $3}
              END {for (i = 1; i <= n; i++) {split(use[i], u, " ");
                     if ((u[1] in definer) && definer[u[1]] != u[2]) print u[2], definer[u[1]]}}' |
    sort -u > "$report.uses"
  while read -r user definer; do
    from=$(subsystem_of "$user.c")
    to=$(subsystem_of "$definer.c")
    allowed=" $from $(echo "$ALLOWED" | sed -n "s|^$from:||p") "
    case "$allowed" in
      *" $to "*) ;;
      *) echo "$user uses $definer ($to is not below $from)" >> "$report"
         n_uses=$((n_uses + 1)) ;;
    esac
  done < "$report.uses"
  tsort "$report.uses" 2>&1 >/dev/null | sed -n 's/^tsort: \([^:]*\)$/\1/p' | grep -v "$report" > "$report.loops"
  if [ -s "$report.loops" ]; then
    n_loops=$(tsort "$report.uses" 2>&1 >/dev/null | grep -c 'contains a loop')
    echo "modules that use each other (loops, as tsort lists them):" >> "$report"
    sed 's/^/  /' "$report.loops" >> "$report"
  fi
fi
cat "$report"
rm -f "$report" "$report.includes" "$report.uses" "$report.loops"
echo "layers: $n_files files, $n_bad bad includes, $n_uses bad uses, $n_loops loops"
[ "$n_bad" -eq 0 ] && [ "$n_uses" -eq 0 ] && [ "$n_loops" -eq 0 ]
