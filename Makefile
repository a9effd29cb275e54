# dreambooth: one binary (build/dreambooth), one test binary (build/dreambooth_tests).
#
#   make                 build both (CUDA backend too when nvcc is found)
#   make CUDA=0|1        force the CUDA backend off / on
#   make SANITIZE=1      the CPU build under ASan + UBSan, into build-asan/ (see below)
#   make test            build and run the whole suite (the README's test command)
#   make test-kernels    every kernels/*.cu compiled by g++ against the CUDA emulator (src/emu/), run
#                        under several schedules and once under ASan+UBSan (tests/run_kernel_tests.sh)
#   make fuzz            build the libFuzzer target for the safetensors parser (clang)
#   make format-check    clang-format --dry-run over the sources (CI runs it)
#
# Dependencies come from Debian packages (jobs/setup.sh installs them) and the CUDA toolkit.

BUILD      ?= build
CXX        ?= g++
NVCC       ?= $(shell command -v nvcc 2>/dev/null || { test -x /usr/local/cuda/bin/nvcc && echo /usr/local/cuda/bin/nvcc; })
CUDA_HOME  ?= $(if $(NVCC),$(patsubst %/bin/nvcc,%,$(NVCC)),/usr/local/cuda)
ifeq ($(origin CUDA),undefined)
  CUDA := $(if $(NVCC),1,0)
endif
OPT        ?= -O2
# make SANITIZE=1: the CPU build (no CUDA backend) under ASan + UBSan in build-asan/, e.g.
#   make SANITIZE=1 -j8 build-asan/dreambooth_tests && build-asan/dreambooth_tests   (CI: .ci/run)
ifeq ($(SANITIZE),1)
  BUILD    := build-asan
  CUDA     := 0
  OPT      := -O1
  SAN_FLAGS := -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
endif
# ccache when installed (developer machines; CI builds once and has none): object reuse across worktrees.
CCACHE     ?= $(shell command -v ccache 2>/dev/null)
PKGS       := hdf5-serial libpng libturbojpeg icu-uc icu-i18n zlib ompi-c openblas nlohmann_json

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CPPFLAGS   += -Iinclude $(PKG_CFLAGS) -DOMPI_SKIP_MPICXX=1 -MMD -MP
CXXFLAGS   += -std=c++20 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -fopenmp -pthread $(SAN_FLAGS)
LDLIBS     += $(PKG_LIBS) -lboost_program_options -fopenmp -pthread -ldl

SRCS       := $(shell find src -name '*.cpp' ! -path 'src/backend/cuda/*' ! -path 'src/cli/*' ! -path 'src/emu/*' | sort)
CLI_SRCS   := $(shell find src/cli -name '*.cpp' | sort)
ASM_SRCS   := $(shell find src -name '*.S' | sort)
TEST_SRCS  := $(shell find tests/unit -name '*.cpp' | sort)
BENCH_SRCS := $(shell find bench -maxdepth 1 -name '*.cpp' | sort)

ifeq ($(CUDA),1)
  CPPFLAGS   += -DDB_HAVE_CUDA=1 -I$(CUDA_HOME)/include
  CUDA_SRCS  := $(shell find src/backend/cuda -name '*.cpp' | sort)
  CU_SRCS    := $(shell find kernels -name '*.cu' | sort)
  # -Xptxas -v prints registers, shared memory and spills per kernel in the build output; -warn-spills
  # with -Werror turns any spill into a build failure.
  NVCCFLAGS  ?= -std=c++20 -O3 -lineinfo -Iinclude -Xptxas -v,-warn-spills,-Werror \
                -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a
  LDLIBS     += -L$(CUDA_HOME)/lib64 -lcudart_static -lrt
else
  CUDA_SRCS  :=
  CU_SRCS    :=
endif

OBJS       := $(SRCS:%.cpp=$(BUILD)/%.o) $(ASM_SRCS:%.S=$(BUILD)/%.S.o) \
              $(CUDA_SRCS:%.cpp=$(BUILD)/%.o) $(CU_SRCS:%.cu=$(BUILD)/%.o)
TEST_OBJS  := $(TEST_SRCS:%.cpp=$(BUILD)/%.o)
LIB        := $(BUILD)/libdreambooth.a

.PHONY: all test test-unit test-kernels kernel-tests fuzz format format-check clean bench bench-emu
all: $(BUILD)/dreambooth $(BUILD)/dreambooth_tests

$(LIB): $(OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

CLI_OBJS   := $(CLI_SRCS:%.cpp=$(BUILD)/%.o)
$(BUILD)/dreambooth: $(CLI_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/dreambooth_tests: $(TEST_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) -lgtest -lgtest_main

$(BUILD)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<

# Assembler files embed assets (.incbin); paths inside are relative to the repo root. Their objects
# are named NAME.S.o so that a NAME.cpp beside them cannot collide. .incbin is invisible to -MMD:
# the embedded files are listed here.
$(BUILD)/%.S.o: %.S
	@mkdir -p $(@D)
	$(CXX) $(CPPFLAGS) -c -o $@ $<
$(BUILD)/src/models/preset_data.S.o: $(wildcard src/models/presets/*.json)
$(BUILD)/src/text/clip_vocab_data.S.o: src/text/bpe_simple_vocab_16e6.txt.gz

$(BUILD)/%.o: %.cu
	@mkdir -p $(@D)
	$(CCACHE) $(NVCC) $(NVCCFLAGS) -MMD -MP -c -o $@ $<

# Benchmarks: one binary per bench/*.cpp (build/bench_NAME); see bench/README.md.
BENCH_BINS := $(BENCH_SRCS:bench/%.cpp=$(BUILD)/bench_%)
.PRECIOUS: $(BUILD)/bench/%.o
bench: $(BENCH_BINS)
$(BUILD)/bench_%: $(BUILD)/bench/%.o $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS)

# The test command: GoogleTest suite, the emulated kernel suite, then the MPI tests under mpirun.
test: all kernel-tests
	tests/run_tests.sh $(BUILD)

# ---- Emulated kernels (docs/ARCHITECTURE.md, "CUDA emulator") -------------------------------------
# Every kernels/*.cu (and the test kernels in tests/emu/*.cu, tests/kernels/*.cu) is compiled by g++ as
# C++ against the emulator in src/emu/ and linked with the GoogleTest files of tests/emu/ and
# tests/kernels/ and libdreambooth.a (for CpuOps). Needs the CUDA toolkit's headers (bf16 types, the
# runtime API declarations), not its libraries or a GPU. -fno-strict-aliasing: kernels pun float4 and
# bf16x2, which g++ -O2 otherwise miscompiles. build/emu-asan/ is the same under ASan+UBSan (the
# scheduler tells ASan about every fiber switch: src/emu/fiber_asan.h).
CUDA_INCLUDE   := $(CUDA_HOME)/include
EMU_HEADERS    := $(wildcard $(CUDA_INCLUDE)/cuda_bf16.h)
EMU_DIR        := $(BUILD)/emu
EMU_ASAN_DIR   := $(BUILD)/emu-asan
EMU_CPPFLAGS   := -Iinclude -I$(CUDA_INCLUDE) $(PKG_CFLAGS) -DOMPI_SKIP_MPICXX=1 -DDB_EMU=1 -MMD -MP
EMU_CXXFLAGS   := -std=c++20 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas \
                  -fno-strict-aliasing -pthread
EMU_ASAN_FLAGS := -O1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
EMU_LDLIBS     := $(PKG_LIBS) -lboost_program_options -lboost_context -fopenmp -pthread -ldl -lgtest -lgtest_main
EMU_SRCS       := $(sort $(wildcard src/emu/*.cpp))
EMU_CU_SRCS    := $(sort $(wildcard kernels/*.cu tests/emu/*.cu tests/kernels/*.cu))
EMU_TEST_SRCS  := $(sort $(wildcard tests/emu/*.cpp tests/kernels/*.cpp))
EMU_OBJS       := $(EMU_SRCS:%.cpp=$(EMU_DIR)/%.o) $(EMU_CU_SRCS:%.cu=$(EMU_DIR)/%.cu.o) \
                  $(EMU_TEST_SRCS:%.cpp=$(EMU_DIR)/%.o)
EMU_ASAN_OBJS  := $(EMU_OBJS:$(EMU_DIR)/%=$(EMU_ASAN_DIR)/%)

$(EMU_DIR)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(EMU_CPPFLAGS) $(EMU_CXXFLAGS) -c -o $@ $<
$(EMU_DIR)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(EMU_CPPFLAGS) $(EMU_CXXFLAGS) -x c++ -c -o $@ $<
$(EMU_ASAN_DIR)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(EMU_CPPFLAGS) $(EMU_CXXFLAGS) $(EMU_ASAN_FLAGS) -c -o $@ $<
$(EMU_ASAN_DIR)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(EMU_CPPFLAGS) $(EMU_CXXFLAGS) $(EMU_ASAN_FLAGS) -x c++ -c -o $@ $<
$(EMU_DIR)/kernel_tests: $(EMU_OBJS) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(EMU_LDLIBS)
$(EMU_ASAN_DIR)/kernel_tests: $(EMU_ASAN_OBJS) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) $(EMU_ASAN_FLAGS) -o $@ $^ $(EMU_LDLIBS)

# What must not compile in the emulated build (plain __shared__, <<<>>>, ...): checked once per change.
$(EMU_DIR)/compile_rules.ok: tests/emu/compile_rules.sh $(wildcard include/dreambooth/emu/*.h include/dreambooth/cuda/*.cuh)
	@mkdir -p $(@D)
	tests/emu/compile_rules.sh "$(CXX) $(filter-out -MMD -MP,$(EMU_CPPFLAGS)) $(EMU_CXXFLAGS)" && touch $@

ifneq ($(EMU_HEADERS),)
kernel-tests: $(EMU_DIR)/compile_rules.ok $(EMU_DIR)/kernel_tests $(EMU_ASAN_DIR)/kernel_tests
test-kernels: kernel-tests
	tests/run_kernel_tests.sh $(BUILD)
else
kernel-tests:
	@echo "kernel-tests: SKIPPED: the emulated kernel suite needs the CUDA toolkit headers ($(CUDA_INCLUDE)/cuda_bf16.h not found; set CUDA_HOME)"
test-kernels: kernel-tests
endif

# The same kernel tests on a real GPU (CUDA=1): build/gpu_kernel_tests, from the test kernels compiled by
# nvcc and the tests that hold on any device; the emulator-only ones (its own semantics, broken kernels
# that would hang a GPU) are left out. `make` builds it so the tests keep compiling under nvcc; it runs
# only where a GPU is lent.
EMU_ONLY       := tests/emu/test_emulator.cpp tests/emu/test_broken_kernels.cpp tests/emu/broken_kernels.cu
ifeq ($(CUDA),1)
GPU_DIR        := $(BUILD)/gpu
GPU_TEST_OBJS  := $(patsubst %.cpp,$(GPU_DIR)/%.o,$(filter-out $(EMU_ONLY),$(EMU_TEST_SRCS))) \
                  $(patsubst %.cu,$(GPU_DIR)/%.cu.o,$(filter-out $(EMU_ONLY) kernels/%,$(EMU_CU_SRCS)))
all: $(BUILD)/gpu_kernel_tests
$(GPU_DIR)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<
$(GPU_DIR)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(CCACHE) $(NVCC) $(NVCCFLAGS) -MMD -MP -c -o $@ $<
$(BUILD)/gpu_kernel_tests: $(GPU_TEST_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) -lgtest -lgtest_main
-include $(GPU_TEST_OBJS:.o=.d)
endif

# Launch and per-thread costs of the emulator (bench/README.md): build/emu/bench_emu_overhead.
BENCH_EMU_OBJS := $(EMU_DIR)/bench/emu/overhead.cu.o $(EMU_SRCS:%.cpp=$(EMU_DIR)/%.o)
bench-emu: $(EMU_DIR)/bench_emu_overhead
$(EMU_DIR)/bench_emu_overhead: $(BENCH_EMU_OBJS) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(filter-out -lgtest -lgtest_main,$(EMU_LDLIBS))

# libFuzzer target for the safetensors parser; run: build/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus
FUZZ_SRCS := tests/fuzz/fuzz_safetensors.cpp $(shell find src/core src/io -name 'safetensors*.cpp' -o -path 'src/core/*.cpp' | sort -u)
fuzz: $(BUILD)/fuzz_safetensors
$(BUILD)/fuzz_safetensors: $(FUZZ_SRCS) $(wildcard include/dreambooth/*/*.h src/io/*.h)
	@mkdir -p $(@D)
	clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude $(shell pkg-config --cflags nlohmann_json) -o $@ $(FUZZ_SRCS)

FORMAT_FILES = $(shell find include src tests/unit tests/fuzz tests/emu tests/kernels bench kernels 2>/dev/null -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' | sort)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD)

-include $(OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(EMU_OBJS:.o=.d) $(EMU_ASAN_OBJS:.o=.d)
