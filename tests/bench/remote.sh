#!/bin/sh
# The remote cache over loopback against nginx (WebDAV PUT, basic auth):
#  1. a 4 GiB model folder (one 3 GiB file, 8 of 64 MiB, 4096 of 128 KiB, as in
#     shm.sh) pushed and restored by ftpipe (`ftpipe push`, then `ftpipe pull` into
#     a fresh workspace: SHA-256 of every object going up, size, SHA-256 and XXH3
#     checked coming down), against `curl --parallel --parallel-max 8` (one PUT /
#     GET per file, nothing checked) and `rclone copy --transfers 8` (webdav
#     backend up, the same down) of the same files;
#  2. the whole quickstart pipeline restored from the remote into a fresh
#     workspace, against computing it there.
# Alternating, RUNS times each; prints medians and ratios (peer time / ftpipe time:
# above 1, ftpipe is faster).
#   RUNS=3 BENCH_DIR=/tmp/ftpipe-bench sh tests/bench/remote.sh
# Needs nginx's dav-ext module for rclone (apt-get install libnginx-mod-http-dav-ext).
set -e
cd "$(dirname "$0")/../.."
REPO=$(pwd)
FTPIPE=${FTPIPE:-$REPO/build/ftpipe}
RUNS=${RUNS:-3}
DIR=${BENCH_DIR:-/tmp/ftpipe-bench}
SOURCE="$DIR/shm-source-4GiB"
GIB=1073741824
[ -e /usr/lib/nginx/modules/ngx_http_dav_ext_module.so ] ||
  { echo "remote.sh: needs nginx's dav-ext module: apt-get install libnginx-mod-http-dav-ext"; exit 1; }

mkdir -p "$DIR"
if [ ! -e "$SOURCE.complete" ]; then
  echo "making $SOURCE (4 GiB of random bytes)..."
  rm -rf "$SOURCE"
  mkdir -p "$SOURCE/shards" "$SOURCE/small"
  head -c $((3 * GIB)) /dev/urandom > "$SOURCE/model.bin"
  head -c $((GIB / 2)) /dev/urandom | split -b 64M -a 1 - "$SOURCE/shards/shard-"
  head -c $((GIB / 2)) /dev/urandom | split -b 128K -a 4 - "$SOURCE/small/part-"
  touch "$SOURCE.complete"
fi
free_bytes=$(df -B1 --output=avail "$DIR" | tail -1)
[ "$free_bytes" -ge $((18 * GIB)) ] || { echo "$DIR has $free_bytes bytes free; the benchmark needs 18 GiB"; exit 1; }

RUN=$(mktemp -d "$DIR/remote-bench.XXXXXX")
NG="$RUN/nginx"
trap 'kill $(cat "$NG/nginx.pid" 2>/dev/null) 2>/dev/null; chmod -R u+w "$RUN" 2>/dev/null; rm -rf "$RUN"' EXIT
mkdir -p "$NG/www/cache" "$NG/www/.tmp" "$NG/tmp"
for try in 1 2 3 4 5; do
  PORT=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
  sed -e "s|@DIR@|$NG|g" -e "s|@PORT@|$PORT|g" -e "s|@USER@|$(id -un)|g" tests/bench/remote_nginx.conf.in > "$NG/nginx.conf"
  nginx -q -p "$NG" -e "$NG/error.log" -c "$NG/nginx.conf" 2>/dev/null && break
done
echo "ftpipe:$(openssl passwd -apr1 bench-password)" > "$NG/htpasswd"
URL="http://127.0.0.1:$PORT/cache"
export FTPIPE_REMOTE_TOKEN="ftpipe:bench-password"
export RCLONE_CONFIG_BENCH_TYPE=webdav RCLONE_CONFIG_BENCH_URL="$URL" RCLONE_CONFIG_BENCH_USER=ftpipe
RCLONE_CONFIG_BENCH_PASS=$(rclone obscure bench-password); export RCLONE_CONFIG_BENCH_PASS
TIMES="$RUN/times"; mkdir -p "$TIMES"

now_ns() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
time_into() { f=$1; shift; s=$(now_ns); "$@"; e=$(now_ns); echo $(( (e - s) / 1000 )) >> "$f"; }
quiet() { "$@" > "$RUN/last.log" 2>&1 || { cat "$RUN/last.log"; exit 1; }; }

# curl's config: one upload-file/url (or url/output) pair per file.
( cd "$SOURCE" && find . -type f | sed 's|^\./||' | sort ) > "$RUN/files"
curl_up() { awk -v s="$SOURCE" -v u="$URL/$1" '{printf "upload-file = \"%s/%s\"\nurl = \"%s/%s\"\n", s, $0, u, $0}' "$RUN/files"; }
curl_down() { awk -v d="$2" -v u="$URL/$1" '{printf "url = \"%s/%s\"\noutput = \"%s/%s\"\n", u, $0, d, $0}' "$RUN/files"; }

# ftpipe's side: a workspace whose stage output is the folder (built once, untimed).
A="$RUN/workspace-a"; mkdir -p "$A"
printf 'model: shell\n\trun = cp -r %s $@\n' "$SOURCE" > "$A/Ftpipe"
quiet "$FTPIPE" -C "$A"

for r in $(seq "$RUNS"); do
  FTPIPE_REMOTE="$URL/ftpipe-$r" time_into "$TIMES/ftpipe-push" quiet "$FTPIPE" -C "$A" push
  B="$RUN/workspace-b"; mkdir -p "$B"; cp "$A/Ftpipe" "$B/"
  FTPIPE_REMOTE="$URL/ftpipe-$r" time_into "$TIMES/ftpipe-pull" quiet "$FTPIPE" -C "$B" pull
  cmp "$SOURCE/model.bin" "$B/model/model.bin"
  chmod -R u+w "$B"; rm -rf "$B" "$NG/www/cache/ftpipe-$r"

  curl_up "curl-$r" > "$RUN/up.cfg"
  time_into "$TIMES/curl-push" quiet curl -sSf --parallel --parallel-max 8 -u ftpipe:bench-password -K "$RUN/up.cfg"
  curl_down "curl-$r" "$RUN/curl-down" > "$RUN/down.cfg"
  time_into "$TIMES/curl-pull" quiet curl -sSf --parallel --parallel-max 8 --create-dirs -u ftpipe:bench-password -K "$RUN/down.cfg"
  cmp "$SOURCE/model.bin" "$RUN/curl-down/model.bin"
  rm -rf "$RUN/curl-down" "$NG/www/cache/curl-$r"

  time_into "$TIMES/rclone-push" quiet rclone copy --transfers 8 "$SOURCE" "bench:rclone-$r"
  time_into "$TIMES/rclone-pull" quiet rclone copy --transfers 8 "bench:rclone-$r" "$RUN/rclone-down"
  cmp "$SOURCE/model.bin" "$RUN/rclone-down/model.bin"
  rm -rf "$RUN/rclone-down" "$NG/www/cache/rclone-$r"
done
chmod -R u+w "$A"; rm -rf "$A"

# The quickstart: computed in a fresh copy, against restored from the remote in one.
quickstart_copy() { rm -rf "$1"; mkdir -p "$1"; cp "$REPO/examples/quickstart/Ftpipe" "$REPO/examples/quickstart/make_addition_data.sh" "$1/"; }
quickstart_copy "$RUN/qs-first"
FTPIPE_REMOTE="$URL/quickstart" quiet "$FTPIPE" -C "$RUN/qs-first"
for r in $(seq "$RUNS"); do
  quickstart_copy "$RUN/qs"
  time_into "$TIMES/qs-compute" quiet "$FTPIPE" -C "$RUN/qs"
  chmod -R u+w "$RUN/qs"
  quickstart_copy "$RUN/qs"
  FTPIPE_REMOTE="$URL/quickstart" time_into "$TIMES/qs-restore" quiet "$FTPIPE" -C "$RUN/qs"
  grep -q "0 run, 7 restored (7 restored from remote)" "$RUN/last.log" || { cat "$RUN/last.log"; exit 1; }
  chmod -R u+w "$RUN/qs"
done

echo "remote cache over loopback, nginx WebDAV + basic auth; median of $RUNS runs ($(nproc) cores):"
echo "  a 4 GiB folder (one 3 GiB file, 8 of 64 MiB, 4096 of 128 KiB):"
for way in push pull; do
  f=$(median < "$TIMES/ftpipe-$way"); c=$(median < "$TIMES/curl-$way"); r=$(median < "$TIMES/rclone-$way")
  awk -v w=$way -v f="$f" -v c="$c" -v r="$r" 'BEGIN {
    printf "    %s: ftpipe %6.2f s (%4.2f GiB/s)  curl --parallel 8 %6.2f s  rclone --transfers 8 %6.2f s  -> %.2fx curl, %.2fx rclone\n",
           w == "push" ? "push   " : "restore", f / 1e6, 4 / (f / 1e6), c / 1e6, r / 1e6, c / f, r / f }'
done
c=$(median < "$TIMES/qs-compute"); q=$(median < "$TIMES/qs-restore")
awk -v c="$c" -v q="$q" 'BEGIN { printf "  quickstart: computed %.2f s, restored from the remote %.2f s -> %.1fx faster\n", c / 1e6, q / 1e6, c / q }'
