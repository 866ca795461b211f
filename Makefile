# ftpipe — build, test, install.
#   make            builds build/ftpipe (installing missing Debian packages first)
#                   (the source folder is ftpipe/, so the program cannot sit beside it)
#   make test       builds with AddressSanitizer + UBSan and runs every test
#   make quickstart runs examples/quickstart end to end
#   make bench      runs the benchmarks in tests/bench (GPU ones skip without a GPU)
#   make gpu-tests  builds build/gpu/ to carry to a GPU machine (sh tests/gpu/run.sh there)
#   make install PREFIX=/usr/local

PREFIX  ?= /usr/local
CC      ?= cc
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)

# Debian packages the build and the tests need; `make deps` installs the missing ones.
DEB_PACKAGES = gcc make pkg-config libsqlite3-dev libarchive-dev libcurl4-openssl-dev \
               libxxhash-dev xxhash libpcre2-dev libutf8proc-dev libjansson-dev \
               libopenblas-dev libzstd-dev zstd nginx rclone util-linux
# Tools the tests run, as command:package, installed only when the command is missing
# (a machine may have them from elsewhere).
TEST_TOOLS = python3:python3
# Packages only `make test` needs, not the quickstart: Debian's chromium opens the
# HTML report headless (tests/e2e/test_report.sh).
TEST_PACKAGES = chromium
PKG_LIBS = sqlite3 libarchive libcurl libxxhash libpcre2-8 libutf8proc jansson

WARNINGS = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -Iinclude -Ibuild/gen $(WARNINGS) -MMD -MP -pthread
RELEASE_CFLAGS = -O2 -g -march=x86-64-v2
ASAN_CFLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDLIBS = $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null) -lopenblas -lpthread -lm

# ftpipe/SUBSYSTEM/*.c (the backends one folder deeper) and the stage kinds.
CORE_SOURCES = $(filter-out ftpipe/cli/main.c,$(wildcard ftpipe/*/*.c ftpipe/*/*/*.c)) $(wildcard stages/*.c) \
               build/gen/builtin_rules.c
TEST_SOURCES = $(wildcard tests/unit/*/test_*.c tests/unit/*/*/test_*.c)

# --- CUDA backend (begin) ------------------------------------------------------
# Built whenever nvcc is found (/usr/local/cuda/bin/nvcc, or nvcc on PATH):
# ftpipe/backend/cuda/*.cu go into the core archive (one object serves the release and
# the ASan archive: nvcc does not sanitize), for sm_90 plus this machine's GPU
# when it has another. The CUDA runtime is linked statically and cuBLASLt is
# opened when the backend starts, so a program that never touches a GPU loads
# neither. Without nvcc, ftpipe/backend/cuda/unavailable.c says so when asked.
#   make gpu-tests  builds build/gpu/: the GPU test and benchmark programs and the
#                   shared libraries they need, to carry to a GPU machine and run
#                   there with sh tests/gpu/run.sh (not part of make test)
NVCC ?= $(firstword $(wildcard /usr/local/cuda/bin/nvcc) $(shell command -v nvcc 2>/dev/null))
ifneq ($(NVCC),)
CUDA_HOME := $(patsubst %/bin/nvcc,%,$(NVCC))
HOST_CUDA_ARCH := $(shell nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n1 | tr -d .)
CUDA_ARCHS := $(sort 90 $(HOST_CUDA_ARCH))
# No fast math: the reductions (norms, softmax, loss) are compared with the cpu backend.
NVCC_FLAGS = -std=c++17 -O3 -Iinclude $(foreach a,$(CUDA_ARCHS),-gencode arch=compute_$(a),code=sm_$(a)) \
             -Xcompiler -Wall,-Wextra,-Werror,-Wno-unused-parameter -Werror all-warnings -MMD -MP
CUDA_OBJECTS = $(patsubst %.cu,build/obj-cuda/%.o,$(wildcard ftpipe/backend/cuda/*.cu))
CORE_SOURCES := $(filter-out ftpipe/backend/cuda/unavailable.c,$(CORE_SOURCES))
LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++

build/obj-cuda/%.o: %.cu | build/.deps-ok
	@mkdir -p $(dir $@)
	$(NVCC) $(NVCC_FLAGS) -c $< -o $@
build/obj-release/libftpipe.a build/obj-asan/libftpipe.a: $(CUDA_OBJECTS)

GPU_PROGRAMS = $(patsubst tests/gpu/%.c,build/gpu/%,$(wildcard tests/gpu/test_*.c)) build/gpu/cuda_vs_torch \
               build/gpu/ftpipe_logits
build/gpu/test_%: tests/gpu/test_%.c build/obj-release/libftpipe.a tests/unit/check.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -Itests/unit -o $@ $< build/obj-release/libftpipe.a -Wl,--as-needed $(LDLIBS)
build/gpu/cuda_vs_torch: tests/bench/cuda_vs_torch.c build/obj-release/libftpipe.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -o $@ $< build/obj-release/libftpipe.a -Wl,--as-needed $(LDLIBS)
# The shared libraries a GPU machine may lack (all but the C and C++ runtimes) go beside the
# programs; build/ftpipe's too, for tests/bench/peft_check.sh.
gpu-tests: $(GPU_PROGRAMS) build/ftpipe
	@rm -rf build/gpu/lib && mkdir -p build/gpu/lib
	@for p in $(GPU_PROGRAMS) build/ftpipe; do ldd $$p | awk '$$3 ~ /^\// {print $$3}'; done | sort -u | \
	  grep -v -E '/(libc|libm|libdl|librt|libpthread|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so' | \
	  while read lib; do cp -L $$lib build/gpu/lib/; done
else
gpu-tests:
	@echo "gpu-tests: nvcc not found (install the CUDA toolkit)"; exit 1
endif
.PHONY: gpu-tests
# ftpipe's logits on the cpu backend, for tests/bench/peft_check.sh (part of gpu-tests; needs no nvcc).
build/gpu/ftpipe_logits: tests/bench/ftpipe_logits.c build/obj-release/libftpipe.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -o $@ $< build/obj-release/libftpipe.a -Wl,--as-needed $(LDLIBS)
# --- CUDA backend (end) --------------------------------------------------------

RELEASE_OBJECTS = $(patsubst %.c,build/obj-release/%.o,$(CORE_SOURCES))
ASAN_OBJECTS    = $(patsubst %.c,build/obj-asan/%.o,$(CORE_SOURCES))
TEST_BINARIES   = $(patsubst tests/unit/%.c,build/asan/tests/%,$(TEST_SOURCES))

.PHONY: all deps test quickstart bench install clean fuzz
all: build/ftpipe

build/.deps-ok: Makefile
	@missing=""; for p in $(DEB_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for t in $(TEST_TOOLS); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null || \
	  { echo "could not install:$$missing (run as root or with sudo)"; exit 1; }; \
	fi
	@mkdir -p build && touch $@
deps: build/.deps-ok

build/.test-deps-ok: Makefile | build/.deps-ok
	@missing=""; for p in $(TEST_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages for the tests:$$missing"; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing >/dev/null || \
	  { echo "could not install:$$missing (run as root or with sudo)"; exit 1; }; \
	fi
	@touch $@

# Rule files are compiled into the program so that it runs from anywhere.
build/gen/builtin_rules.c: $(wildcard rules/*.ft) | build/.deps-ok
	@mkdir -p build/gen
	@{ echo '/* generated from the rule files in rules/ by the Makefile */'; \
	   echo '#include <stddef.h>'; \
	   echo 'const char *const ft_builtin_rule_files[][2] = {'; \
	   for f in $(sort $(wildcard rules/*.ft)); do \
	     printf '    {"%s",\n' "$$(basename $$f)"; \
	     sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/     "/' -e 's/$$/\\n"/' $$f; \
	     echo '    },'; \
	   done; \
	   echo '    {NULL, NULL}};'; } > $@

build/obj-release/%.o: %.c | build/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -c $< -o $@

build/obj-asan/%.o: %.c | build/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(ASAN_CFLAGS) -c $< -o $@

# The core is an archive, so a test links only the modules it uses.
build/obj-release/libftpipe.a: $(RELEASE_OBJECTS)
	@rm -f $@; ar rcs $@ $^
build/obj-asan/libftpipe.a: $(ASAN_OBJECTS)
	@rm -f $@; ar rcs $@ $^

build/ftpipe: build/obj-release/ftpipe/cli/main.o build/obj-release/libftpipe.a
	$(CC) -pthread -o $@ $^ $(LDLIBS)

build/asan/ftpipe: build/obj-asan/ftpipe/cli/main.o build/obj-asan/libftpipe.a
	@mkdir -p $(dir $@)
	$(CC) -pthread $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

build/asan/tests/%: tests/unit/%.c build/obj-asan/libftpipe.a tests/unit/check.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(ASAN_CFLAGS) -Itests/unit -o $@ $< build/obj-asan/libftpipe.a $(LDLIBS)

# Fuzz targets (tests/fuzz/fuzz_*.c) with clang's libFuzzer:
#   make fuzz && build/fuzz/fuzz_safetensors -max_total_time=60
FUZZ_OBJECTS = $(patsubst %.c,build/obj-fuzz/%.o,$(CORE_SOURCES))
build/obj-fuzz/%.o: %.c | build/.deps-ok
	@mkdir -p $(dir $@)
	clang $(BASE_CFLAGS) -g -O1 -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
build/obj-fuzz/libftpipe.a: $(FUZZ_OBJECTS)
	@rm -f $@; ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c build/obj-fuzz/libftpipe.a
	@mkdir -p $(dir $@)
	clang $(BASE_CFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< build/obj-fuzz/libftpipe.a $(LDLIBS)
fuzz: $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

test: build/.test-deps-ok build/asan/ftpipe $(TEST_BINARIES) build/ftpipe
	@sh tests/run.sh

quickstart: build/ftpipe
	build/ftpipe -C examples/quickstart

bench: build/ftpipe
	@for b in tests/bench/*.sh; do sh $$b || exit 1; done

install: build/ftpipe
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 build/ftpipe $(DESTDIR)$(PREFIX)/bin/ftpipe

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
