// The public attention launchers (attention.h) over the paths of attention_paths.h: a call goes to the
// tensor-core path (kernels/attention_mma*.cu) when it supports the element type and head dim, else (or
// when that path rejects the arguments before launching) to the generic path. The workspace queries take
// no element type: the max over both paths' needs.
#include <algorithm>

#include "dreambooth/cuda/compat.cuh"
#include "dreambooth/kernels/attention.h"
#include "dreambooth/kernels/attention_paths.h"

namespace db::kernels {

size_t attention_forward_workspace(int B, int H, int Tq, int Tk, int D) {
  return std::max<size_t>({attention_generic_forward_workspace(B, H, Tq, Tk, D),
                           attention_mma_forward_workspace(B, H, Tq, Tk, D)});
}

cudaError_t attention_forward(DType t, const void* q, const void* k, const void* v, void* out, float* lse,
                              int B, int H, int Tq, int Tk, int D, float scale, bool causal, void* workspace,
                              cudaStream_t stream) {
  // cudaErrorInvalidValue from the mma path means arguments it does not take (e.g. Tk = 0, pointers not
  // 4-byte aligned), returned before launching anything: the generic path handles them.
  if (attention_mma_supported(t, D, false)) {
    const cudaError_t err =
        attention_mma_forward(t, q, k, v, out, lse, B, H, Tq, Tk, D, scale, causal, workspace, stream);
    if (err != cudaErrorInvalidValue) return err;
  }
  return attention_generic_forward(t, q, k, v, out, lse, B, H, Tq, Tk, D, scale, causal, workspace, stream);
}

size_t attention_backward_workspace(int B, int H, int Tq, int Tk, int D) {
  return std::max<size_t>({attention_generic_backward_workspace(B, H, Tq, Tk, D),
                           attention_mma_backward_workspace(B, H, Tq, Tk, D)});
}

cudaError_t attention_backward(DType t, const void* dout, const void* q, const void* k, const void* v,
                               const void* out, const float* lse, void* dq, void* dk, void* dv, int B, int H,
                               int Tq, int Tk, int D, float scale, bool causal, void* workspace,
                               cudaStream_t stream) {
  if (attention_mma_supported(t, D, true)) {
    const cudaError_t err = attention_mma_backward(t, dout, q, k, v, out, lse, dq, dk, dv, B, H, Tq, Tk, D,
                                                   scale, causal, workspace, stream);
    if (err != cudaErrorInvalidValue) return err;
  }
  return attention_generic_backward(t, dout, q, k, v, out, lse, dq, dk, dv, B, H, Tq, Tk, D, scale, causal,
                                    workspace, stream);
}

}  // namespace db::kernels
