#!/bin/sh
# The remote cache on S3: every request signed by libcurl (SigV4) and checked by
# tests/e2e/s3_server.py, which verifies signatures as AWS publishes the algorithm.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
COUNTER="$T_ROOT/counter"

mkdir -p "$T_ROOT/s3/data"
python3 "$ROOT/tests/e2e/s3_server.py" "$T_ROOT/s3/data" AKIDFTPIPETEST 'wJalr/K7MDENG+bPxRfiCY' eu-west-3 \
  > "$T_ROOT/s3/port" 2>"$T_ROOT/s3/server.err" &
server=$!
trap 'kill $server 2>/dev/null; chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT
for i in $(seq 100); do [ -s "$T_ROOT/s3/port" ] && break; sleep 0.05; done
PORT=$(cat "$T_ROOT/s3/port")
export FTPIPE_S3_ENDPOINT="http://127.0.0.1:$PORT" FTPIPE_REMOTE="s3://team-bucket/ftpipe/cache"
export AWS_ACCESS_KEY_ID=AKIDFTPIPETEST AWS_SECRET_ACCESS_KEY='wJalr/K7MDENG+bPxRfiCY' AWS_REGION=eu-west-3

write_pipeline() {
  cat > "$1/Ftpipe" <<P
models/tiny: init
	dtype = f32
	threads = 1
notes: shell models/tiny
	run = mkdir \$@ && ls \$< > \$@/files.txt && echo notes >> $COUNTER
P
}

t_case "s3: the test server refuses a request that is not signed, or signed with another secret"
code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT --data x "http://127.0.0.1:$PORT/team-bucket/x")
[ "$code" = 403 ] || t_fail "an unsigned PUT got $code"
code=$(curl -s -o /dev/null -w '%{http_code}' --aws-sigv4 aws:amz:eu-west-3:s3 -u AKIDFTPIPETEST:other \
  -H 'x-amz-content-sha256: UNSIGNED-PAYLOAD' -T /dev/null "http://127.0.0.1:$PORT/team-bucket/x")
[ "$code" = 403 ] || t_fail "a PUT signed with another secret got $code"
t_end

t_case "s3: workspace A builds and pushes with signed requests"
A=$(t_workspace); write_pipeline "$A"
t_run "$FTPIPE" -C "$A"
t_expect_status 0
t_expect_contains "ftpipe: 2 run, 0 restored"
t_expect_lacks "warning"
[ "$(ls "$T_ROOT/s3/data/team-bucket/ftpipe/cache/ac" | wc -l)" = 2 ] || t_fail "entries: $(ls -R "$T_ROOT/s3/data")"
grep -q '^PUT .* 200 ' "$T_ROOT/s3/s3.log" || t_fail "no accepted PUT: $(cat "$T_ROOT/s3/s3.log")"
# The two refusals are the first case's; none of ftpipe's requests was refused.
[ "$(grep -c ' 403 ' "$T_ROOT/s3/s3.log")" = 2 ] || t_fail "ftpipe's requests were refused: $(cat "$T_ROOT/s3/s3.log")"
t_end

t_case "s3: a fresh workspace B restores both stages and runs none"
B=$(t_workspace); write_pipeline "$B"
t_run "$FTPIPE" -C "$B"
t_expect_status 0
t_expect_contains "ftpipe: 0 run, 2 restored (2 restored from remote)"
[ "$(cat "$COUNTER")" = notes ] || t_fail "counter: $(cat "$COUNTER")"
cmp -s "$A/models/tiny/model.safetensors" "$B/models/tiny/model.safetensors" || t_fail "the model differs"
t_run "$FTPIPE" -C "$B" remote status
t_expect_contains "both       notes"
t_end

t_case "s3: a wrong secret is a clear error that does not show it"
C=$(t_workspace); write_pipeline "$C"
AWS_SECRET_ACCESS_KEY=not-the-secret t_run "$FTPIPE" -C "$C"
t_expect_status 1
t_expect_contains "S3 refused the request (HTTP 403)"
t_expect_lacks "not-the-secret"
t_run env -u AWS_ACCESS_KEY_ID "$FTPIPE" -C "$C"
t_expect_status 1
t_expect_contains "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
t_end
