#!/bin/sh
# Creates the oracle environment (make oracles): a Python virtual environment at
# VENV (default build/oracles) holding exactly the pinned packages of
# tests/oracle/requirements*.txt, from PyPI. The wheels are kept in
# ORACLE_WHEELS (default ~/.cache/ftpipe/oracle-wheels; pip's own cache keeps no
# downloads where the index forbids it) and pip's cache keeps the DeepSpeed wheel
# it builds, so making the environment again downloads only what changed.
# The Makefile reruns this only when a requirements file or this script changes.
set -e
cd "$(dirname "$0")/../.."
VENV=${1:-build/oracles}
WHEELS=${ORACLE_WHEELS:-$HOME/.cache/ftpipe/oracle-wheels}
start=$(date +%s)

rm -rf "$VENV"
# Debian's python3 makes virtual environments only with python3-venv.
if ! python3 -m venv "$VENV" >/dev/null 2>&1; then
  echo "oracles: installing python3-venv"
  sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq python3-venv >/dev/null
  rm -rf "$VENV"
  python3 -m venv "$VENV"
fi
pip="$VENV/bin/python -m pip --disable-pip-version-check --no-input"
echo "oracles: fetching tests/oracle/requirements.txt into $WHEELS (what is there already stays)"
mkdir -p "$WHEELS"
$pip download -q --no-deps --only-binary=:all: -d "$WHEELS" -r tests/oracle/requirements.txt
echo "oracles: installing them into $VENV"
$pip install -q --no-deps --no-index --find-links "$WHEELS" -r tests/oracle/requirements.txt
echo "oracles: building tests/oracle/requirements-source.txt"
DS_BUILD_OPS=0 $pip install -q --no-deps --no-build-isolation -r tests/oracle/requirements-source.txt
touch "$VENV/.installed"
echo "oracles: $VENV ready in $(($(date +%s) - start)) s, $(du -sh "$VENV" | cut -f1)"
