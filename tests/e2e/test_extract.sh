#!/bin/sh
# The extract kind through pipelines: archives made by tar and refused hostile
# ones. (tests/unit/test_archive_extract.c covers every refusal and format.)
. "$(dirname "$0")/lib.sh"

# src/model/: config.json, weights.bin (4 KiB), run.sh (executable).
make_tree() {
  mkdir -p "$1/src/model"
  printf '{"layers": 2}\n' > "$1/src/model/config.json"
  head -c 4096 /dev/zero | tr '\0' 'w' > "$1/src/model/weights.bin"
  printf '#!/bin/sh\necho hi\n' > "$1/src/model/run.sh"
  chmod 755 "$1/src/model/run.sh"
}

t_case "unpacks a tar.zst made by tar into a read-only folder"
W=$(t_workspace); make_tree "$W"
tar -C "$W/src" --zstd -cf "$W/model.tar.zst" model
printf 'unpacked: extract model.tar.zst\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "done     unpacked in"
t_expect_contains ": 3 files, 4.0 KiB (1 folder, 0 links)"
cmp -s "$W/src/model/weights.bin" "$W/unpacked/model/weights.bin" || t_fail "weights.bin differs"
[ -x "$W/unpacked/model/run.sh" ] || t_fail "run.sh lost its executable bit"
[ "$(stat -c %a "$W/unpacked/model/config.json")" = 444 ] || t_fail "config.json is writable"
t_end

t_case "strip_components drops the archive's top folder, and enters the key"
printf 'unpacked: extract model.tar.zst\n\tstrip_components = 1\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_status 0
t_expect_contains "run      unpacked (extract): "
[ -f "$W/unpacked/config.json" ] || t_fail "config.json is not at the top: $(ls "$W/unpacked")"
t_end

t_case "max_size does not enter the key"
printf 'unpacked: extract model.tar.zst\n\tstrip_components = 1\n\tmax_size = 1G\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_contains "nothing to do (1 up to date)"
t_end

t_case "an archive with a .. entry is refused, naming it"
W=$(t_workspace); mkdir -p "$W/a"; echo secret > "$W/secret.txt"
(cd "$W/a" && tar -cPf ../evil.tar ../secret.txt)
printf 'unpacked: extract evil.tar\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "cannot extract $W/evil.tar: entry \"../secret.txt\" has a \"..\" component, which would reach outside the destination"
[ ! -e "$W/unpacked" ] || t_fail "a target was made"
t_end

t_case "an archive with a link leading outside is refused, naming it"
W=$(t_workspace); mkdir -p "$W/a"
ln -s ../../etc "$W/a/escape"
tar -C "$W/a" -czf "$W/link.tar.gz" escape
printf 'unpacked: extract link.tar.gz\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "cannot extract $W/link.tar.gz: entry \"escape\" is a symbolic link to \"../../etc\", which points outside the destination"
t_end

t_case "an archive past max_size is refused, naming the entry"
W=$(t_workspace); make_tree "$W"
tar -C "$W/src" -cf "$W/model.tar" model/weights.bin
printf 'unpacked: extract model.tar\n\tmax_size = 1K\n' > "$W/Ftpipe"
t_run "$FTPIPE" -C "$W"
t_expect_fail
t_expect_contains "cannot extract $W/model.tar: entry \"model/weights.bin\" declares 4.0 KiB, which takes the archive past the size limit of 1.0 KiB"
t_end
