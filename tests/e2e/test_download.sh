#!/bin/sh
# The download kind through pipelines, against nginx on a free port of 127.0.0.1
# (tests/e2e/nginx.sh) playing a web server and the Hugging Face hub.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"

FIXTURES="$(cd "$(dirname "$0")/../fixtures/download" && pwd)"
SERVER="$T_ROOT/server"
trap 'nginx_stop "$SERVER"; chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT
mkdir -p "$SERVER/www/files"
nginx_start "$SERVER" || { echo "not ok nginx started"; exit 1; }
BASE="http://127.0.0.1:$NGINX_PORT"
export HF_ENDPOINT="$BASE/hub"
unset HF_TOKEN
printf 'alpha\n' > "$SERVER/www/files/a.txt"
printf 'bravo!\n' > "$SERVER/www/files/b.txt"
head -c 25165824 /dev/urandom > "$SERVER/www/files/big.bin"  # 24 MiB

# The body bytes nginx sent for GETs of $1 that started after $2 (ms since the epoch);
# the log's lines are "$msec $request_time $method $uri $status $body_bytes_sent ...".
served_since() {
  awk -v uri="$1" -v since="$2" '$3 == "GET" && $4 == uri && ($1 - $2) * 1000 > since { s += $6 } END { print s + 0 }' \
    "$SERVER/access.log"
}
# The bytes a progress file records as written.
recorded() { awk '/^done / { s += $3 - $2 } END { print s + 0 }' "$1" 2>/dev/null || echo 0; }
now_ms() { date +%s%3N; }

t_case "several files from a web server appear at the target"
W=$(t_workspace)
cat > "$W/Ftpipe" <<P
data/letters: download
	url = $BASE/files
	files = a.txt b.txt
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     data/letters"
t_expect_contains "2 files, 13 B (13 B fetched at"
[ "$(cat "$W/data/letters/a.txt")" = alpha ] || t_fail "a.txt: $(cat "$W/data/letters/a.txt")"
[ "$(cat "$W/data/letters/b.txt")" = 'bravo!' ] || t_fail "b.txt: $(cat "$W/data/letters/b.txt")"
[ -z "$(ls "$W/.ftpipe/work")" ] || t_fail "work folders left: $(ls "$W/.ftpipe/work")"
t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do (1 up to date)"
t_end

t_case "a base URL with a query (a signed URL) joins files before the query, names percent-encoded"
printf 'charlie\n' > "$SERVER/www/files/c+d%.txt"
W=$(t_workspace)
cat > "$W/Ftpipe" <<P
signed: download
	url = $BASE/files?sig=abc123&expires=99
	files = a.txt c+d%.txt
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/signed/a.txt")" = alpha ] || t_fail "a.txt: $(cat "$W/signed/a.txt" 2>&1)"
[ "$(cat "$W/signed/c+d%.txt")" = charlie ] || t_fail "c+d%.txt: $(cat "$W/signed/c+d%.txt" 2>&1)"
grep -q ' GET /files/c+d%.txt 200 ' "$SERVER/access.log" ||
  t_fail "nginx did not serve /files/c+d%.txt: $(tail -3 "$SERVER/access.log")"
t_end

t_case "a redirect is followed"
W=$(t_workspace)
printf 'big: download\n\turl = %s/moved/b.txt\n' "$BASE" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/big/b.txt")" = 'bravo!' ] || t_fail "b.txt: $(cat "$W/big/b.txt" 2>&1)"
t_end

t_case "a missing file fails with the file and what to check"
W=$(t_workspace)
printf 'x: download\n\turl = %s/files\n\tfiles = a.txt nope.txt\n' "$BASE" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "FAILED   x: cannot download nope.txt: $BASE/files/nope.txt answered 404 Not Found; check the URL"
[ ! -e "$W/x" ] || t_fail "x was published"
t_end

t_case "a wrong checksum fails and publishes nothing"
W=$(t_workspace)
cat > "$W/Ftpipe" <<P
x: download
	url = $BASE/files
	files = a.txt b.txt
	sha256 = a.txt=b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060 b.txt=0000000000000000000000000000000000000000000000000000000000000000
P
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "FAILED   x: checksum mismatch for b.txt ($BASE/files/b.txt): expected sha256 0000000000000000000000000000000000000000000000000000000000000000, got 5cd62f6a5a5c57a1f59df9520820c9af26aa1b1531f798b758f93a05b332c28e; the file was deleted and nothing was published"
[ ! -e "$W/x" ] || t_fail "x was published"
t_end

t_case "a sharded model comes from the hub through HF_ENDPOINT, index followed"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
models/base: download
	url = hf://test-org/tiny-model
	files = config.json model.safetensors tokenizer.json
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     models/base"
t_expect_contains "5 files, 409 B (409 B fetched at"
HUB="$FIXTURES/hub/test-org/tiny-model/resolve/1111111111111111111111111111111111111111"
for f in config.json tokenizer.json model.safetensors.index.json model-00001-of-00002.safetensors \
         model-00002-of-00002.safetensors; do
  cmp -s "$HUB/$f" "$W/models/base/$f" || t_fail "$f differs or is missing"
done
[ "$(ls "$W/models/base" | wc -l)" = 5 ] || t_fail "files: $(ls "$W/models/base")"
log=$("$FTPIPE" -C "$W" log models/base 2>&1)
case "$log" in *"hf://test-org/tiny-model at revision main is commit 1111111111111111111111111111111111111111 on $BASE/hub: 5 files"*) ;;
  *) t_fail "log: $log" ;; esac
t_end

t_case "a revision and a pattern select files from the hub's list"
W=$(t_workspace)
cat > "$W/Ftpipe" <<'P'
old: download
	url = hf://test-org/tiny-model@v1.0
	files = *.json
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ "$(cat "$W/old/config.json")" = '{"model_type": "qwen2", "version": 1}' ] || t_fail "config: $(cat "$W/old/config.json")"
t_end

t_case "a private repository says to set HF_TOKEN; the token works and is stored nowhere"
W=$(t_workspace)
printf 'gated: download\n\turl = hf://private-org/gated-model\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "FAILED   gated: cannot download the file list of private-org/gated-model: $BASE/hub/api/models/private-org/gated-model/revision/main?blobs=true answered 401 Unauthorized; private-org/gated-model may be private or gated, or may not exist: set HF_TOKEN to a token that can read it"
HF_TOKEN=test-token-123 t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_lacks "test-token-123"
[ "$(cat "$W/gated/config.json")" = '{"model_type": "llama"}' ] || t_fail "config: $(cat "$W/gated/config.json")"
grep -r -a -l test-token-123 "$W" && t_fail "the token was written to the files above"
# Neither the token nor the endpoint is part of the key: changing them reruns nothing.
HF_TOKEN=another-token HF_ENDPOINT=http://127.0.0.1:1/nowhere t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do (1 up to date)"
t_end

t_case "a file whose bytes differ from the hub's checksum publishes nothing; verify = false accepts it"
W=$(t_workspace)
printf 'm: download\n\turl = hf://test-org/corrupt-model\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "FAILED   m: checksum mismatch for model.safetensors ($BASE/hub/test-org/corrupt-model/resolve/5555555555555555555555555555555555555555/model.safetensors): expected sha256 4ea58c2e2a8a54e3fb4f0e3dd332de83b8a4908cb3625e56de2d77704152ebdb, got 38fcab4ee0c4834b59b6823e2214668946a0cb7324fc607cb0dac68c9002c89e; the file was deleted and nothing was published"
[ ! -e "$W/m" ] || t_fail "m was published"
printf 'm: download\n\turl = hf://test-org/corrupt-model\n\tverify = false\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
[ -f "$W/m/model.safetensors" ] || t_fail "m/model.safetensors missing"
t_end

t_case "parameters that cannot work are refused before any download"
W=$(t_workspace)
cat > "$W/Ftpipe" <<P
bare: download
	url = $BASE/files
	files = a.txt b.txt
	sha256 = b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060
unknown: download
	url = $BASE/files/a.txt
	size = c.txt=6
pattern: download
	url = $BASE/files
	files = *.txt
revision: download
	url = $BASE/files/a.txt
	revision = v1
short: download
	url = $BASE/files/a.txt
	sha256 = abc
P
t_run "$FTPIPE" -k -C "$W"
t_expect_fail
t_expect_contains "FAILED   bare: sha256 = b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060: this download fetches 2 files; say which with FILE=HEX"
t_expect_contains "FAILED   unknown: size = c.txt=6: this download fetches no file c.txt"
t_expect_contains "FAILED   pattern: files = *.txt: patterns need an hf:// URL (a plain web server has no file list to match them against); name the files"
t_expect_contains "FAILED   revision: revision applies to hf:// URLs only; $BASE/files/a.txt is a plain URL"
t_expect_contains "FAILED   short: sha256 = abc: expected 64 hexadecimal digits"
t_end

t_case "size and sha256 that match let the file through"
W=$(t_workspace)
cat > "$W/Ftpipe" <<P
a: download
	url = $BASE/files/a.txt
	size = 6
	sha256 = b6a98d9ce9a2d9149288fa3df42d377c3e42737afdcdaf714e33c0a100b51060
P
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "1 file, 6 B (6 B fetched at"
[ "$(cat "$W/a/a.txt")" = alpha ] || t_fail "a/a.txt: $(cat "$W/a/a.txt" 2>&1)"
t_end

t_case "a download killed with kill -9 resumes and the server sends only the missing bytes"
W=$(t_workspace)
printf 'big: download\n\turl = %s/slow/big.bin\n\tconnections_per_file = 2\n' "$BASE" > "$W/Ftpipe"
"$FTPIPE" -C "$W" > "$W/first.out" 2>&1 &
pid=$!
progress=""
for i in $(seq 300); do
  progress=$(find "$W/.ftpipe/work" -name big.bin.part.progress 2>/dev/null | head -n 1)
  [ -n "$progress" ] && [ "$(recorded "$progress")" -ge 4194304 ] && break
  sleep 0.05
done
# The stage runs in a child process of its own: kill it too, before it can save anything.
kill -9 $(ps -o pid= --ppid "$pid") "$pid"
wait "$pid" 2>/dev/null
killed_ms=$(now_ms)
kept=$(recorded "$progress")
[ "$kept" -ge 4194304 ] && [ "$kept" -lt 25165824 ] || t_fail "kept $kept bytes"
sleep 0.05
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "resumed)"
cmp -s "$SERVER/www/files/big.bin" "$W/big/big.bin" || t_fail "big.bin differs"
served=0
for i in $(seq 100); do
  served=$(served_since /slow/big.bin "$killed_ms")
  [ "$served" -ge $((25165824 - kept)) ] && break
  sleep 0.02
done
[ "$served" = $((25165824 - kept)) ] || t_fail "served $served bytes after the kill, expected $((25165824 - kept))"
t_end
