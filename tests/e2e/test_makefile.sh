#!/bin/sh
# The Makefile: a plain `make` builds the program, with and without the CUDA toolkit.
# Dry runs (-n -B) of a copy of the tracked files, so nothing is built twice.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CLONE="$T_ROOT/clone"
mkdir -p "$CLONE"
(cd "$ROOT" && git ls-files -z 2>/dev/null | xargs -0 cp --parents -t "$CLONE" 2>/dev/null) ||
  cp -r "$ROOT/Makefile" "$ROOT/ftpipe" "$ROOT/stages" "$ROOT/rules" "$ROOT/include" "$CLONE/"
# A stand-in nvcc: the dry run only needs the CUDA part of the Makefile switched on.
mkdir -p "$T_ROOT/cuda/bin"
printf '#!/bin/sh\nexit 0\n' > "$T_ROOT/cuda/bin/nvcc"; chmod +x "$T_ROOT/cuda/bin/nvcc"

for nvcc in "" "$T_ROOT/cuda/bin/nvcc"; do
  t_case "plain make on a clean clone links build/ftpipe (nvcc: ${nvcc:-none})"
  t_run make -n -B -C "$CLONE" NVCC="$nvcc"
  t_expect_status 0
  t_expect_contains "-o build/ftpipe "
  case "$nvcc" in ?*) t_expect_contains "cuda/bin/nvcc" ;; esac
  t_end
done

# ftpipe finds ftpipe-full beside itself (ftpipe/cli/front_main.c): both are built
# and installed side by side.
t_case "make builds ftpipe and ftpipe-full, and make install puts them side by side"
t_run make -n -B -C "$CLONE" NVCC= install PREFIX=/opt/ftpipe
t_expect_status 0
t_expect_contains "-o build/ftpipe-full "
t_expect_contains "build/ftpipe-full /opt/ftpipe/bin/ftpipe-full"
t_expect_contains "build/ftpipe /opt/ftpipe/bin/ftpipe"
t_end
