# Build rules of sm90-emu (run.sh invokes: make -f emu.mk HERE=... OUT=... ROOT=...).
# The library sources come from $(OUT)/src (gen.py's copy, mutation applied).
CUDA_HOME ?= /usr/local/cuda
SAN ?= undefined
SRC := $(OUT)/src
SANF := $(if $(SAN),-fsanitize=$(SAN) -fno-sanitize-recover=undefined)
COMMON := -MMD -MP -g -ffp-contract=off $(SANF) -I$(HERE) -I$(CUDA_HOME)/include
CFL := -std=c11 -O2 $(COMMON) -DDINF_BUILD -DDINF_WITH_CUDA=1 -I$(SRC)/include -I$(SRC)/lib -I$(SRC)/jit
CXXFL := -std=c++17 -O2 $(COMMON) -Wno-psabi

LIB_C := $(sort $(wildcard $(SRC)/lib/core/*.c) $(wildcard $(SRC)/lib/gemm/*.c))
LIB_O := $(patsubst $(SRC)/%.c,$(OUT)/obj/%.o,$(LIB_C))
EMU_O := $(OUT)/obj/emu_rt.o $(OUT)/obj/emu_sm90.o $(OUT)/obj/emu_jit.o $(OUT)/obj/emu_host.o
KER_O := $(OUT)/obj/kernels_0.o $(OUT)/obj/kernels_1.o
# exact header dependencies from the compilers (-MMD)
-include $(wildcard $(OUT)/obj/*.d $(OUT)/obj/lib/*/*.d)

$(OUT)/emu_gemm: $(OUT)/obj/gemm_emu_test.o $(EMU_O) $(KER_O) $(OUT)/libemu_lib.a
	$(CXX) $(SANF) $^ -lpthread -ldl -lm -o $@

$(OUT)/emu_selftest: $(OUT)/obj/emu_selftest.o $(OUT)/obj/emu_rt.o $(OUT)/obj/emu_sm90.o
	$(CXX) $(SANF) $^ -lpthread -lm -o $@

$(OUT)/libemu_lib.a: $(LIB_O)
	rm -f $@ && ar rcs $@ $^

# the harness's config hook (emu_host.c) wraps the library's choice
$(OUT)/obj/lib/gemm/gemm_heuristic.o: CFL += -Ddinf__fp8_heuristic=dinf__fp8_heuristic_lib \
                                             -Ddinf__fp8_choose_dev=dinf__fp8_choose_dev_lib
$(OUT)/obj/lib/%.o: $(SRC)/lib/%.c $(HERE)/emu.mk
	@mkdir -p $(dir $@)
	$(CC) $(CFL) -c $< -o $@
$(OUT)/obj/%.o: $(HERE)/%.c
	@mkdir -p $(dir $@)
	$(CC) $(CFL) -c $< -o $@
$(OUT)/obj/%.o: $(HERE)/%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFL) -c $< -o $@
# the kernel instances: -O1 (compile time; the emulated PTX runs at -O2)
$(OUT)/obj/kernels_%.o: $(OUT)/kernels_%.cpp
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFL) -O1 -I$(SRC)/jit/templates -c $< -o $@
