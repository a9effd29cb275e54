# dreambooth: the binary (build/dreambooth), the test binary (build/dreambooth_tests), and with the CUDA
# toolkit the CUDA backend on the emulator (build/emu/dreambooth, build/emu/cuda_tests).
#
#   make                 build both (CUDA backend too when nvcc is found)
#   make CUDA=0|1        force the CUDA backend off / on
#   make SANITIZE=1      the CPU build under ASan + UBSan, into build-asan/ (see below)
#   make test            build and run the whole suite (the README's test command)
#   make test-kernels    every kernels/*.cu compiled by g++ against the CUDA emulator (src/emu/), run
#                        under several schedules and once under ASan+UBSan (tests/run_kernel_tests.sh)
#   make fuzz            build the libFuzzer target for the safetensors parser (clang)
#   make format-check    clang-format --dry-run over the sources (CI runs it)
#   make bundle          build/bundle/ + build/bundle.tar.xz for a GPU machine (jobs/make_bundle.sh)
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
PKGS       := hdf5-serial libpng libturbojpeg icu-uc icu-i18n zlib ompi-c nlohmann_json

# BLAS: the CPU code calls only cblas_sgemm. cblas.h comes from OpenBLAS's headers, but the library is
# linked by its generic soname, libblas.so.3, which Debian's alternatives point at OpenBLAS (priority
# 100) here; the bundle ships the netlib reference libblas.so.3 (0.45 MB instead of OpenBLAS's 36 MB
# and libgfortran).
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) openblas 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lblas

CPPFLAGS   += -Iinclude $(PKG_CFLAGS) -DOMPI_SKIP_MPICXX=1 -MMD -MP
CXXFLAGS   += -std=c++20 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -fopenmp -pthread $(SAN_FLAGS)
LDLIBS     += $(PKG_LIBS) -lboost_program_options -fopenmp -pthread -ldl

SRCS       := $(shell find src -name '*.cpp' ! -path 'src/backend/cuda/*' ! -path 'src/cli/*' ! -path 'src/emu/*' \
                ! -path 'src/shared/*' ! -name 'nccl_*.cpp' | sort)
CLI_SRCS   := $(shell find src/cli -name '*.cpp' | sort)
ASM_SRCS   := $(shell find src -name '*.S' | sort)
TEST_SRCS  := $(shell find tests/unit -name '*.cpp' | sort)
BENCH_SRCS := $(shell find bench -maxdepth 1 -name '*.cpp' | sort)

# The CUDA backend (src/backend/cuda/ and kernels/) is not part of libdreambooth.a: its objects are linked
# straight into the binaries that have it, where they define the weak linked_cuda_backend() hook
# (backend/device.h). *_emu.cpp are the emulated build's stand-ins for cuBLASLt and cuDNN. The NCCL
# Communicator (src/dist/nccl_*.cpp) goes the same way (weak make_nccl_communicator, dist/communicator.h);
# the emulated build has no NCCL and uses the MPI Communicator.
CUDA_HOST_SRCS := $(sort $(wildcard src/backend/cuda/*.cpp))
NCCL_SRCS      := $(sort $(wildcard src/dist/nccl_*.cpp))
CU_ALL_SRCS    := $(sort $(wildcard kernels/*.cu))
ifeq ($(CUDA),1)
  CPPFLAGS   += -I$(CUDA_HOME)/include
  CUDA_SRCS  := $(filter-out %_emu.cpp,$(CUDA_HOST_SRCS)) $(NCCL_SRCS)
  CU_SRCS    := $(CU_ALL_SRCS)
  # -Xptxas -v prints registers, shared memory and spills per kernel in the build output; -warn-spills
  # with -Werror turns any spill into a build failure. --compress-mode=size: the fatbins (two cubins per
  # kernel with line info) are ~5x smaller compressed, 17 MB -> ~3 MB in each CUDA binary (make bundle);
  # the driver decompresses them once, at module load.
  NVCCFLAGS  ?= -std=c++20 -O3 -lineinfo -Iinclude -Xptxas -v,-warn-spills,-Werror --compress-mode=size \
                -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90a,code=sm_90a -Xcompiler -fPIC
  # Position-independent host objects: make bundle links the same objects into build/shared/lib/
  # libdreambooth.so as well as into the static binaries (no second compile). -fno-semantic-interposition
  # keeps calls inside the library direct and inlinable, as in the static build.
  CXXFLAGS   += -fPIC -fno-semantic-interposition
  CUDA_LIBS  := -L$(CUDA_HOME)/lib64 -lcublasLt -lcudnn -lnccl -lcudart_static -lrt
else
  CUDA_SRCS  :=
  CU_SRCS    :=
  CUDA_LIBS  :=
endif

OBJS       := $(SRCS:%.cpp=$(BUILD)/%.o) $(ASM_SRCS:%.S=$(BUILD)/%.S.o)
CUDA_OBJS  := $(CUDA_SRCS:%.cpp=$(BUILD)/%.o) $(CU_SRCS:%.cu=$(BUILD)/%.o)
TEST_OBJS  := $(TEST_SRCS:%.cpp=$(BUILD)/%.o)
LIB        := $(BUILD)/libdreambooth.a

.PHONY: all test test-unit test-kernels kernel-tests fuzz format format-check clean bench bench-emu bundle
all: $(BUILD)/dreambooth $(BUILD)/dreambooth_tests

$(LIB): $(OBJS)
	@mkdir -p $(@D)
	rm -f $@ && ar rcs $@ $^

CLI_OBJS   := $(CLI_SRCS:%.cpp=$(BUILD)/%.o)
$(BUILD)/dreambooth: $(CLI_OBJS) $(CUDA_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS)

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
$(BUILD)/bench_%: $(BUILD)/bench/%.o $(CUDA_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS)

# The test command: GoogleTest suite, the emulated kernel suite, then the MPI tests under mpirun.
test: all kernel-tests
	tests/run_tests.sh $(BUILD)

# ---- Emulated kernels (docs/ARCHITECTURE.md, "CUDA emulator") -------------------------------------
# Every kernels/*.cu (and the test kernels in tests/emu/*.cu, tests/kernels/*.cu) is compiled by g++ as
# C++ against the emulator in src/emu/ and linked with the GoogleTest files of tests/emu/ and
# tests/kernels/ and libdreambooth.a (for CpuOps). Needs the CUDA toolkit's headers (bf16 types, the
# runtime API declarations), not its libraries or a GPU. -fno-strict-aliasing: kernels pun float4 and
# bf16x2, which g++ -O2 otherwise miscompiles. -fno-tree-vectorize: g++ 12.2's loop vectorizer
# miscompiles a double sum whose two adds per iteration come in swapped order (a 25% wrong result in a
# 10-line reproducer; right at -O1 and without vectorization), which a kernel's unrolled reduction can be. build/emu-asan/ is the same under ASan+UBSan (the
# scheduler tells ASan about every fiber switch: src/emu/fiber_asan.h).
CUDA_INCLUDE   := $(CUDA_HOME)/include
EMU_HEADERS    := $(wildcard $(CUDA_INCLUDE)/cuda_bf16.h)
EMU_DIR        := $(BUILD)/emu
EMU_ASAN_DIR   := $(BUILD)/emu-asan
EMU_CPPFLAGS   := -Iinclude -I$(CUDA_INCLUDE) $(PKG_CFLAGS) -DOMPI_SKIP_MPICXX=1 -DDB_EMU=1 -MMD -MP
EMU_CXXFLAGS   := -std=c++20 $(OPT) -g -Wall -Wextra -Wno-unused-parameter -Wno-unknown-pragmas \
                  -fno-strict-aliasing -fno-tree-vectorize -pthread
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

# The CUDA backend on the emulator: build/emu/dreambooth runs the whole job (train, generate, prepare)
# through CudaOps and the project's kernels on the CPU, a test tool for CI (tests/cli/train_cuda_emu.sh);
# build/emu/cuda_tests checks CudaOps against CpuOps op by op and over training steps (tests/cuda/).
# cuBLASLt and cuDNN need a GPU: gemm_emu.cpp / conv_emu.cpp stand in for them here.
EMU_HOST_SRCS    := $(filter-out src/backend/cuda/gemm_cublaslt.cpp src/backend/cuda/conv_cudnn.cpp,$(CUDA_HOST_SRCS))
EMU_BACKEND_OBJS := $(EMU_HOST_SRCS:%.cpp=$(EMU_DIR)/%.o) $(CU_ALL_SRCS:%.cu=$(EMU_DIR)/%.cu.o) \
                    $(EMU_SRCS:%.cpp=$(EMU_DIR)/%.o)
CUDA_TEST_SRCS   := $(sort $(wildcard tests/cuda/*.cpp))
CUDA_TEST_OBJS   := $(CUDA_TEST_SRCS:%.cpp=$(EMU_DIR)/%.o)
$(EMU_DIR)/dreambooth: $(CLI_OBJS) $(EMU_BACKEND_OBJS) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(filter-out -lgtest -lgtest_main,$(EMU_LDLIBS))
$(EMU_DIR)/cuda_tests: $(CUDA_TEST_OBJS) $(EMU_BACKEND_OBJS) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(EMU_LDLIBS)
ifneq ($(EMU_HEADERS),)
all: $(EMU_DIR)/dreambooth $(EMU_DIR)/cuda_tests
endif

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
EMU_ONLY       := tests/emu/test_emulator.cpp tests/emu/test_multi_device.cpp tests/emu/test_broken_kernels.cpp tests/emu/broken_kernels.cu \
                  tests/cuda/test_cuda_host_waits.cpp tests/emu/test_host_waits.cpp
ifeq ($(CUDA),1)
GPU_DIR        := $(BUILD)/gpu
GPU_TEST_OBJS  := $(patsubst %.cpp,$(GPU_DIR)/%.o,$(filter-out $(EMU_ONLY),$(EMU_TEST_SRCS))) \
                  $(patsubst %.cu,$(GPU_DIR)/%.cu.o,$(filter-out $(EMU_ONLY) kernels/%,$(EMU_CU_SRCS)))
# Their main() (tests/gpu/main.cpp) exits 2 with one line when there is no CUDA device.
GPU_MAIN_OBJ   := $(GPU_DIR)/tests/gpu/main.o
all: $(BUILD)/gpu_kernel_tests
$(GPU_DIR)/%.o: %.cpp
	@mkdir -p $(@D)
	$(CCACHE) $(CXX) $(CPPFLAGS) $(CXXFLAGS) -c -o $@ $<
$(GPU_DIR)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(CCACHE) $(NVCC) $(NVCCFLAGS) -MMD -MP -c -o $@ $<
$(BUILD)/gpu_kernel_tests: $(GPU_TEST_OBJS) $(GPU_MAIN_OBJ) $(CUDA_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS) -lgtest
-include $(GPU_TEST_OBJS:.o=.d) $(GPU_MAIN_OBJ:.o=.d)
# tests/cuda/ on a real GPU (cuBLASLt and cuDNN in place of the CPU stand-ins).
GPU_CUDA_TEST_OBJS := $(patsubst %.cpp,$(GPU_DIR)/%.o,$(filter-out $(EMU_ONLY),$(CUDA_TEST_SRCS)))
all: $(BUILD)/gpu_cuda_tests
$(BUILD)/gpu_cuda_tests: $(GPU_CUDA_TEST_OBJS) $(GPU_MAIN_OBJ) $(CUDA_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS) -lgtest
-include $(GPU_CUDA_TEST_OBJS:.o=.d)
# cuBLASLt/cuDNN descriptor tests that need no GPU (tests/cuda_host/): run by make test wherever CUDA=1.
CUDA_HOST_TEST_OBJS := $(patsubst %.cpp,$(BUILD)/%.o,$(sort $(wildcard tests/cuda_host/*.cpp)))
all: $(BUILD)/cuda_host_tests
$(BUILD)/cuda_host_tests: $(CUDA_HOST_TEST_OBJS) $(CUDA_OBJS) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS) -lgtest -lgtest_main
-include $(CUDA_HOST_TEST_OBJS:.o=.d)
endif

# The GPU-machine bundle (jobs/make_bundle.sh): binaries, test binaries, their non-CUDA shared libraries,
# Open MPI's components, test data and the GPU check in build/bundle/ and build/bundle.tar.xz.
# Its binaries share one library instead of carrying the core, the kernels' fatbins and cudart six
# times: build/shared/lib/libdreambooth.so holds libdreambooth.a, the CUDA backend, the kernels and HDF5
# (static: its shared library would bring libcurl's chain for the S3 driver we never use). cudart is the
# toolkit's libcudart.so, which the bundle carries: libcudart_static.a's symbols are hidden, so a library
# cannot pass it on to the test binaries, whose own kernels must register with the same runtime. Debian's libhdf5.a is PIE
# code, whose PC-relative references to its own globals need -Bsymbolic (bound inside the library; our
# objects already are, -fno-semantic-interposition) and to libc's stdout/stderr a renamed copy
# (src/shared/hdf5_stdio.cpp). build/shared/bin/* are links of the same objects as build/* against it,
# rpath $ORIGIN/../lib (the bundle's layout).
ifeq ($(CUDA),1)
SHARED_DIR   := $(BUILD)/shared
SHARED_LIB   := $(SHARED_DIR)/lib/libdreambooth.so
HDF5_STATIC  := $(lastword $(wildcard $(foreach d,$(filter -L%,$(PKG_LIBS)),$(d:-L%=%)/libhdf5.a)))
SHARED_LIBS  := $(filter-out -lhdf5,$(PKG_LIBS)) -lboost_program_options -fopenmp -pthread -ldl \
                -L$(CUDA_HOME)/lib64 -lcudart -lcublasLt -lcudnn -lnccl -lrt
$(SHARED_DIR)/libhdf5_stdio.a: $(HDF5_STATIC)
	@mkdir -p $(@D)
	objcopy --redefine-sym stderr=db_hdf5_stderr --redefine-sym stdout=db_hdf5_stdout $< $@
$(SHARED_LIB): $(CUDA_OBJS) $(BUILD)/src/shared/hdf5_stdio.o $(LIB) $(SHARED_DIR)/libhdf5_stdio.a
	@mkdir -p $(@D)
	$(CXX) $(CXXFLAGS) -shared -Wl,-soname,libdreambooth.so -Wl,--no-undefined -Wl,-Bsymbolic '-Wl,-rpath,$$ORIGIN' -o $@ \
	  $(CUDA_OBJS) $(BUILD)/src/shared/hdf5_stdio.o \
	  -Wl,--whole-archive $(LIB) -Wl,--no-whole-archive \
	  $(SHARED_DIR)/libhdf5_stdio.a -lsz -lz -lm $(SHARED_LIBS)
SHARED_LINK   = $(CXX) $(CXXFLAGS) -o $@ $(filter-out $(SHARED_LIB),$^) -L$(SHARED_DIR)/lib -ldreambooth \
                '-Wl,-rpath,$$ORIGIN/../lib' $(SHARED_LIBS)
$(SHARED_DIR)/bin/dreambooth: $(CLI_OBJS) $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK)
$(SHARED_DIR)/bin/dreambooth_tests: $(TEST_OBJS) $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK) -lgtest -lgtest_main
$(SHARED_DIR)/bin/gpu_kernel_tests: $(GPU_TEST_OBJS) $(GPU_MAIN_OBJ) $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK) -lgtest
$(SHARED_DIR)/bin/gpu_cuda_tests: $(GPU_CUDA_TEST_OBJS) $(GPU_MAIN_OBJ) $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK) -lgtest
$(SHARED_DIR)/bin/cuda_host_tests: $(CUDA_HOST_TEST_OBJS) $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK) -lgtest -lgtest_main
$(SHARED_DIR)/bin/bench_step: $(BUILD)/bench/step.o $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK)
$(SHARED_DIR)/bin/bench_kernels: $(BUILD)/bench/cuda/kernels.o $(SHARED_LIB)
	@mkdir -p $(@D)
	$(SHARED_LINK)
SHARED_BINS  := dreambooth dreambooth_tests gpu_kernel_tests gpu_cuda_tests cuda_host_tests bench_step \
                $(if $(wildcard bench/cuda/kernels.cpp),bench_kernels)
bundle: $(SHARED_BINS:%=$(SHARED_DIR)/bin/%)
	jobs/make_bundle.sh $(BUILD)
else
bundle:
	@echo "bundle: needs the CUDA backend (nvcc not found; CUDA=0)" >&2; exit 1
endif

# Launch and per-thread costs of the emulator (bench/README.md): build/emu/bench_emu_overhead.
BENCH_EMU_OBJS := $(EMU_DIR)/bench/emu/overhead.cu.o $(EMU_SRCS:%.cpp=$(EMU_DIR)/%.o)
bench-emu: $(EMU_DIR)/bench_emu_overhead
$(EMU_DIR)/bench_emu_overhead: $(BENCH_EMU_OBJS) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(filter-out -lgtest -lgtest_main,$(EMU_LDLIBS))

# Every kernel launcher at SD 1.5 training shapes (bench/cuda/kernels.cpp, bench/README.md "Kernels"):
# build/bench_kernels with nvcc's kernels and the CUDA runtime (CUDA=1; runs on a GPU), and
# build/emu/bench_kernels on the emulator, which make test runs once with --smoke so the bench cannot rot.
ifeq ($(CUDA),1)
all bench: $(BUILD)/bench_kernels
$(BUILD)/bench_kernels: $(BUILD)/bench/cuda/kernels.o $(CU_SRCS:%.cu=$(BUILD)/%.o) $(LIB)
	$(CXX) $(CXXFLAGS) -o $@ $^ $(LDLIBS) $(CUDA_LIBS)
endif
ifneq ($(EMU_HEADERS),)
all: $(EMU_DIR)/bench_kernels
$(EMU_DIR)/bench_kernels: $(EMU_DIR)/bench/cuda/kernels.o $(CU_ALL_SRCS:%.cu=$(EMU_DIR)/%.cu.o) \
                          $(EMU_SRCS:%.cpp=$(EMU_DIR)/%.o) $(LIB)
	$(CXX) $(EMU_CXXFLAGS) -o $@ $^ $(filter-out -lgtest -lgtest_main,$(EMU_LDLIBS))
endif

# libFuzzer target for the safetensors parser; run: build/fuzz_safetensors -max_total_time=60 tests/fuzz/corpus
FUZZ_SRCS := tests/fuzz/fuzz_safetensors.cpp $(shell find src/core src/io -name 'safetensors*.cpp' -o -path 'src/core/*.cpp' | sort -u)
fuzz: $(BUILD)/fuzz_safetensors
$(BUILD)/fuzz_safetensors: $(FUZZ_SRCS) $(wildcard include/dreambooth/*/*.h src/io/*.h)
	@mkdir -p $(@D)
	clang++ -std=c++20 -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Iinclude $(shell pkg-config --cflags nlohmann_json) -o $@ $(FUZZ_SRCS)

FORMAT_FILES = $(shell find include src tests/unit tests/fuzz tests/emu tests/kernels tests/cuda tests/cuda_host tests/gpu bench kernels 2>/dev/null -name '*.cpp' -o -name '*.h' -o -name '*.cu' -o -name '*.cuh' | sort)
format:
	clang-format -i $(FORMAT_FILES)
format-check:
	clang-format --dry-run --Werror $(FORMAT_FILES)

clean:
	rm -rf $(BUILD)

-include $(OBJS:.o=.d) $(TEST_OBJS:.o=.d) $(CLI_OBJS:.o=.d) $(EMU_OBJS:.o=.d) $(EMU_ASAN_OBJS:.o=.d) \
         $(CUDA_OBJS:.o=.d) $(EMU_BACKEND_OBJS:.o=.d) $(CUDA_TEST_OBJS:.o=.d) \
         $(BUILD)/bench/cuda/kernels.d $(EMU_DIR)/bench/cuda/kernels.d
