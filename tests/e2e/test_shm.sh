#!/bin/sh
# The shm kind through pipelines: staging, the link, a second run that copies
# nothing, a tmpfs emptied between runs, a folder that does not fit (an error,
# or fallback = disk), and gc of copies no target needs.
#
# Where this user may mount (root), each case gets a small tmpfs of its own, so
# that "does not fit" meets a real tmpfs's free space and emptying it is a real
# unmount. Elsewhere a plain folder stands in: the stage checks free space the
# same way on any file system, and a min_free larger than any disk makes the
# folder not fit.
. "$(dirname "$0")/lib.sh"

UID_DIR="ftpipe-$(id -u)"
MOUNTS=""
cleanup_mounts() { for m in $MOUNTS; do umount "$m" 2>/dev/null; done; }
trap 'cleanup_mounts; chmod -R u+w "$T_ROOT" 2>/dev/null; rm -rf "$T_ROOT"' EXIT

# A staging folder for a case: a fresh tmpfs of $1 (e.g. 8m) where possible.
# Sets SHM and SHM_IS_TMPFS.
make_shm() {
  SHM=$(mktemp -d "$T_ROOT/shm.XXXXXX")
  SHM_IS_TMPFS=no
  if mount -t tmpfs -o "size=$1" tmpfs "$SHM" 2>/dev/null; then
    MOUNTS="$MOUNTS $SHM"
    SHM_IS_TMPFS=yes
  fi
}

# model/: config.json (15 bytes), weights.bin (64 KiB), tokenizer/vocab.txt (4 bytes).
make_model() {
  mkdir -p "$1/model/tokenizer"
  printf '{"layers": 2}\n' > "$1/model/config.json"
  head -c 65536 /dev/zero | tr '\0' 'w' > "$1/model/weights.bin"
  printf 'a b\n' > "$1/model/tokenizer/vocab.txt"
}

write_pipeline() {
  cat > "$1/Ftpipe" <<EOF
models/base_shm: shm model
	dir = $SHM
$2
EOF
}

t_case "stages a folder: the target links to a verified copy in the tmpfs"
make_shm 8m
W=$(t_workspace); make_model "$W"; write_pipeline "$W"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     models/base_shm in"
t_expect_contains "staged 3 files, 64.0 KiB, in $SHM at"
t_expect_contains ", verified"
link=$(readlink "$W/models/base_shm")
case "$link" in "$SHM/$UID_DIR/"*/model) ;; *) t_fail "the link points to $link" ;; esac
cmp -s "$W/model/weights.bin" "$link/weights.bin" || t_fail "weights.bin differs in the copy"
cmp -s "$W/model/tokenizer/vocab.txt" "$W/models/base_shm/tokenizer/vocab.txt" || t_fail "vocab.txt differs"
[ "$SHM_IS_TMPFS" = no ] || [ "$(stat -f -c %T "$link")" = tmpfs ] || t_fail "the copy is not in a tmpfs"
t_end

t_case "a second run copies nothing"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "nothing to do (1 up to date)"
t_end

t_case "another workspace asking for the same content finds the copy"
W2=$(t_workspace); make_model "$W2"; write_pipeline "$W2"
t_run "$FTPIPE" -C "$W2"
t_expect_status 0
t_expect_contains "already staged in $SHM: nothing copied (3 files, 64.0 KiB)"
[ "$(readlink "$W2/models/base_shm")" = "$link" ] || t_fail "W2 links to $(readlink "$W2/models/base_shm"), not $link"
t_end

t_case "an emptied tmpfs is staged again under the same key"
if [ "$SHM_IS_TMPFS" = yes ]; then
  umount "$SHM" && mount -t tmpfs -o size=8m tmpfs "$SHM" || t_fail "cannot remount $SHM"
else
  rm -rf "${SHM:?}/$UID_DIR"
fi
[ ! -e "$link" ] || t_fail "the copy survived emptying"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "run      models/base_shm (shm): its cached output is no longer usable"
t_expect_contains "staged 3 files, 64.0 KiB"
[ "$(readlink "$W/models/base_shm")" = "$link" ] || t_fail "the link changed: $(readlink "$W/models/base_shm")"
cmp -s "$W/model/weights.bin" "$link/weights.bin" || t_fail "weights.bin differs in the new copy"
t_end

t_case "a copy that lost a file is staged again"
chmod u+w "$link"; rm -f "$link/config.json"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "its cached output is no longer usable"
[ -f "$link/config.json" ] || t_fail "config.json was not copied again"
t_end

t_case "a folder that does not fit stops with the sizes and the choices"
if [ "$SHM_IS_TMPFS" = yes ]; then
  make_shm 64k  # smaller than weights.bin alone
  W=$(t_workspace); make_model "$W"; write_pipeline "$W"
  free_text="64.0 KiB"; min_free_text="0 B"
else
  SHM=$(mktemp -d "$T_ROOT/shm.XXXXXX")
  W=$(t_workspace); make_model "$W"; write_pipeline "$W" "	min_free = 100000T"
  free_text=""; min_free_text="97.7 PiB"
fi
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "models/base_shm: model (64.0 KiB) and min_free ($min_free_text) do not fit in $SHM, which has $free_text"
t_expect_contains " free: free space there, give a larger tmpfs with dir =, or set fallback = disk to use the folder on disk"
[ ! -e "$W/models/base_shm" ] || t_fail "a target was made"
[ -z "$(ls "$SHM/$UID_DIR" 2>/dev/null)" ] || t_fail "something was copied: $(ls "$SHM/$UID_DIR")"
t_end

t_case "fallback = disk hands on the folder on disk, and says so"
if [ "$SHM_IS_TMPFS" = yes ]; then
  write_pipeline "$W" "	fallback = disk"
else
  write_pipeline "$W" "	min_free = 100000T
	fallback = disk"
fi
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "not staged: 64.0 KiB and min_free $min_free_text do not fit in $SHM"
t_expect_contains "using the folder on disk, model"
[ "$(readlink "$W/models/base_shm")" = "$(cd "$W/model" && pwd -P)" ] ||
  t_fail "the link points to $(readlink "$W/models/base_shm")"
t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do (1 up to date)"
t_end

t_case "a stage with two inputs is refused"
make_shm 8m
W=$(t_workspace); make_model "$W"; mkdir "$W/data"
printf 'both: shm model data\n\tdir = %s\n' "$SHM" > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "both: shm stages one folder: give exactly one input (it has 2)"
t_end

t_case "ftpipe gc removes copies no current target needs"
make_shm 8m
W=$(t_workspace); make_model "$W"; write_pipeline "$W"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
old=$(readlink "$W/models/base_shm")
printf '{"layers": 3}\n' > "$W/model/config.json"   # new content: a new key and a new copy
t_run "$FTPIPE" -C "$W"
t_expect_status 0
new=$(readlink "$W/models/base_shm")
[ "$old" != "$new" ] || t_fail "the copy did not move to a new key"
[ -d "$old" ] || t_fail "the old copy is already gone"
t_run "$FTPIPE" -C "$W" gc
t_expect_status 0
[ ! -e "$old" ] || t_fail "gc left the stale copy $old"
[ -f "$new/config.json" ] || t_fail "gc removed the copy the target needs"
t_end
