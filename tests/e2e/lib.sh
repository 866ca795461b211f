# Helpers for end-to-end tests: each case prints "ok NAME" or "not ok NAME".
#   . "$(dirname "$0")/lib.sh"
#   t_case "reruns only the changed stage"
#   t_run $FTPIPE -C "$W"            # sets T_OUT (stdout+stderr) and T_STATUS
#   t_expect_status 0; t_expect_contains "2 stages run"
#   t_end
# FTPIPE is the program under test (tests/run.sh sets it; default: build/asan/ftpipe).
: "${FTPIPE:=$(cd "$(dirname "$0")/../.." && pwd)/build/asan/ftpipe}"
export ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}"
T_ROOT=$(mktemp -d "${TMPDIR:-/tmp}/ftpipe-test.XXXXXX")
trap 'chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT

t_case() { T_CASE="$1"; T_FAILED=0; }
t_fail() { echo "  [$T_CASE] $*" >&2; T_FAILED=1; }
t_end() {
  if [ "$T_FAILED" = 0 ]; then echo "ok $T_CASE"; else echo "not ok $T_CASE"; fi
}
# A fresh empty folder for a case; prints its path.
t_workspace() { mktemp -d "$T_ROOT/ws.XXXXXX"; }
t_run() {
  T_OUT=$("$@" 2>&1)
  T_STATUS=$?
}
t_expect_status() {
  [ "$T_STATUS" = "$1" ] || t_fail "exit status $T_STATUS, expected $1; output:
$T_OUT"
}
t_expect_fail() {
  [ "$T_STATUS" != 0 ] || t_fail "succeeded, expected a failure; output:
$T_OUT"
}
t_expect_contains() {
  case "$T_OUT" in *"$1"*) ;; *) t_fail "output lacks \"$1\"; output:
$T_OUT" ;; esac
}
t_expect_lacks() {
  case "$T_OUT" in *"$1"*) t_fail "output has \"$1\"; output:
$T_OUT" ;; esac
}

# The train kind's tests start alike: a tiny f32 model (init), SAMPLES rows of the
# addition data (examples/quickstart's script), tokenized, then a train stage:
# TRAIN_LINE (default `adapter: train models/tiny data/train_set`) with the given
# parameter lines.
#   t_train_workspace SAMPLES [PARAMETER-LINE...]   sets W to a fresh workspace holding it
#   t_train_pipeline SAMPLES [PARAMETER-LINE...]    rewrites $W/Ftpipe
T_ADDITION_DATA="$(cd "$(dirname "$0")/../.." && pwd)/examples/quickstart/make_addition_data.sh"
t_train_workspace() {
  W=$(t_workspace)
  cp "$T_ADDITION_DATA" "$W/"
  t_train_pipeline "$@"
}
t_train_pipeline() {
  samples=$1
  shift
  cat > "$W/Ftpipe" <<P
models/tiny: init
	dtype = f32
	threads = 1

data/train.json: shell make_addition_data.sh
	run = sh \$< train $samples > \$@

data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40
	threads = 1

P
  { echo "${TRAIN_LINE:-adapter: train models/tiny data/train_set}"; for line in "$@"; do printf '\t%s\n' "$line"; done; } \
    >> "$W/Ftpipe"
}
