// Every launcher of include/dreambooth/kernels/{norm,elementwise,train_step,attention}.h at the shapes of
// one SD 1.5 DreamBooth training step (bench/README.md, "Kernels"): batch 2 (1 instance + 1 class
// sample), 64x64 latents, bf16 activations.
//
//   build/bench_kernels [--reps 20] [--warmup 3] [--filter SUBSTR] [--peak-tflops X] [--copy-mib 1024]
//                       [--no-flush] [--json FILE]          (CUDA=1 build, on a GPU)
//   build/emu/bench_kernels --smoke [--json FILE]           (the emulator, tiny shapes; make test runs it)
//   bench_kernels --list [--smoke]                          (the rows, bytes and FLOPs; no device used)
//
// Each row: the median over --reps of one launch timed by a pair of CUDA events, after --warmup launches,
// with the L2 cache flushed before each timed launch (a memset of twice its size, outside the events) so
// a row measures DRAM traffic, not a cache hit on the previous repetition. Bytes moved are the minimal
// reads + writes of the launch's arguments (every input element read once, every output written once,
// an accumulated (+=) output read and written, workspaces not counted), so GB/s is a lower bound on the
// traffic the kernel makes and % of copy is its fraction of the bandwidth a device-to-device cudaMemcpy
// reaches in the same run (2 x buffer bytes per copy). Attention FLOPs: forward 4 B H Tq Tk D (QK^T and
// PV), backward 8 B H Tq Tk D (dV, dP, dQ, dK: the recomputation of QK^T is not counted), causal only
// over unmasked (query, key) pairs. --smoke: SD's channel counts and head dims at tiny spatial sizes,
// one head, one timed launch, so the emulator runs every launcher in seconds; its times mean nothing.
#include <cuda_runtime_api.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dreambooth/backend/ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/kernels/attention.h"
#include "dreambooth/kernels/attention_paths.h"
#include "dreambooth/kernels/elementwise.h"
#include "dreambooth/kernels/norm.h"
#include "dreambooth/kernels/train_step.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/presets.h"
#include "dreambooth/models/registry.h"

using namespace db;
namespace k = db::kernels;

namespace {

void check(cudaError_t e, const std::string& what) {
  if (e != cudaSuccess) throw Error("bench_kernels: ", what, ": ", cudaGetErrorString(e));
}

struct Options {
  int reps = 20, warmup = 3;
  double peak_tflops = 0, copy_mib = 1024;
  bool smoke = false, flush = true, list = false;
  std::string filter, json;
};

// The shapes of one training step. UNet levels are (latent side, channels), 8 heads of C / 8.
struct Shapes {
  int B = 2, groups = 32, heads = 8, latent_c = 4, time_dim = 320;
  int attn_heads = 8, clip_heads = 12;  // heads computed by the attention rows (head dims stay C / heads)
  std::vector<std::pair<int, int>> levels = {{64, 320}, {32, 640}, {16, 1280}, {8, 1280}};
  // Up-block channel concats, one per level: (side, Ca hidden, Cb skip).
  std::vector<std::array<int, 3>> concats = {
      {64, 640, 320}, {32, 1280, 640}, {16, 1280, 1280}, {8, 1280, 1280}};
  // Upsample2D inputs: (side, C), doubled to the next level.
  std::vector<std::pair<int, int>> upsamples = {{8, 1280}, {16, 1280}, {32, 640}};
  // VAE encoder downsamples (pad (0, 1, 0, 1) then a stride-2 conv), images 512^2: (side, C).
  std::vector<std::pair<int, int>> vae_pads = {{512, 128}, {256, 256}, {128, 512}};
  int text_len = 77, text_dim = 768, text_heads = 12, text_ff = 3072, vocab = 49408;
  int64_t unet_params = 0, te_params = 0;  // flat buffers (registry total_numel, alignment included)
};

Shapes sd15_shapes() {
  Shapes s;
  const nlohmann::json j = preset("sd15");
  const ClipTextConfig tc = parse_clip_text_config(j.at("text_encoder"), "sd15:text_encoder");
  s.unet_params = build_unet_registry(parse_unet_config(j.at("unet"), "sd15:unet")).total_numel();
  s.te_params = build_clip_text_registry(tc).total_numel();
  s.text_len = tc.max_position_embeddings, s.text_dim = tc.hidden_size, s.text_heads = tc.num_attention_heads;
  s.text_ff = tc.intermediate_size, s.vocab = tc.vocab_size;
  return s;
}

// SD's channel counts and head dims (the kernels' code paths), tiny spatial sizes and sequences.
Shapes smoke_shapes() {
  Shapes s;
  s.levels = {{4, 320}, {2, 640}, {2, 1280}, {1, 1280}};
  s.concats = {{4, 640, 320}, {2, 1280, 640}, {2, 1280, 1280}, {1, 1280, 1280}};
  s.upsamples = {{1, 1280}, {2, 640}};
  s.vae_pads = {{8, 128}, {4, 256}, {2, 512}};
  s.text_len = 9, s.vocab = 1000;
  s.attn_heads = s.clip_heads = 1;
  s.unet_params = 5000, s.te_params = 3000;
  return s;
}

// Device allocations of one case, freed with it; tensors filled with standard normals (Philox).
class Arena {
 public:
  ~Arena() {
    for (void* p : ptrs_) cudaFree(p);
  }
  void* raw(size_t bytes) {
    void* p = nullptr;
    check(cudaMalloc(&p, std::max<size_t>(bytes, 16)), "cudaMalloc " + std::to_string(bytes) + " bytes");
    ptrs_.push_back(p);
    return p;
  }
  void* zeros(size_t bytes) {
    void* p = raw(bytes);
    check(cudaMemset(p, 0, std::max<size_t>(bytes, 16)), "cudaMemset");
    return p;
  }
  float* f32(int64_t n) {
    auto* p = static_cast<float*>(raw(size_t(n) * 4));
    check(k::philox_normals(1234, 7, 0, sample_++, p, uint64_t(n), nullptr), "philox_normals (inputs)");
    return p;
  }
  void* bf16(int64_t n) {
    void* p = raw(size_t(n) * 2);
    float* tmp = f32(n);
    check(k::cast(DType::F32, tmp, DType::BF16, p, n, nullptr), "cast (inputs)");
    check(cudaDeviceSynchronize(), "inputs");
    cudaFree(tmp);
    ptrs_.erase(std::find(ptrs_.begin(), ptrs_.end(), static_cast<void*>(tmp)));
    return p;
  }
  float* constant(int64_t n, float v) {
    auto* p = static_cast<float*>(raw(size_t(n) * 4));
    check(k::fill(DType::F32, p, n, v, nullptr), "fill (inputs)");
    return p;
  }
  template <class T>
  T* upload(const std::vector<T>& host) {
    auto* p = static_cast<T*>(raw(host.size() * sizeof(T)));
    check(cudaMemcpy(p, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
    return p;
  }

 private:
  std::vector<void*> ptrs_;
  uint32_t sample_ = 0;
};

using Launch = std::function<cudaError_t(cudaStream_t)>;

struct Case {
  std::string kernel, shape, note;
  double bytes = 0, flops = 0;          // minimal bytes moved; attention FLOPs (0: none)
  std::function<Launch(Arena&)> setup;  // allocates the arguments, returns the launch
};

constexpr double kE = 2;  // bytes per bf16 element

constexpr const char* kConventions =
    "bytes: minimal reads + writes of the arguments (+= outputs read and written, workspaces not counted); "
    "% copy: GB/s over a D2D cudaMemcpy's (2 x buffer bytes); attention FLOPs: forward 4 B H Tq Tk D, "
    "backward 8 B H Tq Tk D (recomputed QK^T not counted), causal over unmasked pairs";

std::string dims(std::initializer_list<int64_t> d) {
  std::string s = "[";
  for (int64_t v : d) s += (s.size() > 1 ? "," : "") + std::to_string(v);
  return s + "]";
}

void norm_cases(const Shapes& s, std::vector<Case>& out) {
  const int B = s.B, G = s.groups;
  for (auto [side, C] : s.levels) {
    const int N = side * side;
    const int64_t X = int64_t(B) * N * C;
    const size_t stats = size_t(2) * B * G * 4;  // mean, rstd bytes
    for (bool silu : {true, false})
      out.push_back({"group_norm_forward", "x" + dims({B, N, C}) + " G" + std::to_string(G),
                     silu ? "fused SiLU" : "", 2.0 * X * kE + 2 * C * kE + double(stats), 0,
                     [=](Arena& a) -> Launch {
                       void *x = a.bf16(X), *g = a.bf16(C), *b = a.bf16(C), *y = a.raw(size_t(X) * 2);
                       auto* st = static_cast<float*>(a.raw(stats));
                       return [=](cudaStream_t q) {
                         return k::group_norm_forward(DType::BF16, x, g, b, y, st, st + B * G, B, N, C, G,
                                                      1e-5f, silu, q);
                       };
                     }});
    out.push_back({"group_norm_backward", "x" + dims({B, N, C}) + " G" + std::to_string(G),
                   "SiLU recomputed; dgamma, dbeta +=", 3.0 * X * kE + 2 * C * kE + double(stats) + 2 * C * 8,
                   0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(X), *g = a.bf16(C), *b = a.bf16(C), *dy = a.bf16(X),
                          *dx = a.raw(size_t(X) * 2);
                     auto* st = static_cast<float*>(a.raw(stats));
                     float* dgb = a.constant(2 * C, 0.f);
                     void* ws = a.raw(k::group_norm_backward_workspace(B, N, C, G));
                     check(k::group_norm_forward(DType::BF16, x, g, b, dx, st, st + B * G, B, N, C, G, 1e-5f,
                                                 true, nullptr),
                           "group_norm_forward (setup)");
                     return [=](cudaStream_t q) {
                       return k::group_norm_backward(DType::BF16, dy, x, g, b, st, st + B * G, dx, dgb,
                                                     dgb + C, B, N, C, G, true, ws, q);
                     };
                   }});
  }
  std::vector<std::pair<int64_t, int>> lns;  // (rows, C): transformer tokens per level, then CLIP
  for (auto [side, C] : s.levels) lns.push_back({int64_t(B) * side * side, C});
  lns.push_back({int64_t(B) * s.text_len, s.text_dim});
  for (auto [M, C] : lns) {
    const int64_t X = M * C;
    out.push_back({"layer_norm_forward", "x" + dims({M, C}), "", 2.0 * X * kE + 2 * C * kE + 2.0 * M * 4, 0,
                   [=](Arena& a) -> Launch {
                     void *x = a.bf16(X), *g = a.bf16(C), *b = a.bf16(C), *y = a.raw(size_t(X) * 2);
                     auto* st = static_cast<float*>(a.raw(size_t(2 * M) * 4));
                     return [=](cudaStream_t q) {
                       return k::layer_norm_forward(DType::BF16, x, g, b, y, st, st + M, M, C, 1e-5f, q);
                     };
                   }});
    out.push_back(
        {"layer_norm_backward", "x" + dims({M, C}),
         "dgamma, dbeta +=", 3.0 * X * kE + C * kE + 2.0 * M * 4 + 2 * C * 8, 0, [=](Arena& a) -> Launch {
           void *x = a.bf16(X), *g = a.bf16(C), *b = a.bf16(C), *dy = a.bf16(X), *dx = a.raw(size_t(X) * 2);
           auto* st = static_cast<float*>(a.raw(size_t(2 * M) * 4));
           float* dgb = a.constant(2 * C, 0.f);
           void* ws = a.raw(k::layer_norm_backward_workspace(M, C));
           check(k::layer_norm_forward(DType::BF16, x, g, b, dx, st, st + M, M, C, 1e-5f, nullptr),
                 "layer_norm_forward (setup)");
           return [=](cudaStream_t q) {
             return k::layer_norm_backward(DType::BF16, dy, x, g, st, st + M, dx, dgb, dgb + C, M, C, ws, q);
           };
         }});
  }
}

// Unary and binary elementwise kernels over the UNet feature maps [B, N, C] of every level.
void elementwise_map_cases(const Shapes& s, std::vector<Case>& out) {
  const int B = s.B;
  for (auto [side, C] : s.levels) {
    const int N = side * side;
    const int64_t n = int64_t(B) * N * C;
    const std::string sh = dims({B, N, C});
    out.push_back({"activation_forward", "x" + sh, "SiLU", 2.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *y = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) {
                       return k::activation_forward(DType::BF16, x, y, n, k::Act::SiLU, q);
                     };
                   }});
    out.push_back({"activation_backward", "x" + sh, "SiLU", 3.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *dy = a.bf16(n), *dx = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) {
                       return k::activation_backward(DType::BF16, x, dy, dx, n, k::Act::SiLU, q);
                     };
                   }});
    out.push_back({"add", "y" + sh, "residual, bf16 + bf16", 3.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *r = a.bf16(n), *y = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) {
                       return k::add(DType::BF16, x, DType::BF16, r, DType::BF16, y, n, 1.f, 1.f, q);
                     };
                   }});
    out.push_back({"scale", "x" + sh, "", 2.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *y = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) { return k::scale(DType::BF16, x, y, n, 0.5f, q); };
                   }});
    out.push_back({"add_broadcast_forward", "x" + sh + " += v" + dims({B, C}), "time embedding, in place",
                   2.0 * n * kE + B * C * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *v = a.bf16(int64_t(B) * C);
                     return [=](cudaStream_t q) {
                       return k::add_broadcast_forward(DType::BF16, x, v, B, N, C, q);
                     };
                   }});
    out.push_back({"add_broadcast_backward", "dy" + sh + " -> dv" + dims({B, C}), "", n * kE + B * C * kE, 0,
                   [=](Arena& a) -> Launch {
                     void *dy = a.bf16(n), *dv = a.raw(size_t(B) * C * 2);
                     void* ws = a.raw(k::add_broadcast_backward_workspace(B, N, C));
                     return [=](cudaStream_t q) {
                       return k::add_broadcast_backward(DType::BF16, dy, dv, B, N, C, ws, q);
                     };
                   }});
    out.push_back({"bias_add", "y" + dims({int64_t(B) * N, C}) + " += b", "conv bias, in place",
                   2.0 * n * kE + C * kE, 0, [=](Arena& a) -> Launch {
                     void *y = a.bf16(n), *b = a.bf16(C);
                     return
                         [=](cudaStream_t q) { return k::bias_add(DType::BF16, y, b, int64_t(B) * N, C, q); };
                   }});
    out.push_back({"column_sum_add", "a" + dims({int64_t(B) * N, C}) + " -> f32" + dims({C}) + " +=",
                   "bias gradient", n * kE + C * 8.0, 0, [=](Arena& a) -> Launch {
                     void* x = a.bf16(n);
                     float* o = a.constant(C, 0.f);
                     void* ws = a.raw(k::column_sum_workspace(int64_t(B) * N, C));
                     return [=](cudaStream_t q) {
                       return k::column_sum_add(DType::BF16, x, int64_t(B) * N, C, o, ws, q);
                     };
                   }});
    // GEGLU of the transformer feed-forward: proj [M, 2 * 4C] -> [M, 4C].
    const int64_t M = int64_t(B) * N, F = 4 * int64_t(C);
    out.push_back({"geglu_forward", "x" + dims({M, 2 * F}), "", 3.0 * M * F * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(2 * M * F), *y = a.raw(size_t(M * F) * 2);
                     return [=](cudaStream_t q) { return k::geglu_forward(DType::BF16, x, y, M, F, q); };
                   }});
    out.push_back(
        {"geglu_backward", "x" + dims({M, 2 * F}), "", 5.0 * M * F * kE, 0, [=](Arena& a) -> Launch {
           void *x = a.bf16(2 * M * F), *dy = a.bf16(M * F), *dx = a.raw(size_t(2 * M * F) * 2);
           return [=](cudaStream_t q) { return k::geglu_backward(DType::BF16, x, dy, dx, M, F, q); };
         }});
  }
}

// The remaining elementwise.h launchers at the one place each is used in a step.
void elementwise_other_cases(const Shapes& s, std::vector<Case>& out) {
  const int B = s.B;
  for (auto [name, n] :
       {std::pair<const char*, int64_t>{"UNet", s.unet_params}, {"text encoder", s.te_params}})
    out.push_back({"fill", "f32" + dims({n}), std::string(name) + " gradients = 0", n * 4.0, 0,
                   [n](Arena& a) -> Launch {
                     void* x = a.raw(size_t(n) * 4);
                     return [=](cudaStream_t q) { return k::fill(DType::F32, x, n, 0.f, q); };
                   }});
  {
    const int64_t n = s.unet_params;
    out.push_back({"cast", "f32 -> bf16" + dims({n}), "UNet master -> working weights", n * 6.0, 0,
                   [n](Arena& a) -> Launch {
                     float* x = a.f32(n);
                     void* y = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) { return k::cast(DType::F32, x, DType::BF16, y, n, q); };
                   }});
    const auto [side, C] = s.levels[0];
    const int64_t m = int64_t(B) * side * side * C;
    out.push_back(
        {"cast", "bf16 -> f32" + dims({B, side * side, C}), "", m * 6.0, 0, [m](Arena& a) -> Launch {
           void* x = a.bf16(m);
           void* y = a.raw(size_t(m) * 4);
           return [=](cudaStream_t q) { return k::cast(DType::BF16, x, DType::F32, y, m, q); };
         }});
  }
  const int64_t T = int64_t(B) * s.text_len, ff = T * s.text_ff, td = T * s.text_dim;
  const std::string clip_ff = dims({B, s.text_len, s.text_ff});
  out.push_back({"activation_forward", "x" + clip_ff, "QuickGELU (CLIP MLP)", 2.0 * ff * kE, 0,
                 [ff](Arena& a) -> Launch {
                   void *x = a.bf16(ff), *y = a.raw(size_t(ff) * 2);
                   return [=](cudaStream_t q) {
                     return k::activation_forward(DType::BF16, x, y, ff, k::Act::QuickGELU, q);
                   };
                 }});
  out.push_back({"activation_backward", "x" + clip_ff, "QuickGELU (CLIP MLP)", 3.0 * ff * kE, 0,
                 [ff](Arena& a) -> Launch {
                   void *x = a.bf16(ff), *dy = a.bf16(ff), *dx = a.raw(size_t(ff) * 2);
                   return [=](cudaStream_t q) {
                     return k::activation_backward(DType::BF16, x, dy, dx, ff, k::Act::QuickGELU, q);
                   };
                 }});
  // CLIP's position table gradient: f32 [77, 768] += the bf16 gradient summed over the batch.
  const int64_t pos = int64_t(s.text_len) * s.text_dim;
  out.push_back({"add", "f32" + dims({s.text_len, s.text_dim}) + " += bf16", "position table gradient",
                 pos * (4.0 + 2.0 + 4.0), 0, [pos](Arena& a) -> Launch {
                   float* g = a.constant(pos, 0.f);
                   void* d = a.bf16(pos);
                   return [=](cudaStream_t q) {
                     return k::add(DType::F32, g, DType::BF16, d, DType::F32, g, pos, 1.f, 1.f, q);
                   };
                 }});
  const int dim = s.time_dim;
  out.push_back({"timestep_embedding", "t[2] -> " + dims({B, dim}), "", B * 4.0 + B * dim * kE, 0,
                 [B, dim](Arena& a) -> Launch {
                   float* t = a.upload(std::vector<float>{417.f, 802.f});
                   void* y = a.raw(size_t(B) * dim * 2);
                   return [=](cudaStream_t q) {
                     return k::timestep_embedding(t, DType::BF16, y, B, dim, true, 0.f, 1.f, 10000.f, q);
                   };
                 }});
  // Token embedding gather and its scatter-add backward: ids [B, 77] (I64, distinct) into [vocab, 768].
  const int C = s.text_dim;
  const int64_t V = s.vocab;
  std::vector<int64_t> ids(static_cast<size_t>(T));
  for (int64_t i = 0; i < T; ++i) ids[size_t(i)] = (i * 331) % V;
  out.push_back({"embedding_forward", "ids" + dims({B, s.text_len}) + " table" + dims({V, C}),
                 "token embedding", T * 8.0 + 2.0 * td * kE, 0, [=](Arena& a) -> Launch {
                   const int64_t* d_ids = a.upload(ids);
                   void *table = a.bf16(V * C), *y = a.raw(size_t(td) * 2);
                   return [=](cudaStream_t q) {
                     return k::embedding_forward(DType::I64, d_ids, DType::BF16, table, y, T, C, V, nullptr,
                                                 q);
                   };
                 }});
  out.push_back({"embedding_backward", "dy" + dims({B, s.text_len, C}) + " -> f32" + dims({V, C}),
                 "touched rows +=", T * 8.0 + td * kE + td * 8.0, 0, [=](Arena& a) -> Launch {
                   const int64_t* d_ids = a.upload(ids);
                   void* dy = a.bf16(td);
                   float* dt = a.constant(V * C, 0.f);
                   void* ws = a.raw(k::embedding_backward_workspace(T, V));
                   return [=](cudaStream_t q) {
                     return k::embedding_backward(DType::I64, d_ids, DType::BF16, dy, dt, T, C, V, ws, q);
                   };
                 }});
}

void layout_cases(const Shapes& s, std::vector<Case>& out) {
  const int B = s.B;
  for (auto [side, Ca, Cb] : s.concats) {
    const int64_t rows = int64_t(B) * side * side, n = rows * (Ca + Cb);
    const std::string sh = dims({rows, Ca}) + " + " + dims({rows, Cb});
    out.push_back({"concat_channels_forward", sh, "up-block skip", 2.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(rows * Ca), *y = a.bf16(rows * Cb), *o = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) {
                       return k::concat_channels_forward(DType::BF16, x, y, o, rows, Ca, Cb, q);
                     };
                   }});
    out.push_back({"concat_channels_backward", sh, "", 2.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *dy = a.bf16(n), *da = a.raw(size_t(rows) * Ca * 2),
                          *db = a.raw(size_t(rows) * Cb * 2);
                     return [=](cudaStream_t q) {
                       return k::concat_channels_backward(DType::BF16, dy, da, db, rows, Ca, Cb, q);
                     };
                   }});
  }
  for (auto [H, C] : s.upsamples) {
    const int64_t n = int64_t(B) * H * H * C;
    const std::string sh = dims({B, H, H, C}) + " -> " + dims({B, 2 * H, 2 * H, C});
    out.push_back({"upsample_nearest2x_forward", sh, "", 5.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *y = a.raw(size_t(4 * n) * 2);
                     return [=](cudaStream_t q) {
                       return k::upsample_nearest2x_forward(DType::BF16, x, y, B, H, H, C, q);
                     };
                   }});
    out.push_back({"upsample_nearest2x_backward", sh, "", 5.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *dy = a.bf16(4 * n), *dx = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) {
                       return k::upsample_nearest2x_backward(DType::BF16, dy, dx, B, H, H, C, q);
                     };
                   }});
  }
  // The VAE encoder (latents of both samples): F.pad(0, 1, 0, 1) before each stride-2 conv; crop_nhwc is
  // its backward (no VAE gradient in DreamBooth: listed for completeness).
  for (auto [H, C] : s.vae_pads) {
    const int64_t n = int64_t(B) * H * H * C, p = int64_t(B) * (H + 1) * (H + 1) * C;
    const std::string sh = dims({B, H, H, C}) + " -> " + dims({B, H + 1, H + 1, C});
    out.push_back({"pad_nhwc", sh, "VAE encoder", (n + p) * kE, 0, [=](Arena& a) -> Launch {
                     void *x = a.bf16(n), *y = a.raw(size_t(p) * 2);
                     return [=](cudaStream_t q) {
                       return k::pad_nhwc(DType::BF16, x, y, B, H, H, C, 0, 1, 0, 1, q);
                     };
                   }});
    out.push_back({"crop_nhwc", sh, "", 2.0 * n * kE, 0, [=](Arena& a) -> Launch {
                     void *dy = a.bf16(p), *dx = a.raw(size_t(n) * 2);
                     return [=](cudaStream_t q) {
                       return k::crop_nhwc(DType::BF16, dy, dx, B, H, H, C, 0, 1, 0, 1, q);
                     };
                   }});
  }
}

void train_step_cases(const Shapes& s, std::vector<Case>& out) {
  const int S = s.B;
  const int64_t n = int64_t(s.levels[0].first) * s.levels[0].first * s.latent_c;  // per sample
  const std::string lat = dims({S, s.levels[0].first, s.levels[0].first, s.latent_c});
  out.push_back({"mse_loss_forward_backward", "pred" + lat, "bf16 pred, f32 target",
                 S * n * (2.0 + 4.0 + 2.0) + S * 8.0, 0, [=](Arena& a) -> Launch {
                   void* pred = a.bf16(S * n);
                   float *target = a.f32(S * n), *kk = a.constant(S, 2.f / float(n));
                   void* dpred = a.raw(size_t(S * n) * 2);
                   auto* mse = static_cast<float*>(a.raw(size_t(S) * 4));
                   void* ws = a.raw(k::mse_loss_workspace(S, n));
                   return [=](cudaStream_t q) {
                     return k::mse_loss_forward_backward(DType::BF16, pred, target, kk, dpred, mse, S, n, ws,
                                                         q);
                   };
                 }});
  out.push_back({"philox_normals", "f32" + lat, "noise of a step", S * n * 4.0, 0, [=](Arena& a) -> Launch {
                   auto* y = static_cast<float*>(a.raw(size_t(S * n) * 4));
                   return
                       [=](cudaStream_t q) { return k::philox_normals(42, 1, 3, 0, y, uint64_t(S * n), q); };
                 }});
  for (auto [name, p] :
       {std::pair<const char*, int64_t>{"UNet", s.unet_params}, {"text encoder", s.te_params}}) {
    out.push_back({"sum_of_squares", "f32" + dims({p}), std::string(name) + " gradients", p * 4.0 + 8, 0,
                   [p](Arena& a) -> Launch {
                     float* g = a.f32(p);
                     auto* o = static_cast<double*>(a.raw(8));
                     void* ws = a.raw(k::sum_of_squares_workspace(p));
                     return [=](cudaStream_t q) { return k::sum_of_squares(g, p, o, ws, q); };
                   }});
    // Reads master, grad, m, v (f32); writes master, m, v (f32) and the bf16 working copy.
    out.push_back({"adamw_step", "f32" + dims({p}) + " -> bf16", std::string(name) + " parameters", p * 30.0,
                   0, [p](Arena& a) -> Launch {
                     float *w = a.f32(p), *g = a.f32(p), *m = a.f32(p), *v = a.constant(p, 1e-4f);
                     float* coef = a.upload(std::vector<float>{1.f, 1.f});
                     void* working = a.raw(size_t(p) * 2);
                     AdamWStep st;
                     st.lr = 5e-6, st.step = 10;
                     const k::AdamWScalars sc = k::adamw_scalars(st);
                     return [=](cudaStream_t q) {
                       return k::adamw_step(w, g, m, v, DType::BF16, working, p, sc, coef, q);
                     };
                   }});
  }
  out.push_back({"clip_and_check", "sumsq f64[2], check f32[2]", "", 2 * 8.0 + 2 * 4.0 + 2 * 4.0, 0,
                 [](Arena& a) -> Launch {
                   double* ss = a.upload(std::vector<double>{3.0, 1.5});
                   float* chk = a.upload(std::vector<float>{0.1f, 0.2f});
                   auto* coef = static_cast<float*>(a.raw(8));
                   return [=](cudaStream_t q) { return k::clip_and_check(ss, 2, chk, 2, 1.f, coef, q); };
                 }});
}

struct AttnShape {
  int B, H, Tq, Tk, D;
  bool causal;
  std::string note;
};

// (query, key) pairs a launch computes: all of them, or with the causal mask those with key <= query.
double attn_pairs(const AttnShape& x) {
  if (!x.causal) return double(x.Tq) * x.Tk;
  double p = 0;
  for (int i = 0; i < x.Tq; ++i) p += std::min(i + 1, x.Tk);
  return p;
}

void attention_cases(const Shapes& s, std::vector<Case>& out) {
  std::vector<AttnShape> shapes;
  const int H = s.attn_heads;
  for (auto [side, C] : s.levels)
    shapes.push_back({s.B, H, side * side, side * side, C / s.heads, false, "self"});
  for (auto [side, C] : s.levels)
    shapes.push_back({s.B, H, side * side, s.text_len, C / s.heads, false, "cross"});
  shapes.push_back(
      {s.B, s.clip_heads, s.text_len, s.text_len, s.text_dim / s.text_heads, true, "CLIP, causal"});
  for (const AttnShape& x : shapes) {
    const auto [B, H, Tq, Tk, D, causal, note] = x;
    const int64_t nq = int64_t(B) * Tq * H * D, nk = int64_t(B) * Tk * H * D, nl = int64_t(B) * H * Tq;
    const float sc = 1.f / std::sqrt(float(D));
    const std::string sh = "B" + std::to_string(B) + " H" + std::to_string(H) + " Tq" + std::to_string(Tq) +
                           " Tk" + std::to_string(Tk) + " D" + std::to_string(D);
    const std::string path =
        std::string(k::attention_mma_supported(DType::BF16, D, false) ? "mma" : "generic");
    const double pairs = attn_pairs(x) * B * H * D;
    out.push_back({"attention_forward", sh, note + ", " + path, (2.0 * nq + 2.0 * nk) * kE + nl * 4.0,
                   4 * pairs, [=](Arena& a) -> Launch {
                     void *q = a.bf16(nq), *kk = a.bf16(nk), *v = a.bf16(nk), *o = a.raw(size_t(nq) * 2);
                     auto* lse = static_cast<float*>(a.raw(size_t(nl) * 4));
                     void* ws = a.raw(k::attention_forward_workspace(B, H, Tq, Tk, D));
                     return [=](cudaStream_t st) {
                       return k::attention_forward(DType::BF16, q, kk, v, o, lse, B, H, Tq, Tk, D, sc, causal,
                                                   ws, st);
                     };
                   }});
    out.push_back({"attention_backward", sh, note + ", " + path, (4.0 * nq + 4.0 * nk) * kE + nl * 4.0,
                   8 * pairs, [=](Arena& a) -> Launch {
                     void *q = a.bf16(nq), *kk = a.bf16(nk), *v = a.bf16(nk), *o = a.raw(size_t(nq) * 2);
                     void *dout = a.bf16(nq), *dq = a.raw(size_t(nq) * 2), *dk = a.raw(size_t(nk) * 2);
                     void* dv = a.raw(size_t(nk) * 2);
                     auto* lse = static_cast<float*>(a.raw(size_t(nl) * 4));
                     void* wf = a.raw(k::attention_forward_workspace(B, H, Tq, Tk, D));
                     check(k::attention_forward(DType::BF16, q, kk, v, o, lse, B, H, Tq, Tk, D, sc, causal,
                                                wf, nullptr),
                           "attention_forward (setup)");
                     void* ws = a.raw(k::attention_backward_workspace(B, H, Tq, Tk, D));
                     return [=](cudaStream_t st) {
                       return k::attention_backward(DType::BF16, dout, q, kk, v, o, lse, dq, dk, dv, B, H, Tq,
                                                    Tk, D, sc, causal, ws, st);
                     };
                   }});
  }
}

// ---- timing ----

class Timer {
 public:
  Timer(const Options& o, cudaStream_t stream) : o_(o), stream_(stream) {
    int l2 = 0;
    check(cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0), "L2 size");
    flush_bytes_ = o.smoke ? 64 << 10 : 2 * size_t(l2);
    if (o.flush) check(cudaMalloc(&flush_, flush_bytes_), "cudaMalloc (L2 flush)");
    starts_.resize(size_t(o.reps)), ends_.resize(size_t(o.reps));
    for (int r = 0; r < o.reps; ++r) {
      check(cudaEventCreate(&starts_[size_t(r)]), "cudaEventCreate");
      check(cudaEventCreate(&ends_[size_t(r)]), "cudaEventCreate");
    }
  }
  ~Timer() {
    for (size_t r = 0; r < starts_.size(); ++r) cudaEventDestroy(starts_[r]), cudaEventDestroy(ends_[r]);
    if (flush_) cudaFree(flush_);
  }
  // Median milliseconds of one launch.
  double median_ms(const Launch& launch, const std::string& what) {
    for (int w = 0; w < o_.warmup; ++w) check(launch(stream_), what);
    for (int r = 0; r < o_.reps; ++r) {
      if (flush_) check(cudaMemsetAsync(flush_, r & 0xff, flush_bytes_, stream_), "L2 flush");
      check(cudaEventRecord(starts_[size_t(r)], stream_), "cudaEventRecord");
      check(launch(stream_), what);
      check(cudaEventRecord(ends_[size_t(r)], stream_), "cudaEventRecord");
    }
    check(cudaStreamSynchronize(stream_), what);
    check(cudaGetLastError(), what);
    std::vector<float> ms(size_t(o_.reps));
    for (int r = 0; r < o_.reps; ++r)
      check(cudaEventElapsedTime(&ms[size_t(r)], starts_[size_t(r)], ends_[size_t(r)]),
            "cudaEventElapsedTime");
    std::sort(ms.begin(), ms.end());
    const size_t h = ms.size() / 2;
    return ms.size() % 2 ? ms[h] : 0.5 * (double(ms[h - 1]) + ms[h]);
  }

 private:
  const Options& o_;
  cudaStream_t stream_;
  void* flush_ = nullptr;
  size_t flush_bytes_ = 0;
  std::vector<cudaEvent_t> starts_, ends_;
};

// GB/s of a device-to-device cudaMemcpy of `bytes` (2 x bytes moved per copy).
double copy_bandwidth(Timer& t, size_t bytes) {
  Arena a;
  void *src = a.zeros(bytes), *dst = a.raw(bytes);
  const double ms = t.median_ms(
      [=](cudaStream_t s) { return cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s); }, "copy");
  return 2.0 * double(bytes) / (ms * 1e-3) / 1e9;
}

Options parse(int argc, char** argv) {
  Options o;
  bool reps_set = false, warmup_set = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      DB_CHECK(i + 1 < argc, "bench_kernels: ", a, " needs a value");
      return argv[++i];
    };
    if (a == "--reps")
      o.reps = std::stoi(value()), reps_set = true;
    else if (a == "--warmup")
      o.warmup = std::stoi(value()), warmup_set = true;
    else if (a == "--filter")
      o.filter = value();
    else if (a == "--peak-tflops")
      o.peak_tflops = std::stod(value());
    else if (a == "--copy-mib")
      o.copy_mib = std::stod(value());
    else if (a == "--json")
      o.json = value();
    else if (a == "--no-flush")
      o.flush = false;
    else if (a == "--smoke")
      o.smoke = true;
    else if (a == "--list")
      o.list = true;
    else if (a == "--help" || a == "-h") {
      std::printf(
          "usage: bench_kernels [--smoke] [--list] [--reps 20] [--warmup 3] [--filter SUBSTR] [--peak-tflops "
          "X]\n"
          "                     [--copy-mib 1024] [--no-flush] [--json FILE]\n");
      std::exit(0);
    } else
      throw Error("bench_kernels: unknown option ", a, " (--help lists them)");
  }
  if (o.smoke) {
    if (!reps_set) o.reps = 1;
    if (!warmup_set) o.warmup = 0;
    o.copy_mib = std::min(o.copy_mib, 1.0);
  }
  DB_CHECK(o.reps >= 1 && o.warmup >= 0 && o.copy_mib > 0, "bench_kernels: bad --reps/--warmup/--copy-mib");
  return o;
}

std::string fixed(double v, int prec) {
  char b[64];
  std::snprintf(b, sizeof b, "%.*f", prec, v);
  return b;
}

}  // namespace

int main(int argc, char** argv) try {
  const Options o = parse(argc, argv);
  const Shapes s = o.smoke ? smoke_shapes() : sd15_shapes();
  std::vector<Case> cases;
  norm_cases(s, cases);
  elementwise_map_cases(s, cases);
  elementwise_other_cases(s, cases);
  layout_cases(s, cases);
  train_step_cases(s, cases);
  attention_cases(s, cases);
  if (!o.filter.empty())
    std::erase_if(cases, [&](const Case& c) { return c.kernel.find(o.filter) == std::string::npos; });
  DB_CHECK(!cases.empty(), "bench_kernels: --filter ", o.filter, " matches no kernel");

  if (o.list) {
    std::printf("| kernel | shape | note | MB moved | GFLOP |\n|---|---|---|---:|---:|\n");
    for (const Case& c : cases)
      std::printf("| %s | %s | %s | %.3f | %s |\n", c.kernel.c_str(), c.shape.c_str(), c.note.c_str(),
                  c.bytes / 1e6, c.flops > 0 ? fixed(c.flops / 1e9, 3).c_str() : "");
    std::printf("\n%zu rows\n", cases.size());
    return 0;
  }
  cudaDeviceProp prop{};
  check(cudaGetDeviceProperties(&prop, 0), "cudaGetDeviceProperties");
  cudaStream_t stream = nullptr;
  check(cudaStreamCreate(&stream), "cudaStreamCreate");
  Timer timer(o, stream);
  const size_t copy_bytes = size_t(o.copy_mib * (1 << 20));
  const double copy_gbps = copy_bandwidth(timer, copy_bytes);
  std::printf("bench_kernels: %s (sm_%d%d, %d SMs, L2 %d MiB)%s\n", prop.name, prop.major, prop.minor,
              prop.multiProcessorCount, prop.l2CacheSize >> 20,
              o.smoke ? "; --smoke: tiny shapes, times mean nothing" : "");
  std::printf("UNet %lld + text encoder %lld parameters; bf16; median of %d after %d warm-up%s\n",
              (long long)s.unet_params, (long long)s.te_params, o.reps, o.warmup,
              o.flush ? ", L2 flushed before each" : "");
  std::printf("copy bandwidth: %.1f GB/s (cudaMemcpy D2D of %.0f MiB, 2 x bytes)\n%s\n\n", copy_gbps,
              o.copy_mib, kConventions);
  std::printf("| kernel | shape | note | us | MB moved | GB/s | %% copy | TFLOP/s | %% peak |\n");
  std::printf("|---|---|---|---:|---:|---:|---:|---:|---:|\n");

  nlohmann::json rows = nlohmann::json::array();
  for (const Case& c : cases) {
    Arena arena;
    const Launch launch = c.setup(arena);
    check(cudaDeviceSynchronize(), c.kernel + " " + c.shape + " (setup)");
    const double ms = timer.median_ms(launch, c.kernel + " " + c.shape);
    const double gbps = c.bytes / (ms * 1e-3) / 1e9, tflops = c.flops / (ms * 1e-3) / 1e12;
    const bool peak = c.flops > 0 && o.peak_tflops > 0;
    std::printf("| %s | %s | %s | %.1f | %.2f | %.1f | %.1f | %s | %s |\n", c.kernel.c_str(), c.shape.c_str(),
                c.note.c_str(), ms * 1e3, c.bytes / 1e6, gbps, 100 * gbps / copy_gbps,
                c.flops > 0 ? fixed(tflops, 1).c_str() : "",
                peak ? fixed(100 * tflops / o.peak_tflops, 1).c_str() : "");
    std::fflush(stdout);
    nlohmann::json r = {{"kernel", c.kernel},
                        {"shape", c.shape},
                        {"note", c.note},
                        {"us", ms * 1e3},
                        {"bytes", c.bytes},
                        {"gbps", gbps},
                        {"copy_fraction", gbps / copy_gbps}};
    if (c.flops > 0) r.update({{"flops", c.flops}, {"tflops", tflops}});
    if (peak) r["peak_fraction"] = tflops / o.peak_tflops;
    rows.push_back(r);
  }
  check(cudaStreamDestroy(stream), "cudaStreamDestroy");
  if (!o.json.empty()) {
    nlohmann::json j = {{"device", prop.name},
                        {"smoke", o.smoke},
                        {"reps", o.reps},
                        {"warmup", o.warmup},
                        {"l2_flushed", o.flush},
                        {"copy_gbps", copy_gbps},
                        {"copy_bytes", copy_bytes},
                        {"peak_tflops", o.peak_tflops},
                        {"unet_params", s.unet_params},
                        {"text_encoder_params", s.te_params},
                        {"conventions", kConventions},
                        {"rows", rows}};
    std::ofstream f(o.json);
    f << j.dump(1) << "\n";
    DB_CHECK(f.good(), "bench_kernels: cannot write ", o.json);
  }
  return 0;
} catch (const std::exception& e) {
  std::fprintf(stderr, "%s\n", e.what());
  return 1;
}
