#!/bin/sh
# The remote cache end to end: nginx with WebDAV PUT and basic auth on loopback,
# and a file:// folder written by two workspaces at once. A shell stage appends to
# a counter file outside the workspaces, so a restore that ran anything shows.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/nginx.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
COUNTER="$T_ROOT/counter"

# The pipeline: shell stages, init, tokenize and a tiny train. $1: the workspace.
write_pipeline() {
  cp "$ROOT/examples/quickstart/make_addition_data.sh" "$1/"
  cat > "$1/Ftpipe" <<P
models/tiny: init
	dtype = f32
	threads = 1
data/train.json: shell make_addition_data.sh
	run = sh \$< train 64 > \$@; echo data >> $COUNTER
data/train_set: tokenize models/tiny data/train.json
	template = plain
	cutoff_len = 40
	threads = 1
adapter: train models/tiny data/train_set
	threads = 1
	max_steps = 2
summary: shell adapter data/train.json
	run = mkdir \$@ && ls \$< > \$@/files.txt && wc -l < data/train.json > \$@/lines.txt; echo summary >> $COUNTER
P
}
counted() { cat "$COUNTER" 2>/dev/null | tr '\n' ' '; }
# Every stored object's name is its SHA-256 and no temporary is left: prints the bad ones.
check_store() { # FOLDER
  for f in "$1"/cas/*; do
    [ -f "$f" ] || continue
    [ "$(sha256sum < "$f" | cut -d' ' -f1)" = "$(basename "$f")" ] || echo "bad object $f"
  done
  find "$1" -name '.*ftpipe-new*' | sed 's/^/temporary left: /'
}

NG="$T_ROOT/nginx"
mkdir -p "$NG/www/cache" "$NG/www/open"
nginx_start "$NG" "$ROOT/tests/fixtures/remote/nginx.conf.in" || exit 1
echo "ftpipe:$(openssl passwd -apr1 'open sesame')" > "$NG/htpasswd"
export FTPIPE_REMOTE="http://127.0.0.1:$NGINX_PORT/cache"
export FTPIPE_REMOTE_TOKEN="ftpipe:open sesame"

t_case "http: workspace A builds the pipeline and pushes every stage as it finishes"
A=$(t_workspace); write_pipeline "$A"
t_run "$FTPIPE" -C "$A"
t_expect_status 0
t_expect_contains "ftpipe: 5 run, 0 restored"
t_expect_contains "pushed   adapter to the remote"
t_expect_lacks "open sesame"
[ "$(counted)" = "data summary " ] || t_fail "counter: $(counted)"
[ "$(ls "$NG/www/cache/ac" | wc -l)" = 5 ] || t_fail "entries on the server: $(ls "$NG/www/cache/ac")"
bad=$(check_store "$NG/www/cache"); [ -z "$bad" ] || t_fail "$bad"
grep -q ' PUT /cache/cas/.* - *$' "$NG/access.log" && t_fail "a PUT went without credentials"
t_end

t_case "http: ftpipe push sends nothing the server has, and remote status says both"
t_run "$FTPIPE" -C "$A" push
t_expect_status 0
t_expect_contains "pushed     adapter (0 B sent"
t_run "$FTPIPE" -C "$A" remote status
t_expect_status 0
t_expect_contains "both       summary"
t_expect_lacks "local "
t_end

t_case "http: a fresh workspace B restores every stage from the remote and runs none"
B=$(t_workspace); write_pipeline "$B"
t_run "$FTPIPE" -C "$B"
t_expect_status 0
t_expect_contains "restored adapter from remote"
t_expect_contains "ftpipe: 0 run, 5 restored (5 restored from remote), 0 up to date"
[ "$(counted)" = "data summary " ] || t_fail "a stage ran in B: $(counted)"
for f in adapter/adapter_model.safetensors data/train_set/meta.json models/tiny/config.json summary/lines.txt; do
  cmp -s "$A/$f" "$B/$f" || t_fail "$f differs between A and B"
done
t_run "$FTPIPE" -C "$B"
t_expect_contains "nothing to do (5 up to date)"
t_end

t_case "http: ftpipe pull restores into a fresh workspace; remote status before says remote"
P=$(t_workspace); write_pipeline "$P"
t_run "$FTPIPE" -C "$P" remote status models/tiny
t_expect_contains "remote     models/tiny"
t_run "$FTPIPE" -C "$P" pull
t_expect_status 0
t_expect_contains "pulled     summary"
cmp -s "$A/summary/lines.txt" "$P/summary/lines.txt" || t_fail "summary differs"
[ "$(counted)" = "data summary " ] || t_fail "a stage ran: $(counted)"
t_end

t_case "http: a wrong password is a clear error that does not show the password"
C=$(t_workspace); write_pipeline "$C"
FTPIPE_REMOTE_TOKEN="ftpipe:wrong-horse" t_run "$FTPIPE" -C "$C"
t_expect_status 1
t_expect_contains "remote http://127.0.0.1:$NGINX_PORT/cache: the server refused the credentials (HTTP 401)"
t_expect_contains "FTPIPE_REMOTE_TOKEN"
t_expect_lacks "wrong-horse"
FTPIPE_REMOTE_TOKEN="ftpipe:wrong-horse" t_run "$FTPIPE" -C "$A" push
t_expect_status 1
t_expect_contains "refused the credentials"
unset_token_out=$(env -u FTPIPE_REMOTE_TOKEN "$FTPIPE" -C "$C" remote status 2>&1)
case "$unset_token_out" in *"the server wants credentials (HTTP 401)"*) ;; *) t_fail "without a token: $unset_token_out" ;; esac
t_end

t_case "http: a corrupted object on the server is refused, named, rebuilt here and replaced by the push"
object="$NG/www/cache/cas/$(sha256sum < "$A/data/train.json" | cut -d' ' -f1)"
[ -f "$object" ] || t_fail "no object for data/train.json on the server"
printf 'forged' | dd of="$object" bs=1 seek=10 conv=notrunc 2>/dev/null
D=$(t_workspace); write_pipeline "$D"
t_run "$FTPIPE" -C "$D"
t_expect_status 0
t_expect_contains "cas/$(basename "$object") (. of data/train.json) does not match its SHA-256 and size: refused"
t_expect_contains "run      data/train.json"
t_expect_contains "ftpipe: 1 run, 4 restored (4 restored from remote)"
[ "$(counted)" = "data summary data " ] || t_fail "counter: $(counted)"
cmp -s "$A/data/train.json" "$D/data/train.json" || t_fail "D's data/train.json differs from A's"
bad=$(check_store "$NG/www/cache"); [ -z "$bad" ] || t_fail "the push did not replace it: $bad"
t_end

t_case "http: an upload killed halfway leaves nothing a reader accepts"
K=$(t_workspace)
printf 'big.bin: shell\n\trun = head -c 100000000 /dev/urandom > $@; echo big >> %s\n' "$COUNTER" > "$K/Ftpipe"
FTPIPE_REMOTE= t_run "$FTPIPE" -C "$K"
t_expect_status 0
rm -rf "$NG/tmp/body"; mkdir -p "$NG/tmp/body"
"$FTPIPE" -C "$K" push > "$T_ROOT/push.out" 2>&1 &
pusher=$!
# Kill it once the server holds part of the upload.
for i in $(seq 2000); do
  [ -n "$(find "$NG/tmp/body" -type f -size +1k 2>/dev/null)" ] && break
  sleep 0.005
done
kill -9 $pusher; wait $pusher 2>/dev/null
sleep 0.2
[ -n "$(find "$NG/www/cache/cas" -size +90000k)" ] && t_fail "the server holds a whole object: the push was not cut (make big.bin bigger)"
bad=$(check_store "$NG/www/cache"); [ -z "$bad" ] || t_fail "$bad"
t_run "$FTPIPE" -C "$K" remote status
t_expect_contains "local      big.bin"
K2=$(t_workspace); cp "$K/Ftpipe" "$K2/"
t_run "$FTPIPE" -C "$K2"
t_expect_status 0
t_expect_contains "ftpipe: 1 run, 0 restored"
t_end

t_case "http: a restore cut halfway resumes with a byte range"
t_run "$FTPIPE" -C "$K" push
t_expect_status 0
big_sha=$(sha256sum < "$K/big.bin" | cut -d' ' -f1)
K3=$(t_workspace); cp "$K/Ftpipe" "$K3/"
FTPIPE_REMOTE="http://127.0.0.1:$NGINX_PORT/slow" "$FTPIPE" -C "$K3" pull > "$T_ROOT/pull.out" 2>&1 &
puller=$!
for i in $(seq 2000); do
  [ "$(stat -c %s "$K3/.ftpipe/cache/incoming/$big_sha" 2>/dev/null || echo 0)" -gt 20000000 ] && break
  sleep 0.005
done
kill -9 $puller; wait $puller 2>/dev/null
kept=$(stat -c %s "$K3/.ftpipe/cache/incoming/$big_sha" 2>/dev/null || echo 0)
[ "$kept" -gt 0 ] && [ "$kept" -lt 100000000 ] || t_fail "the pull was not cut halfway ($kept bytes kept)"
t_run env FTPIPE_REMOTE="http://127.0.0.1:$NGINX_PORT/slow" "$FTPIPE" -C "$K3" pull
t_expect_status 0
t_expect_contains "pulled     big.bin"
cmp -s "$K/big.bin" "$K3/big.bin" || t_fail "big.bin differs after the resumed pull"
sent=$(awk -v u="/slow/cas/$big_sha" '$2 == "GET" && $3 == u && $4 == 206 {print $5}' "$NG/access.log" | tail -1)
[ -n "$sent" ] && [ "$sent" -lt 100000000 ] || t_fail "no byte-range GET of the rest: $(grep "$big_sha" "$NG/access.log")"
[ -e "$K3/.ftpipe/cache/incoming/$big_sha" ] && t_fail "the partial file stayed"
t_end

t_case "http: the server stopped mid-run: the run finishes here with one warning"
S=$(t_workspace); write_pipeline "$S"
# Another key for each stage but init (the counter's text is in the key): init is
# restored, then the data stage stops the server.
sed -i "s|>> $COUNTER|>> $COUNTER.s|" "$S/Ftpipe"
sed -i "s|^\trun = sh \$< train 64 > \$@;|\trun = sh $ROOT/tests/e2e/nginx.sh stop $NG; sh \$< train 64 > \$@;|" "$S/Ftpipe"
t_run "$FTPIPE" -C "$S"
t_expect_status 0
t_expect_contains "restored models/tiny from remote"
t_expect_contains "ftpipe: 4 run, 1 restored (1 restored from remote)"
[ "$(printf '%s\n' "$T_OUT" | grep -c 'warning:')" = 1 ] || t_fail "not exactly one warning: $T_OUT"
t_expect_contains "going on without the remote cache for the rest of this run"
[ -f "$NG/nginx.pid" ] && t_fail "the stage did not stop nginx"
t_end
nginx_stop "$NG"

t_case "file: two workspaces pushing the same pipeline at the same moment never corrupt the remote"
unset FTPIPE_REMOTE_TOKEN
for trial in 1 2 3 4 5 6; do
  R="$T_ROOT/shared-$trial"; mkdir -p "$R"
  W1=$(t_workspace); W2=$(t_workspace)
  for w in "$W1" "$W2"; do
    printf 'a: shell\n\trun = mkdir $@ && seq 1 %s > $@/one && seq 1 5000 > $@/two && echo a >> %s\n' "$trial" "$COUNTER.f" > "$w/Ftpipe"
    printf 'b.txt: shell a\n\trun = cat $</one $</two > $@ && echo b >> %s\n' "$COUNTER.f" >> "$w/Ftpipe"
    printf 'c.txt: shell b.txt\n\trun = wc -c < $< > $@ && echo c >> %s\n' "$COUNTER.f" >> "$w/Ftpipe"
  done
  FTPIPE_REMOTE="file://$R" "$FTPIPE" -C "$W1" > "$T_ROOT/w1.out" 2>&1 & one=$!
  FTPIPE_REMOTE="file://$R" "$FTPIPE" -C "$W2" > "$T_ROOT/w2.out" 2>&1 & two=$!
  wait $one || t_fail "trial $trial: workspace 1 failed: $(cat "$T_ROOT/w1.out")"
  wait $two || t_fail "trial $trial: workspace 2 failed: $(cat "$T_ROOT/w2.out")"
  bad=$(check_store "$R"); [ -z "$bad" ] || t_fail "trial $trial: $bad"
  [ "$(ls "$R/ac" | wc -l)" = 3 ] || t_fail "trial $trial: entries $(ls "$R/ac")"
  W3=$(t_workspace); cp "$W1/Ftpipe" "$W3/"
  : > "$COUNTER.f"
  t_run env FTPIPE_REMOTE="file://$R" "$FTPIPE" -C "$W3"
  t_expect_contains "ftpipe: 0 run, 3 restored (3 restored from remote)"
  [ -s "$COUNTER.f" ] && t_fail "trial $trial: a stage ran in the third workspace"
  cmp -s "$W1/c.txt" "$W3/c.txt" || t_fail "trial $trial: c.txt differs"
done
t_end

t_case "file: a missing remote folder is one warning and a local run; a bad URL and mode are errors"
W=$(t_workspace); printf 'x.txt: shell\n\trun = echo x > $@\n' > "$W/Ftpipe"
t_run env FTPIPE_REMOTE="file://$T_ROOT/not-mounted" "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "warning: remote file://$T_ROOT/not-mounted: the folder does not exist (not mounted?)"
W=$(t_workspace); printf 'x.txt: shell\n\trun = echo x > $@\n' > "$W/Ftpipe"
t_run env FTPIPE_REMOTE="ftp://example" "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "unknown kind of URL"
t_run env FTPIPE_REMOTE="file:///tmp" FTPIPE_REMOTE_MODE=write-only "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "FTPIPE_REMOTE_MODE=write-only: expected read or read-write"
t_run env -u FTPIPE_REMOTE "$FTPIPE" -C "$W" push
t_expect_status 1
t_expect_contains "no remote cache named"
t_end

t_case "file: read mode restores but never writes; .REMOTE in the pipeline names a remote, --remote overrides it"
R="$T_ROOT/readonly"; mkdir -p "$R"
W=$(t_workspace); printf '.REMOTE: file://%s\ny.txt: shell\n\trun = echo y > $@\n' "$R" > "$W/Ftpipe"
t_run env -u FTPIPE_REMOTE FTPIPE_REMOTE_MODE=read "$FTPIPE" -C "$W"
t_expect_status 0
[ -z "$(ls "$R")" ] || t_fail "read mode wrote: $(ls -R "$R")"
t_run env -u FTPIPE_REMOTE "$FTPIPE" -C "$W" push
t_expect_status 0
[ "$(ls "$R/ac" | wc -l)" = 1 ] || t_fail "push did not use .REMOTE"
R2="$T_ROOT/other"; mkdir -p "$R2"
t_run env -u FTPIPE_REMOTE "$FTPIPE" --remote "file://$R2" -C "$W" push
t_expect_status 0
[ "$(ls "$R2/ac" | wc -l)" = 1 ] || t_fail "--remote did not override .REMOTE"
t_end

t_case "signed entries: a reader with the public key restores them and refuses unsigned or wrongly signed ones"
K="$T_ROOT/keys"; mkdir -p "$K"
for k in team other; do
  openssl genpkey -algorithm ed25519 -out "$K/$k.pem" 2>/dev/null
  openssl pkey -in "$K/$k.pem" -pubout -out "$K/$k.pub.pem" 2>/dev/null
done
sign_pipeline() { printf 'signed.txt: shell\n\trun = echo %s > $@ && echo %s >> %s\n' "$2" "$2" "$COUNTER.k" > "$1/Ftpipe"; }
R="$T_ROOT/signed"; mkdir -p "$R"
W=$(t_workspace); sign_pipeline "$W" one
t_run env FTPIPE_REMOTE="file://$R" FTPIPE_REMOTE_KEY="$K/team.pem" "$FTPIPE" -C "$W"
t_expect_status 0
grep -q '^signature ed25519 [0-9a-f]\{128\}$' "$R"/ac/* || t_fail "the entry is not signed: $(cat "$R"/ac/*)"
W=$(t_workspace); sign_pipeline "$W" one
t_run env FTPIPE_REMOTE="file://$R" FTPIPE_REMOTE_PUBLIC_KEY="$K/team.pub.pem" "$FTPIPE" -C "$W"
t_expect_contains "ftpipe: 0 run, 1 restored (1 restored from remote)"
W=$(t_workspace); sign_pipeline "$W" one
t_run env FTPIPE_REMOTE="file://$R" FTPIPE_REMOTE_PUBLIC_KEY="$K/other.pub.pem" FTPIPE_REMOTE_MODE=read "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "has a signature that the public key does not verify"
t_expect_contains "ftpipe: 1 run, 0 restored"
W=$(t_workspace); sign_pipeline "$W" two
t_run env FTPIPE_REMOTE="file://$R" "$FTPIPE" -C "$W"
W=$(t_workspace); sign_pipeline "$W" two
t_run env FTPIPE_REMOTE="file://$R" FTPIPE_REMOTE_PUBLIC_KEY="$K/team.pub.pem" FTPIPE_REMOTE_MODE=read "$FTPIPE" -C "$W"
t_expect_contains "is not signed, and FTPIPE_REMOTE_PUBLIC_KEY asks for signed entries"
t_expect_contains "ftpipe: 1 run, 0 restored"
t_run env FTPIPE_REMOTE="file://$R" FTPIPE_REMOTE_KEY="$K/team.pub.pem" "$FTPIPE" -C "$W"
t_expect_status 1
t_expect_contains "is not an ed25519 private key in PEM form"
t_end
