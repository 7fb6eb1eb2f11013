# libdeepinfra — GNU make.
#
#   make                 build/lib/libdeepinfra.so (+ soname links) and libdeepinfra.a
#   make test            Criterion C tests, then pytest (it runs the benchmark binary
#                        too, built here); ends with a synthesis line
#   make test SAN=1      the C tests under ASan + UBSan (build tree build-san/)
#   make bench           benchmarks (Google Benchmark); JSON in build/bench.json
#   make tools           build/bin/deepinfra-pipe (the pipeline CLI; part of `make`)
#   make examples        build/examples/* from examples/*.c (see examples/README.md)
#   make install         PREFIX=/usr/local DESTDIR= : headers, libraries, deepinfra.pc, the CLI,
#                        Python package
#   make gpu-check       tools/gpu-check: every GPU test and benchmark (on a GPU machine)
#   make deps            install Criterion, Google Benchmark, numpy, ml_dtypes, pytest (root) or
#                        print the command
#   make CUDA=0          CPU-only library (chosen automatically when nvcc is missing)

SHELL := /bin/bash
.DEFAULT_GOAL := all
.SUFFIXES:

CUDA_HOME ?= /usr/local/cuda
NVCC      ?= $(CUDA_HOME)/bin/nvcc
CUDA      ?= $(if $(wildcard $(NVCC)),1,0)
SAN       ?= 0
PREFIX    ?= /usr/local
LIBDIR    ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
BINDIR    ?= $(PREFIX)/bin
PYTHON    ?= python3
# Interpreter with torch + numpy for the upstream EPLB peer (make bench DINF_EPLB_UPSTREAM=...).
PEER_PYTHON ?= /usr/bin/python3
CC        ?= gcc
CXX       ?= g++
ifeq ($(origin CC),default)
CC := gcc
endif
ifeq ($(origin CXX),default)
CXX := g++
endif
BUILDDIR  ?= $(if $(filter 1,$(SAN)),build-san,build)
# sm_90a machine code for the Hopper kernels plus portable compute_90 PTX.
GENCODE   ?= -gencode arch=compute_90a,code=sm_90a -gencode arch=compute_90,code=compute_90
CUDARTLIB ?= cudart_static

hdr_version = $(shell sed -n 's/^\#define DINF_VERSION_$(1) \([0-9]*\)$$/\1/p' include/deepinfra/core.h)
VERSION_MAJOR := $(call hdr_version,MAJOR)
VERSION_MINOR := $(call hdr_version,MINOR)
VERSION_PATCH := $(call hdr_version,PATCH)
VERSION := $(VERSION_MAJOR).$(VERSION_MINOR).$(VERSION_PATCH)
SONAME  := libdeepinfra.so.$(VERSION_MAJOR)
SOFILE  := libdeepinfra.so.$(VERSION)

CXXWARN   := -Wall -Wextra -Wshadow -Wno-unused-parameter
WARN      := $(CXXWARN) -Werror=implicit-function-declaration
comma := ,
SANFLAGS  := $(if $(filter 1,$(SAN)),-fsanitize=address$(comma)undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
OPT       := $(if $(filter 1,$(SAN)),-O1,-O2)
# -ffp-contract=off: float32 results must not depend on FMA contraction (EPLB exactness).
# Objects list the headers they include (-MMD); the stamp rebuilds everything
# when the configuration (CUDA, SAN, compilers) changes.
DEPFLAGS  := -MMD -MP
CFLAGS_LIB := $(DEPFLAGS) -std=c11 $(OPT) -g -fPIC -fvisibility=hidden -ffp-contract=off $(WARN) $(SANFLAGS) \
              -DDINF_BUILD -DDINF_WITH_CUDA=$(CUDA) -Iinclude $(if $(filter 1,$(CUDA)),-I$(CUDA_HOME)/include)
CXXFLAGS_TEST := $(DEPFLAGS) -std=c++17 $(OPT) -g $(CXXWARN) $(SANFLAGS) -Iinclude -Ilib
CFLAGS_TEST := $(DEPFLAGS) -std=c11 $(OPT) -g -ffp-contract=off $(WARN) $(SANFLAGS) -Iinclude -Ilib -Ijit \
               -DDINF_SOURCE_DIR='"$(CURDIR)"' -DDINF_WITH_CUDA=$(CUDA) \
               $(if $(filter 1,$(CUDA)),-I$(CUDA_HOME)/include)
NVCCFLAGS := -std=c++17 -O3 $(GENCODE) -ccbin $(CXX) -Xcompiler -fPIC,-fvisibility=hidden \
             -Xfatbin -compress-all --resource-usage -DDINF_BUILD -Iinclude

ifeq ($(CUDA),1)
LIBS_PRIVATE := -L$(CUDA_HOME)/lib64 -l:lib$(CUDARTLIB).a -ldl -lpthread -lrt -lstdc++ -lm
else
LIBS_PRIVATE := -ldl -lpthread -lm
endif

LIB_SRCS := $(sort $(wildcard lib/*/*.c))
CU_SRCS  := $(if $(filter 1,$(CUDA)),$(sort $(wildcard kernels/*/*.cu)))
# The JIT runtime (jit/*.c) and its kernel templates, embedded as bytes
# (tools/embed-templates.sh -> $(BUILDDIR)/gen/jit_templates.c).
JIT_SRCS := $(sort $(wildcard jit/*.c))
JIT_TEMPLATES := $(sort $(wildcard jit/templates/*.cuh))
JIT_EMBED_C := $(BUILDDIR)/gen/jit_templates.c
JIT_OBJS := $(JIT_SRCS:%.c=$(BUILDDIR)/obj/%.o) $(BUILDDIR)/obj/gen/jit_templates.o
LIB_OBJS := $(LIB_SRCS:%.c=$(BUILDDIR)/obj/%.o) $(CU_SRCS:%.cu=$(BUILDDIR)/obj/%.o) $(JIT_OBJS)
HEADERS  := include/deepinfra.h $(wildcard include/deepinfra/*.h)
PRIV_HDRS := $(wildcard lib/*/*.h)

SHARED := $(BUILDDIR)/lib/$(SOFILE)
STATIC := $(BUILDDIR)/lib/libdeepinfra.a

# jit_race_helper.c is a program of its own (spawned by the JIT cache tests).
JIT_RACE_HELPER_SRC := tests/jit/jit_race_helper.c
JIT_RACE_HELPER := $(BUILDDIR)/tests/jit_race_helper
TEST_C_SRCS  := $(filter-out $(JIT_RACE_HELPER_SRC),$(sort $(wildcard tests/*/*.c)))
TEST_CC_SRCS := $(sort $(wildcard tests/*/*.cc))
TEST_OBJS := $(TEST_C_SRCS:%.c=$(BUILDDIR)/obj/%.o) $(TEST_CC_SRCS:%.cc=$(BUILDDIR)/obj/%.o)
TEST_BIN  := $(BUILDDIR)/tests/deepinfra_tests

BENCH_C_SRCS := $(sort $(wildcard benchmarks/*.c))
BENCH_OBJS := $(BENCH_C_SRCS:%.c=$(BUILDDIR)/obj/%.o) $(BUILDDIR)/obj/benchmarks/shim.o
BENCH_BIN  := $(BUILDDIR)/bench/deepinfra_bench

TOOL_BINS := $(BUILDDIR)/bin/deepinfra-pipe
EXAMPLE_BINS := $(patsubst examples/%.c,$(BUILDDIR)/examples/%,$(sort $(wildcard examples/*.c)))
CFLAGS_TOOL := $(DEPFLAGS) -std=c11 $(OPT) -g $(WARN) $(SANFLAGS) -Iinclude

.PHONY: FORCE all lib tools examples test test-c test-python bench install uninstall gpu-check gpu-prep deps deps-c clean print-config

all: lib tools
lib: $(SHARED) $(STATIC) $(BUILDDIR)/lib/$(SONAME) $(BUILDDIR)/lib/libdeepinfra.so
tools: $(TOOL_BINS)
examples: $(EXAMPLE_BINS)

CONFIG_STAMP := $(BUILDDIR)/config.stamp
CONFIG_ID := CUDA=$(CUDA) SAN=$(SAN) CC=$(CC) CXX=$(CXX) NVCC=$(NVCC) GENCODE=$(GENCODE) CUDARTLIB=$(CUDARTLIB)
$(CONFIG_STAMP): FORCE
	@mkdir -p $(dir $@)
	@if [ "$$(cat $@ 2>/dev/null)" != "$(CONFIG_ID)" ]; then echo "$(CONFIG_ID)" > $@; fi
FORCE:

-include $(shell find $(BUILDDIR)/obj -name '*.d' 2>/dev/null)

print-config:
	@echo "version=$(VERSION) CUDA=$(CUDA) SAN=$(SAN) BUILDDIR=$(BUILDDIR) CUDA_HOME=$(CUDA_HOME)"

$(BUILDDIR)/obj/lib/%.o: lib/%.c $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_LIB) -c $< -o $@

$(BUILDDIR)/obj/jit/%.o: jit/%.c $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_LIB) -Ilib -Ijit -c $< -o $@

$(JIT_EMBED_C): $(JIT_TEMPLATES) tools/embed-templates.sh
	@mkdir -p $(dir $@)
	@echo "  EMBED   $(JIT_TEMPLATES)"
	@tools/embed-templates.sh $@ $(JIT_TEMPLATES)

$(BUILDDIR)/obj/gen/jit_templates.o: $(JIT_EMBED_C) jit/jit_internal.h $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_LIB) -Ilib -Ijit -c $< -o $@

# The GEMM host code calls the JIT runtime's internal API (jit/jit_internal.h).
$(BUILDDIR)/obj/lib/gemm/%.o: CFLAGS_LIB += -Ilib -Ijit

# nvcc prints each kernel's resource report (registers, spills, stack, shared
# memory); it is kept beside the object for the resource test.
# (the MLA kernels include jit/templates/dinf_sm90.cuh: a change there rebuilds them)
$(BUILDDIR)/obj/kernels/%.o: kernels/%.cu $(HEADERS) $(PRIV_HDRS) $(JIT_TEMPLATES) $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@echo "  NVCC    $<"
	@$(NVCC) $(NVCCFLAGS) -c $< -o $@ 2> $@.resource || { cat $@.resource; rm -f $@; exit 1; }
	@grep -i -e 'warning' -e 'error' $@.resource >&2 || true

# The format kernels must round exactly as the CPU: no FMA contraction.
$(BUILDDIR)/obj/kernels/core/%.o: NVCCFLAGS += --fmad=false
# The EP combine sums in float32 exactly as the CPU oracle: no FMA contraction.
$(BUILDDIR)/obj/kernels/ep/%.o: NVCCFLAGS += --fmad=false

$(SHARED): $(LIB_OBJS) lib/deepinfra.map
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--version-script=lib/deepinfra.map \
	    -Wl,--exclude-libs,ALL -Wl,--no-undefined $(SANFLAGS) -o $@ $(LIB_OBJS) $(LIBS_PRIVATE)

$(BUILDDIR)/lib/$(SONAME): $(SHARED)
	@ln -sf $(SOFILE) $@
$(BUILDDIR)/lib/libdeepinfra.so: $(BUILDDIR)/lib/$(SONAME)
	@ln -sf $(SONAME) $@

$(STATIC): $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  AR      $@"
	@rm -f $@ && ar rcs $@ $(LIB_OBJS)

# ---------------------------------------------------------------- tools ----
# Command-line tools link the static library: an installed binary needs no
# LD_LIBRARY_PATH and cannot pick up another libdeepinfra by accident.
$(BUILDDIR)/obj/tools/%.o: tools/%.c $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_TOOL) -c $< -o $@

$(TOOL_BINS): $(BUILDDIR)/bin/%: $(BUILDDIR)/obj/tools/%.o $(STATIC)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(SANFLAGS) -o $@ $< $(STATIC) $(LIBS_PRIVATE)

# ------------------------------------------------------------- examples ----
# Programs to copy from (examples/README.md); linked like the tools.
$(BUILDDIR)/obj/examples/%.o: examples/%.c $(CONFIG_STAMP)
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_TOOL) -c $< -o $@

$(EXAMPLE_BINS): $(BUILDDIR)/examples/%: $(BUILDDIR)/obj/examples/%.o $(STATIC)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CC) $(SANFLAGS) -o $@ $< $(STATIC) $(LIBS_PRIVATE)

# ---------------------------------------------------------------- tests ----
$(BUILDDIR)/obj/tests/%.o: tests/%.c $(CONFIG_STAMP) | deps-c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_TEST) -c $< -o $@

$(BUILDDIR)/obj/tests/%.o: tests/%.cc $(CONFIG_STAMP) | deps-c
	@mkdir -p $(dir $@)
	@echo "  CXX     $<"
	@$(CXX) $(CXXFLAGS_TEST) -c $< -o $@

# The runner links the static library so that tests can reach internals
# (the sort replica); the Python tests exercise the shared library.
$(TEST_BIN): $(TEST_OBJS) $(STATIC) $(JIT_RACE_HELPER)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CXX) $(SANFLAGS) -o $@ $(TEST_OBJS) $(STATIC) -lcriterion $(LIBS_PRIVATE)

$(JIT_RACE_HELPER): $(BUILDDIR)/obj/tests/jit/jit_race_helper.o $(STATIC)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CXX) $(SANFLAGS) -o $@ $< $(STATIC) $(LIBS_PRIVATE)

test: lib tools $(TEST_BIN) $(BENCH_BIN) | deps
	@$(PYTHON) tools/run-tests --build-dir $(BUILDDIR) --san $(SAN) --python $(PYTHON)

test-c: $(TEST_BIN)
	@ASAN_OPTIONS=protect_shadow_gap=0 $(TEST_BIN) $(ARGS)

test-python: lib tools | deps
	@DINF_BUILD_DIR=$(BUILDDIR) $(PYTHON) -m pytest tests/python $(ARGS)

# ------------------------------------------------------------ benchmarks ---
$(BUILDDIR)/obj/benchmarks/%.o: benchmarks/%.c $(CONFIG_STAMP) | deps-c
	@mkdir -p $(dir $@)
	@echo "  CC      $<"
	@$(CC) $(CFLAGS_TEST) -O2 -c $< -o $@

$(BUILDDIR)/obj/benchmarks/shim.o: benchmarks/shim.cc $(CONFIG_STAMP) | deps-c
	@mkdir -p $(dir $@)
	@echo "  CXX     $<"
	@$(CXX) -std=c++17 -O2 -g $(CXXWARN) $(SANFLAGS) $(DEPFLAGS) -Iinclude -c $< -o $@

$(BENCH_BIN): $(BENCH_OBJS) $(STATIC)
	@mkdir -p $(dir $@)
	@echo "  LINK    $@"
	@$(CXX) $(SANFLAGS) -o $@ $(BENCH_OBJS) $(STATIC) -lbenchmark -lpthread $(LIBS_PRIVATE)

bench: $(BENCH_BIN) | deps-c
	@$(BENCH_BIN) --benchmark_out=$(BUILDDIR)/bench.json --benchmark_out_format=json \
	    --benchmark_counters_tabular=true $(ARGS)
	@echo "JSON written to $(BUILDDIR)/bench.json"
	@if [ -n "$(DINF_EPLB_UPSTREAM)" ]; then \
	    DINF_BUILD_DIR=$(BUILDDIR) $(PEER_PYTHON) benchmarks/peer_eplb_upstream.py $(DINF_EPLB_UPSTREAM); \
	else echo "EPLB peer (upstream eplb.py on torch) not run: set DINF_EPLB_UPSTREAM=/path/to/eplb.py"; fi

# --------------------------------------------------------------- install ---
# The .pc names libdir and includedir relative to ${prefix} when they lie under
# it, so pkg-config --define-variable=prefix=... relocates them.
PC_LIBDIR := $(patsubst $(PREFIX)%,$${prefix}%,$(LIBDIR))
PC_INCLUDEDIR := $(patsubst $(PREFIX)%,$${prefix}%,$(INCLUDEDIR))
# PREFIX/lib/pythonX.Y/<site-packages or dist-packages, as this Python names it>
# (Debian's posix_local scheme would otherwise add a second /local).
PYDIR ?= $(shell $(PYTHON) -c 'import os, sys, sysconfig; print(os.path.join("$(PREFIX)", "lib", "python%d.%d" % sys.version_info[:2], os.path.basename(sysconfig.get_path("purelib"))))' 2>/dev/null)

install: lib tools
	@echo "  INSTALL $(DESTDIR)$(PREFIX)"
	install -d $(DESTDIR)$(INCLUDEDIR)/deepinfra $(DESTDIR)$(LIBDIR)/pkgconfig $(DESTDIR)$(BINDIR)
	install -m 755 $(TOOL_BINS) $(DESTDIR)$(BINDIR)/
	install -m 644 include/deepinfra.h $(DESTDIR)$(INCLUDEDIR)/
	install -m 644 $(wildcard include/deepinfra/*.h) $(DESTDIR)$(INCLUDEDIR)/deepinfra/
	install -m 755 $(SHARED) $(DESTDIR)$(LIBDIR)/
	ln -sf $(SOFILE) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libdeepinfra.so
	install -m 644 $(STATIC) $(DESTDIR)$(LIBDIR)/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(PC_LIBDIR)|' -e 's|@INCLUDEDIR@|$(PC_INCLUDEDIR)|' \
	    -e 's|@VERSION@|$(VERSION)|' -e 's|@LIBS_PRIVATE@|$(LIBS_PRIVATE)|' \
	    lib/deepinfra.pc.in > $(DESTDIR)$(LIBDIR)/pkgconfig/deepinfra.pc
	@if [ -n "$(PYDIR)" ]; then \
	    install -d $(DESTDIR)$(PYDIR)/deepinfra && \
	    install -m 644 python/deepinfra/*.py $(DESTDIR)$(PYDIR)/deepinfra/ && \
	    echo 'LIBDIR = "$(LIBDIR)"' > $(DESTDIR)$(PYDIR)/deepinfra/_installed.py && \
	    echo "install -d $(DESTDIR)$(PYDIR)/deepinfra (Python package)"; \
	else echo "no $(PYTHON): Python package not installed"; fi

uninstall:
	rm -f $(DESTDIR)$(INCLUDEDIR)/deepinfra.h
	rm -rf $(DESTDIR)$(INCLUDEDIR)/deepinfra
	rm -f $(DESTDIR)$(LIBDIR)/libdeepinfra.so* $(DESTDIR)$(LIBDIR)/libdeepinfra.a
	rm -f $(DESTDIR)$(LIBDIR)/pkgconfig/deepinfra.pc
	rm -f $(addprefix $(DESTDIR)$(BINDIR)/,$(notdir $(TOOL_BINS)))
	@if [ -n "$(PYDIR)" ]; then rm -rf $(DESTDIR)$(PYDIR)/deepinfra; fi

# ------------------------------------------------------------------ misc ---
gpu-check:
	@tools/gpu-check $(if $(OUT),--out $(OUT)) --build-dir $(BUILDDIR)

# Build everything gpu-check runs and bundle the shared libraries the test
# runner and benchmarks need (Criterion, Google Benchmark and their
# dependencies, not glibc) into $(BUILDDIR)/runtime, so the build folder can be
# carried to a GPU machine that lacks them.
gpu-prep: lib tools $(TEST_BIN) $(BENCH_BIN)
	@rm -rf $(BUILDDIR)/runtime && mkdir -p $(BUILDDIR)/runtime
	@ldd $(TEST_BIN) $(BENCH_BIN) | awk '/=> \// {print $$3}' | sort -u | \
	    grep -v -E '/(libc|libm|libdl|libpthread|librt|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' | \
	    xargs -r -I{} cp -L {} $(BUILDDIR)/runtime/
	@{ echo "commit: $$(git rev-parse --short HEAD 2>/dev/null)$$(git diff --quiet 2>/dev/null || echo -dirty)"; \
	   echo "built: $$(date -u +%Y-%m-%dT%H:%M:%SZ) on $$(hostname)"; } > $(BUILDDIR)/build-info.txt
	@rm -rf $(BUILDDIR)/sm90-emu $(BUILDDIR)/mla-emu # emulator caches of older checkouts (now build-emu/)
	@size=$$(du -sm $(BUILDDIR) | cut -f1); [ $$size -le 64 ] || { \
	    echo "gpu-prep: $(BUILDDIR) is $$size MiB, over the device tool's 64 MiB carry limit:"; \
	    du -sm $(BUILDDIR)/* | sort -rn | head -5; exit 1; }
	@echo "gpu-prep: $(BUILDDIR) is ready to carry ($$(du -sh $(BUILDDIR) | cut -f1)); runtime libraries:"
	@ls $(BUILDDIR)/runtime | tr '\n' ' '; echo

# Runs automatically before test/bench: installs what is missing when root,
# otherwise prints the exact command and stops.
deps: deps-c
	@PYTHON=$(PYTHON) tools/deps --python-only
deps-c:
	@PYTHON=$(PYTHON) tools/deps --c-only

clean:
	rm -rf build build-san build-cpu
