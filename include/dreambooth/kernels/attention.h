#pragma once
// Flash attention (kernels/attention_*.cu, issue 13). Semantics are CpuOps' attention_forward /
// attention_backward (backend/ops.h): out = softmax(scale q_h k_h^T (+ causal mask)) v_h per head h.
#include "dreambooth/kernels/common.h"

namespace db::kernels {

// q [B, Tq, H*D], k, v [B, Tk, H*D], out [B, Tq, H*D] (t = BF16); lse f32 [B, H, Tq] (row log-sum-exp of the
// scaled scores) when non-null. fp32 online softmax; never an N x N matrix in memory. Head dims 40, 64, 80,
// 160 (training) and 512 (the VAE's mid block, forward only); any Tq, Tk; causal: key j > query i masked.
size_t attention_forward_workspace(int B, int H, int Tq, int Tk, int D);
cudaError_t attention_forward(DType t, const void* q, const void* k, const void* v, void* out, float* lse,
                              int B, int H, int Tq, int Tk, int D, float scale, bool causal, void* workspace,
                              cudaStream_t stream);
// FlashAttention-2's backward (P recomputed from q, k and lse; D = rowsum(dO o O)): dq [B, Tq, H*D],
// dk, dv [B, Tk, H*D] (t, overwritten), deterministic (no float atomics across blocks).
size_t attention_backward_workspace(int B, int H, int Tq, int Tk, int D);
cudaError_t attention_backward(DType t, const void* dout, const void* q, const void* k, const void* v,
                               const void* out, const float* lse, void* dq, void* dk, void* dv, int B, int H,
                               int Tq, int Tk, int D, float scale, bool causal, void* workspace,
                               cudaStream_t stream);

}  // namespace db::kernels
