#!/bin/sh
# The layering check (tests/check_layers.sh) passes on this tree, and fails on an
# include that points up a layer, on a use of a higher layer's function, and on
# two modules that use each other.
. "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
CHECK="$ROOT/tests/check_layers.sh"

t_case "this tree's includes and uses point down the layers"
t_run sh "$CHECK" "$ROOT" "$ROOT/build/obj-asan"
t_expect_status 0
t_expect_contains " 0 bad includes, 0 bad uses, 0 loops"
t_end

# A copy of the sources to spoil.
COPY="$T_ROOT/tree"
mkdir -p "$COPY" && cp -R "$ROOT/ftpipe" "$ROOT/include" "$ROOT/stages" "$COPY/"

t_case "an include that points up a layer fails the check, naming file and line"
sed -i '0,/^#include "ftpipe\/base\/mem.h"$/s//#include "ftpipe\/base\/mem.h"\n#include "ftpipe\/model\/model.h"/' \
  "$COPY/ftpipe/base/strbuf.c"
line=$(grep -n '"ftpipe/model/model.h"' "$COPY/ftpipe/base/strbuf.c" | cut -d: -f1)
t_run sh "$CHECK" "$COPY" "$T_ROOT/no-objects"
t_expect_status 1
t_expect_contains "ftpipe/base/strbuf.c:$line: base includes ftpipe/model/model.h (model is not below base)"
t_expect_contains "1 bad includes"
t_end

# Objects made for the purpose: what nm reads is all the check needs.
OBJECTS="$T_ROOT/objects"
object() { # PATH SOURCE
  mkdir -p "$(dirname "$OBJECTS/$1")" && printf '%s\n' "$2" > "$T_ROOT/source.c" &&
    cc -c -o "$OBJECTS/$1" "$T_ROOT/source.c"
}

t_case "a call from the engine into a stage kind fails the check"
object ftpipe/engine/graph.o 'int kind_run(void); int graph_build(void) { return kind_run(); }'
object stages/shell.o 'int kind_run(void) { return 0; }'
t_run sh "$CHECK" "$ROOT" "$OBJECTS"
t_expect_status 1
t_expect_contains "ftpipe/engine/graph uses stages/shell (stages is not below engine)"
t_end

t_case "two modules of one layer that use each other fail the check as a loop"
rm -rf "$OBJECTS"
object ftpipe/text/bpe.o 'int push(void); int bpe_merge(void) { return push(); }'
object ftpipe/text/tokenizer.o 'int bpe_merge(void); int push(void) { return 1; } int encode(void) { return bpe_merge(); }'
t_run sh "$CHECK" "$ROOT" "$OBJECTS"
t_expect_status 1
t_expect_contains "modules that use each other"
t_expect_contains "ftpipe/text/bpe"
t_expect_contains "1 loops"
t_end
