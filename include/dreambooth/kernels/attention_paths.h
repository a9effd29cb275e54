#pragma once
// Private to kernels/attention*.cu: the per-path launchers behind the public ones of attention.h.
// kernels/attention.cu dispatches: a shape the tensor-core path supports goes there, everything else to
// the generic path. Every launcher below has the public launcher's arguments and semantics
// (attention.h); a path returns cudaErrorInvalidValue for what it does not support.
//
//   generic (kernels/attention_generic.cu): any D in [1, 512], F32 and BF16, any Tq/Tk, causal; fp32
//     online softmax, one thread per query row (and per key row in backward). The correct fallback, the
//     f32 check mode's path and the emulated binary's path (few threads, little synchronisation).
//   mma (kernels/attention_mma.cu): mma.sync m16n8k16 flash kernels, BF16, D in {40, 64, 80, 160}.
#include "dreambooth/kernels/common.h"

namespace db::kernels {

// ---- generic path ----
size_t attention_generic_forward_workspace(int B, int H, int Tq, int Tk, int D);
cudaError_t attention_generic_forward(DType t, const void* q, const void* k, const void* v, void* out,
                                      float* lse, int B, int H, int Tq, int Tk, int D, float scale,
                                      bool causal, void* workspace, cudaStream_t stream);
size_t attention_generic_backward_workspace(int B, int H, int Tq, int Tk, int D);
cudaError_t attention_generic_backward(DType t, const void* dout, const void* q, const void* k, const void* v,
                                       const void* out, const float* lse, void* dq, void* dk, void* dv, int B,
                                       int H, int Tq, int Tk, int D, float scale, bool causal,
                                       void* workspace, cudaStream_t stream);

// ---- tensor-core path (kernels/attention_mma.cu) ----
// Whether attention_mma_forward (backward = false) / attention_mma_backward (true) handle element type t
// and head dim D (for every Tq, Tk, causal and scale). Cheap and pure: the dispatcher calls it per launch.
bool attention_mma_supported(DType t, int D, bool backward);
// Workspace bytes for a supported D (0 for an unsupported one): the public *_workspace queries, which
// take no DType, return the max over both paths.
size_t attention_mma_forward_workspace(int B, int H, int Tq, int Tk, int D);
cudaError_t attention_mma_forward(DType t, const void* q, const void* k, const void* v, void* out, float* lse,
                                  int B, int H, int Tq, int Tk, int D, float scale, bool causal,
                                  void* workspace, cudaStream_t stream);
size_t attention_mma_backward_workspace(int B, int H, int Tq, int Tk, int D);
cudaError_t attention_mma_backward(DType t, const void* dout, const void* q, const void* k, const void* v,
                                   const void* out, const float* lse, void* dq, void* dk, void* dv, int B,
                                   int H, int Tq, int Tk, int D, float scale, bool causal, void* workspace,
                                   cudaStream_t stream);

}  // namespace db::kernels
