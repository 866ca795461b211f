#!/bin/sh
# Ftpipe.lock end to end, through tests/e2e/fake_hub.py, whose `main` moves to a new
# commit mid-test: a locked pipeline keeps fetching the old bytes or fails naming
# the file; `ftpipe lock --update` moves it. Also hf:// against a mirror without the
# /api/ file list, and a locked pipeline restored from a remote on another workspace.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HUB="$T_ROOT/hub"
COUNTER="$T_ROOT/counter"
OLD=1111111111111111111111111111111111111111
NEW=2222222222222222222222222222222222222222
mkdir -p "$HUB/test-org/model/refs" "$HUB/test-org/model/commits/$OLD" "$HUB/test-org/model/commits/$NEW"
echo '{"hidden_size": 8}' > "$HUB/test-org/model/commits/$OLD/config.json"
head -c 3000 /dev/urandom > "$HUB/test-org/model/commits/$OLD/model.safetensors"
echo '{"hidden_size": 16}' > "$HUB/test-org/model/commits/$NEW/config.json"
head -c 3000 /dev/urandom > "$HUB/test-org/model/commits/$NEW/model.safetensors"
echo "$OLD" > "$HUB/test-org/model/refs/main"

start_hub() { # PORT_VARIABLE [--no-api]
  python3 "$ROOT/tests/e2e/fake_hub.py" "$HUB" $2 > "$T_ROOT/$1.port" &
  echo $! >> "$T_ROOT/hub.pids"
  for i in $(seq 100); do [ -s "$T_ROOT/$1.port" ] && break; sleep 0.05; done
  eval "$1=\$(cat \"\$T_ROOT/\$1.port\")"
}
trap 'for p in $(cat "$T_ROOT/hub.pids" 2>/dev/null); do kill $p 2>/dev/null; done; chmod -R u+w "$T_ROOT"; rm -rf "$T_ROOT"' EXIT
start_hub API_PORT
start_hub STATIC_PORT --no-api
export HF_ENDPOINT="http://127.0.0.1:$API_PORT"

write_pipeline() {
  cat > "$1/Ftpipe" <<P
models/base: download
	url = hf://test-org/model
	files = config.json model.safetensors
notes: shell models/base
	run = mkdir \$@ && cp \$</config.json \$@/config.txt && echo notes >> $COUNTER
P
}
sha() { sha256sum < "$1" | cut -d' ' -f1; }

t_case "ftpipe lock records the commit main resolved to and each file's size and SHA-256"
A=$(t_workspace); write_pipeline "$A"
t_run "$FTPIPE" -C "$A" lock
t_expect_status 0
t_expect_contains "locked models/base: hf://test-org/model at commit $OLD (2 files)"
grep -qx "	commit = $OLD" "$A/Ftpipe.lock" || t_fail "no commit line: $(cat "$A/Ftpipe.lock")"
grep -qx "	file = config.json 19 $(sha "$HUB/test-org/model/commits/$OLD/config.json")" "$A/Ftpipe.lock" ||
  t_fail "no config.json line: $(cat "$A/Ftpipe.lock")"
grep -qx "	file = model.safetensors 3000 $(sha "$HUB/test-org/model/commits/$OLD/model.safetensors")" "$A/Ftpipe.lock" ||
  t_fail "no model.safetensors line: $(cat "$A/Ftpipe.lock")"
t_run "$FTPIPE" -C "$A"
t_expect_status 0
t_expect_contains "ftpipe: 1 run, 0 restored, 1 up to date"
t_run "$FTPIPE" -C "$A" lock
t_expect_contains "is up to date (1 download locked)"
t_end

t_case "main moves to a new commit: a locked pipeline elsewhere still fetches the old bytes"
echo "$NEW" > "$HUB/test-org/model/refs/main"
B=$(t_workspace); write_pipeline "$B"; cp "$A/Ftpipe.lock" "$B/"
: > "$T_ROOT/hub.log"
t_run "$FTPIPE" -C "$B"
t_expect_status 0
cmp -s "$B/models/base/config.json" "$HUB/test-org/model/commits/$OLD/config.json" || t_fail "not the old config.json"
cmp -s "$B/models/base/model.safetensors" "$HUB/test-org/model/commits/$OLD/model.safetensors" || t_fail "not the old weights"
grep -q "resolve/$NEW" "$T_ROOT/hub.log" && t_fail "fetched from the new commit: $(cat "$T_ROOT/hub.log")"
grep -q "GET /test-org/model/resolve/$OLD/model.safetensors" "$T_ROOT/hub.log" || t_fail "hub log: $(cat "$T_ROOT/hub.log")"
U=$(t_workspace); write_pipeline "$U"
t_run "$FTPIPE" -C "$U" models/base
cmp -s "$U/models/base/config.json" "$HUB/test-org/model/commits/$NEW/config.json" || t_fail "without a lock, main is not followed"
t_end

t_case "a locked file whose bytes changed on the hub fails the run, naming the file"
cp "$HUB/test-org/model/commits/$OLD/config.json" "$T_ROOT/config.saved"
echo '{"hidden_size": 9}' > "$HUB/test-org/model/commits/$OLD/config.json"
C=$(t_workspace); write_pipeline "$C"; cp "$A/Ftpipe.lock" "$C/"
t_run "$FTPIPE" -C "$C"
t_expect_status 1
t_expect_contains "config.json"
t_expect_contains "expected sha256 $(sha "$T_ROOT/config.saved")"
[ -e "$C/models/base" ] && t_fail "a download that failed its lock was published"
cp "$T_ROOT/config.saved" "$HUB/test-org/model/commits/$OLD/config.json"
t_end

t_case "ftpipe lock --update moves the lock to the new commit and the stages after it rerun"
: > "$COUNTER"
t_run "$FTPIPE" -C "$A" lock --update models/base
t_expect_status 0
t_expect_contains "locked models/base: hf://test-org/model at commit $NEW (2 files)"
t_run "$FTPIPE" -C "$A"
t_expect_status 0
t_expect_contains "run      notes"
cmp -s "$A/models/base/config.json" "$HUB/test-org/model/commits/$NEW/config.json" || t_fail "not the new config.json"
[ "$(cat "$COUNTER")" = notes ] || t_fail "counter: $(cat "$COUNTER")"
t_end

t_case "a lock the pipeline no longer matches is an error that says how to refresh it"
sed -i 's|url = hf://test-org/model|url = hf://test-org/model@main|' "$A/Ftpipe"
t_run "$FTPIPE" -C "$A"
t_expect_status 1
t_expect_contains "Ftpipe.lock"
t_expect_contains "models/base was locked for url = hf://test-org/model, but the pipeline now says url = hf://test-org/model@main"
t_expect_contains "ftpipe lock --update models/base"
t_run "$FTPIPE" -C "$A" lock --update
t_expect_status 0
t_run "$FTPIPE" -C "$A"
t_expect_status 0
cp "$A/Ftpipe.lock" "$T_ROOT/lock.saved"
printf 'models/base:\n\turl = x\n\tfile = broken\n' > "$A/Ftpipe.lock"
t_run "$FTPIPE" -C "$A"
t_expect_status 1
t_expect_contains "Ftpipe.lock:3: expected \`file = PATH SIZE SHA256\`"
cp "$T_ROOT/lock.saved" "$A/Ftpipe.lock"
t_end

t_case "hf:// with named files works against a mirror without the /api/ file list"
S=$(t_workspace); write_pipeline "$S"
: > "$T_ROOT/hub.log"
HF_ENDPOINT="http://127.0.0.1:$STATIC_PORT" t_run "$FTPIPE" -C "$S" models/base
t_expect_status 0
cmp -s "$S/models/base/model.safetensors" "$HUB/test-org/model/commits/$NEW/model.safetensors" || t_fail "wrong weights"
grep -q "HEAD /test-org/model/resolve/main/config.json 200" "$T_ROOT/hub.log" || t_fail "hub log: $(cat "$T_ROOT/hub.log")"
grep -q "GET /test-org/model/resolve/$NEW/model.safetensors" "$T_ROOT/hub.log" || t_fail "not fetched at the commit: $(cat "$T_ROOT/hub.log")"
HF_ENDPOINT="http://127.0.0.1:$STATIC_PORT" t_run "$FTPIPE" -C "$S" lock
t_expect_contains "at commit $NEW (2 files)"
sed -i 's|files = .*|files = *.json|' "$S/Ftpipe"
HF_ENDPOINT="http://127.0.0.1:$STATIC_PORT" t_run "$FTPIPE" -C "$S" lock --update
t_expect_status 1
t_expect_contains "404"
t_end

t_case "with the lock and a remote, another workspace gets the same keys and restores everything"
R="$T_ROOT/remote"; mkdir -p "$R"
: > "$COUNTER"
P=$(t_workspace); cp "$A/Ftpipe" "$A/Ftpipe.lock" "$P/"
FTPIPE_REMOTE="file://$R" t_run "$FTPIPE" -C "$P"
t_expect_status 0
Q=$(t_workspace); cp "$P/Ftpipe" "$P/Ftpipe.lock" "$Q/"
: > "$T_ROOT/hub.log"
FTPIPE_REMOTE="file://$R" t_run "$FTPIPE" -C "$Q"
t_expect_status 0
t_expect_contains "ftpipe: 0 run, 2 restored (2 restored from remote)"
[ -s "$T_ROOT/hub.log" ] && t_fail "the hub was asked: $(cat "$T_ROOT/hub.log")"
cmp -s "$P/notes/config.txt" "$Q/notes/config.txt" || t_fail "notes differ"
t_end
