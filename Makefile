# ftpipe — build, test, install.
#   make            builds build/ftpipe (installing missing Debian packages first)
#                   (the source folder is ftpipe/, so the program cannot sit beside it)
#   make test       builds with AddressSanitizer + UBSan and runs every test
#   make quickstart runs examples/quickstart end to end
#   make fuzz       builds the fuzz targets (tests/fuzz) with clang's libFuzzer
#   make coverage   prints the engine's gcov branch coverage
#   make bench      runs the benchmarks in tests/bench (GPU ones skip without a GPU, counted apart)
#   make gpu-tests  builds build/gpu/ to carry to a GPU machine (sh tests/gpu/run.sh there)
#   make oracles    creates build/oracles: the reference implementations, pinned, from PyPI
#   make check-oracles  holds ftpipe against them (tests/oracle; needs PyPI once)
#   make install PREFIX=/usr/local

# `all` is the goal of a plain `make`, whatever rule happens to come first below.
.DEFAULT_GOAL := all

PREFIX  ?= /usr/local
CC      ?= cc
JOBS    ?= $(shell nproc 2>/dev/null || echo 2)
# Builds run JOBS compile jobs at once (a -j on the command line wins).
MAKEFLAGS += -j$(JOBS)

# Debian packages the build and the quickstart need; `make deps` installs the missing ones.
DEB_PACKAGES = gcc make pkg-config libsqlite3-dev libarchive-dev libcurl4-openssl-dev \
               libxxhash-dev xxhash libpcre2-dev libutf8proc-dev libjansson-dev \
               libopenblas-dev libssl-dev libzstd-dev zstd libyaml-dev util-linux \
               libjpeg62-turbo-dev libpng-dev libwebp-dev
# What only `make test` needs: nginx plays a web server in the tests, Slurm with
# munge runs the Slurm executor's (the tests start their own; none is left
# running or enabled as a service), and chromium opens the HTML report headless
# (tests/e2e/test_report.sh).
TEST_PACKAGES = nginx munge slurmctld slurmd slurm-client chromium
# Tools the tests run, as command:package, installed only when the command is missing
# (a machine may have them from elsewhere): clang builds the fuzz targets.
TEST_TOOLS = python3:python3 clang:clang openssl:openssl
PKG_LIBS = sqlite3 libarchive libcurl libcrypto libxxhash libpcre2-8 libutf8proc jansson yaml-0.1 libjpeg libpng libwebp \
           libwebpdemux

WARNINGS = -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wno-unused-parameter
BASE_CFLAGS = -std=c11 -D_GNU_SOURCE -Iinclude -Ibuild/gen $(WARNINGS) -MMD -MP -pthread
RELEASE_CFLAGS = -O2 -g -march=x86-64-v2
ASAN_CFLAGS = -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
LDLIBS = $(shell pkg-config --libs $(PKG_LIBS) 2>/dev/null) -lopenblas -lpthread -lm

# ftpipe/SUBSYSTEM/*.c (the backends one folder deeper) and the stage kinds.
CORE_SOURCES = $(filter-out ftpipe/cli/main.c ftpipe/cli/front_main.c,$(wildcard ftpipe/*/*.c ftpipe/*/*/*.c)) $(wildcard stages/*.c) \
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
               build/gpu/ftpipe_logits build/gpu/cuda_decode_bandwidth
build/gpu/test_%: tests/gpu/test_%.c build/obj-release/libftpipe.a tests/unit/check.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -Itests/unit -o $@ $< build/obj-release/libftpipe.a -Wl,--as-needed $(LDLIBS)
build/gpu/cuda_decode_bandwidth: tests/bench/cuda_decode_bandwidth.c build/obj-release/libftpipe.a tests/gpu/gpu_check.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -Itests/unit -Itests/gpu -o $@ $< build/obj-release/libftpipe.a -Wl,--as-needed $(LDLIBS)
build/gpu/cuda_vs_torch: tests/bench/cuda_vs_torch.c build/obj-release/libftpipe.a
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(RELEASE_CFLAGS) -o $@ $< build/obj-release/libftpipe.a -Wl,--as-needed $(LDLIBS)
# The shared libraries a GPU machine may lack (all but the C and C++ runtimes) go beside the
# programs; build/ftpipe's and build/ftpipe-full's too, for tests/bench/peft_check.sh.
gpu-tests: $(GPU_PROGRAMS) build/ftpipe
	@rm -rf build/gpu/lib && mkdir -p build/gpu/lib
	@for p in $(GPU_PROGRAMS) build/ftpipe build/ftpipe-full; do ldd $$p | awk '$$3 ~ /^\// {print $$3}'; done | sort -u | \
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

# $(call apt_install,PACKAGES,TOOLS): installs those of PACKAGES, and of the TOOLS'
# packages whose command is missing, that are not installed yet. No service starts
# (a policy-rc.d forbids it during the install) and a service installed here is
# disabled afterwards. A failure shows apt's own last lines, once.
define apt_install
	@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	for t in $(2); do command -v $${t%%:*} >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; mkdir -p build; \
	  sudo=""; [ "$$(id -u)" = 0 ] || sudo=sudo; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then policy=/usr/sbin/policy-rc.d; \
	    printf '#!/bin/sh\nexit 101\n' | $$sudo tee $$policy >/dev/null && $$sudo chmod 755 $$policy; fi; \
	  { $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq $$missing; } \
	    > build/apt.log 2>&1; status=$$?; \
	  [ -z "$$policy" ] || $$sudo rm -f $$policy; \
	  for s in $$missing; do case $$s in nginx|munge|slurmctld|slurmd) \
	    if command -v systemctl >/dev/null 2>&1; then $$sudo systemctl disable --now $$s >/dev/null 2>&1; fi; \
	    if command -v update-rc.d >/dev/null 2>&1; then $$sudo update-rc.d $$s disable >/dev/null 2>&1; fi;; \
	  esac; done; \
	  [ "$$status" = 0 ] || { echo "could not install:$$missing; apt-get said (build/apt.log):"; \
	    tail -n 15 build/apt.log; [ -n "$$sudo" ] && echo "(run as root, or where sudo works)"; exit 1; }; \
	fi
endef

build/.deps-ok: Makefile
	$(call apt_install,$(DEB_PACKAGES),)
	@mkdir -p build && touch $@
build/.test-deps-ok: Makefile build/.deps-ok
	$(call apt_install,$(TEST_PACKAGES),$(TEST_TOOLS))
	@touch $@
deps: build/.deps-ok

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
# Offloaded AdamW on the host's cores: -O3 vectorises its loop, which sqrtf's errno would stop (no bit changes).
build/obj-release/ftpipe/backend/host_adamw.o: RELEASE_CFLAGS += -O3 -fno-math-errno

build/obj-asan/%.o: %.c | build/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(ASAN_CFLAGS) -c $< -o $@

# The core is an archive, so a test links only the modules it uses.
build/obj-release/libftpipe.a: $(RELEASE_OBJECTS)
	@rm -f $@; ar rcs $@ $^
build/obj-asan/libftpipe.a: $(ASAN_OBJECTS)
	@rm -f $@; ar rcs $@ $^

# Two programs, side by side: ftpipe-full is the whole program; ftpipe answers a
# no-op and `ftpipe status` from the last build's record and hands anything else
# to ftpipe-full (cli/front_main.c). ftpipe links only the libraries that answer
# uses, SQLite and utf8proc copied in (their .a files come with the -dev
# packages), so it starts with three shared objects to load: libc, libm and
# libxxhash (whose .a lacks the run-time dispatching entry points).
FRONT_LDLIBS = -Wl,-Bstatic -lsqlite3 -lutf8proc -Wl,-Bdynamic -lxxhash -lpthread -lm
build/ftpipe: build/obj-release/ftpipe/cli/front_main.o build/obj-release/libftpipe.a build/ftpipe-full
	$(CC) -pthread -o $@ $(filter %.o %.a,$^) -Wl,--as-needed $(FRONT_LDLIBS)
build/ftpipe-full: build/obj-release/ftpipe/cli/main.o build/obj-release/libftpipe.a
	$(CC) -pthread -o $@ $^ $(LDLIBS)

build/asan/ftpipe: build/obj-asan/ftpipe/cli/front_main.o build/obj-asan/libftpipe.a build/asan/ftpipe-full
	$(CC) -pthread $(ASAN_CFLAGS) -o $@ $(filter %.o %.a,$^) -Wl,--as-needed $(LDLIBS)
build/asan/ftpipe-full: build/obj-asan/ftpipe/cli/main.o build/obj-asan/libftpipe.a
	@mkdir -p $(dir $@)
	$(CC) -pthread $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

build/asan/tests/%: tests/unit/%.c build/obj-asan/libftpipe.a tests/unit/check.h tests/unit/fixtures.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) $(ASAN_CFLAGS) -Itests/unit -o $@ $< build/obj-asan/libftpipe.a $(LDLIBS)

# Fuzz targets (tests/fuzz/fuzz_*.c) with clang's libFuzzer; make test runs each for a
# few seconds from its seed corpus (tests/e2e/test_fuzz.sh). Longer:
#   make fuzz && build/fuzz/fuzz_pipeline -max_total_time=600 tests/fuzz/corpus/pipeline
FUZZ_OBJECTS = $(patsubst %.c,build/obj-fuzz/%.o,$(CORE_SOURCES))
build/obj-fuzz/%.o: %.c | build/.test-deps-ok
	@mkdir -p $(dir $@)
	clang $(BASE_CFLAGS) -g -O1 -fsanitize=fuzzer-no-link,address,undefined -c $< -o $@
build/obj-fuzz/libftpipe.a: $(FUZZ_OBJECTS)
	@rm -f $@; ar rcs $@ $^
build/fuzz/%: tests/fuzz/%.c tests/fuzz/fuzz_input.h build/obj-fuzz/libftpipe.a
	@mkdir -p $(dir $@)
	clang $(BASE_CFLAGS) -g -O1 -fsanitize=fuzzer,address,undefined -o $@ $< build/obj-fuzz/libftpipe.a $(LDLIBS)
fuzz: $(patsubst tests/fuzz/%.c,build/fuzz/%,$(wildcard tests/fuzz/fuzz_*.c))

# The LD_PRELOAD library of tests/e2e/test_fault_injection.sh (fails the Nth write/fsync/rename or allocation).
build/fault_inject.so: tests/fault/fault_inject.c | build/.deps-ok
	$(CC) -std=gnu11 -O1 -g $(WARNINGS) -shared -fPIC -o $@ $< -ldl

test: build/.test-deps-ok build/asan/ftpipe $(TEST_BINARIES) build/ftpipe fuzz build/fault_inject.so
	@sh tests/run.sh

# Branch coverage of the engine (gcov): builds build/cov/ without optimisation, runs the
# engine's unit tests and the engine's end-to-end tests with it, and prints each engine
# file's branch coverage (tests/coverage.sh; the README quotes the totals).
COV_OBJECTS = $(patsubst %.c,build/obj-cov/%.o,$(CORE_SOURCES))
build/obj-cov/%.o: %.c | build/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O0 -g --coverage -c $< -o $@
build/obj-cov/libftpipe.a: $(COV_OBJECTS)
	@rm -f $@; ar rcs $@ $^
build/cov/ftpipe: build/obj-cov/ftpipe/cli/main.o build/obj-cov/libftpipe.a
	@mkdir -p $(dir $@)
	$(CC) -pthread --coverage -o $@ $^ $(LDLIBS)
build/cov/tests/%: tests/unit/%.c build/obj-cov/libftpipe.a tests/unit/check.h
	@mkdir -p $(dir $@)
	$(CC) $(BASE_CFLAGS) -O0 -g --coverage -Itests/unit -o $@ $< build/obj-cov/libftpipe.a $(LDLIBS)
coverage: build/cov/ftpipe $(patsubst tests/unit/%.c,build/cov/tests/%,$(wildcard tests/unit/engine/test_*.c))
	@sh tests/coverage.sh
.PHONY: coverage

# The quickstart's output ends with its accuracy line, also when nothing had to run
# (the export and the run's summary print after the evaluation). QUICKSTART and
# QUICKSTART_FTPIPE let tests/e2e/test_quickstart.sh run this recipe on a copy.
QUICKSTART ?= examples/quickstart
QUICKSTART_FTPIPE ?= build/ftpipe
quickstart: $(QUICKSTART_FTPIPE)
	$(QUICKSTART_FTPIPE) -C $(QUICKSTART)
	@$(QUICKSTART_FTPIPE) -C $(QUICKSTART) log report | grep '^accuracy ' | tail -n 1

# A benchmark that cannot run here (no GPU, no peer) exits 77: counted as skipped.
bench: build/ftpipe
	@ran=0; skipped=0; for b in tests/bench/*.sh; do sh $$b; status=$$?; \
	  if [ $$status = 77 ]; then skipped=$$((skipped + 1)); elif [ $$status = 0 ]; then ran=$$((ran + 1)); \
	  else echo "bench: $$b failed (exit $$status)"; exit 1; fi; done; \
	echo "bench: $$ran ran, $$skipped skipped (each says why above)"

install: build/ftpipe build/ftpipe-full
	install -d $(DESTDIR)$(PREFIX)/bin
	install -m 0755 build/ftpipe-full $(DESTDIR)$(PREFIX)/bin/ftpipe-full
	install -m 0755 build/ftpipe $(DESTDIR)$(PREFIX)/bin/ftpipe

# --- oracle suite (begin) -----------------------------------------------------
# The references ftpipe is held to (transformers, PEFT, tokenizers, LLaMA-Factory,
# ...), pinned in tests/oracle/requirements*.txt, in a virtual environment made
# again only when those files change. make test needs none of it.
build/oracles/.installed: tests/oracle/requirements.txt tests/oracle/requirements-source.txt \
                          tests/oracle/install.sh | build/.deps-ok
	@sh tests/oracle/install.sh build/oracles
oracles: build/oracles/.installed
check-oracles: build/oracles/.installed build/ftpipe build/gpu/ftpipe_logits \
               build/asan/tests/formats/test_image build/asan/tests/formats/test_image_resize \
               build/asan/tests/formats/test_vision_preprocess
	@build/oracles/bin/python tests/oracle/run.py
.PHONY: oracles check-oracles
# --- oracle suite (end) -------------------------------------------------------

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
