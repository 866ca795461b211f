# nginx on a free port of 127.0.0.1 for the download tests, serving DIR/www with
# tests/fixtures/download/nginx.conf.in (its locations play the servers) and the
# imitation of the Hugging Face hub in tests/fixtures/download/hub (as DIR/www/hub).
#   . "$(dirname "$0")/nginx.sh"; nginx_start DIR; ... "$NGINX_PORT" ...; nginx_stop DIR
# or, from a C test:  sh tests/e2e/nginx.sh start DIR  (prints the port) / stop DIR
NGINX_FIXTURES="$(cd "$(dirname "$0")/../fixtures/download" && pwd)"
NGINX_PROGRAM=$(command -v nginx || echo /usr/sbin/nginx)

# Starts nginx on a random port, trying another when that one is taken; CONF
# (default: the download tests' nginx.conf.in) is the configuration template.
#   nginx_start DIR [CONF]
nginx_start() {
  _dir=$1
  _conf=${2:-$NGINX_FIXTURES/nginx.conf.in}
  mkdir -p "$_dir/www" "$_dir/tmp"
  cp -R "$NGINX_FIXTURES/hub" "$_dir/www/hub"
  for _try in 1 2 3 4 5 6 7 8; do
    _port=$(( $(od -An -N2 -tu2 /dev/urandom | tr -d ' ') % 30000 + 20000 ))
    sed -e "s|@DIR@|$_dir|g" -e "s|@PORT@|$_port|g" -e "s|@USER@|$(id -un)|g" \
      "$_conf" > "$_dir/nginx.conf"
    # nginx binds before it detaches, so a taken port fails here (after its own few retries).
    if "$NGINX_PROGRAM" -q -p "$_dir" -e "$_dir/error.log" -c "$_dir/nginx.conf" 2>>"$_dir/start.log"; then
      NGINX_PORT=$_port
      return 0
    fi
  done
  echo "nginx did not start; see $_dir/error.log" >&2
  return 1
}

# Stops it and waits (at most 5 s) until it is gone: nginx removes its pid file
# last (a finished daemon may linger as a zombie, so kill -0 cannot tell).
nginx_stop() {
  [ -f "$1/nginx.pid" ] || return 0
  _pid=$(cat "$1/nginx.pid")
  kill "$_pid" 2>/dev/null
  for _i in $(seq 100); do [ -f "$1/nginx.pid" ] || return 0; sleep 0.05; done
  kill -9 "$_pid" 2>/dev/null
}

case "$1" in
  start) nginx_start "$2" && echo "$NGINX_PORT" ;;
  stop) nginx_stop "$2" ;;
esac
