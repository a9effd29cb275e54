#pragma once
// Elementwise, layout and embedding kernels (kernels/elementwise.cu, kernels/layout.cu,
// kernels/embedding.cu). Semantics are CpuOps' ops of the same name (backend/ops.h).
#include "dreambooth/kernels/common.h"

namespace db::kernels {

// ---- memory ----
// x[0, n) = value (F32, BF16, F16, F64; value rounded to the dtype).
cudaError_t fill(DType t, void* x, int64_t n, float value, cudaStream_t stream);
// dst = src converted between F32, BF16, F16 (round to nearest even), n elements; same dtype: a copy.
cudaError_t cast(DType src_t, const void* src, DType dst_t, void* dst, int64_t n, cudaStream_t stream);

// ---- activations ----
// y = act(x), n elements (y may alias x): SiLU x*sigmoid(x); GELU 0.5x(1+erf(x/sqrt2)); QuickGELU
// x*sigmoid(1.702x).
cudaError_t activation_forward(DType t, const void* x, void* y, int64_t n, Act act, cudaStream_t stream);
// dx = dy * act'(x) (dx may alias dy).
cudaError_t activation_backward(DType t, const void* x, const void* dy, void* dx, int64_t n, Act act,
                                cudaStream_t stream);
// x [M, 2N] -> y [M, N] = hidden * gelu(gate) (hidden = x[:, :N], gate = x[:, N:]).
cudaError_t geglu_forward(DType t, const void* x, void* y, int64_t M, int64_t N, cudaStream_t stream);
// x [M, 2N], dy [M, N] -> dx [M, 2N].
cudaError_t geglu_backward(DType t, const void* x, const void* dy, void* dx, int64_t M, int64_t N,
                           cudaStream_t stream);

// ---- arithmetic ----
// y = alpha * a + beta * b, n elements, each operand with its own dtype (F32 or BF16; y may alias a or
// b): residual adds, and f32 parameter gradients += activation-dtype gradients (CLIP's position table).
cudaError_t add(DType ta, const void* a, DType tb, const void* b, DType ty, void* y, int64_t n, float alpha,
                float beta, cudaStream_t stream);
// y = s * x (y may alias x), F32 or BF16.
cudaError_t scale(DType t, const void* x, void* y, int64_t n, float s, cudaStream_t stream);
// x [B, N, C] += v [B, C] broadcast over N (ResnetBlock2D's time embedding), in place.
cudaError_t add_broadcast_forward(DType t, void* x, const void* v, int B, int64_t N, int C,
                                  cudaStream_t stream);
// dv [B, C] (t, overwritten) = sum over N of dy [B, N, C], f32 accumulation in a fixed order.
size_t add_broadcast_backward_workspace(int B, int64_t N, int C);
cudaError_t add_broadcast_backward(DType t, const void* dy, void* dv, int B, int64_t N, int C,
                                   void* workspace, cudaStream_t stream);
// y [M, C] += b [C] (conv bias after cuDNN), in place.
cudaError_t bias_add(DType t, void* y, const void* b, int64_t M, int C, cudaStream_t stream);
// out [N] (f32) += sum over M of a [M, N] (t), f32 accumulation in a fixed order (bias gradients).
size_t column_sum_workspace(int64_t M, int64_t N);
cudaError_t column_sum_add(DType t, const void* a, int64_t M, int64_t N, float* out, void* workspace,
                           cudaStream_t stream);

// ---- layout ----
// y [rows, Ca + Cb] = cat(a [rows, Ca], b [rows, Cb]) on the last dim (NHWC channel concat).
cudaError_t concat_channels_forward(DType t, const void* a, const void* b, void* y, int64_t rows, int Ca,
                                    int Cb, cudaStream_t stream);
// da [rows, Ca], db [rows, Cb] from dy [rows, Ca + Cb]; either may be null.
cudaError_t concat_channels_backward(DType t, const void* dy, void* da, void* db, int64_t rows, int Ca,
                                     int Cb, cudaStream_t stream);
// y [B, 2H, 2W, C] = nearest 2x upsample of x [B, H, W, C].
cudaError_t upsample_nearest2x_forward(DType t, const void* x, void* y, int B, int H, int W, int C,
                                       cudaStream_t stream);
// dx [B, H, W, C] = sum of each 2x2 block of dy [B, 2H, 2W, C] (fixed order, f32).
cudaError_t upsample_nearest2x_backward(DType t, const void* dy, void* dx, int B, int H, int W, int C,
                                        cudaStream_t stream);
// y [B, H + pt + pb, W + pl + pr, C] = x [B, H, W, C] zero-padded (the VAE encoder's F.pad(0, 1, 0, 1)
// before a stride-2 conv: cuDNN's descriptors pad symmetrically).
cudaError_t pad_nhwc(DType t, const void* x, void* y, int B, int H, int W, int C, int pt, int pb, int pl,
                     int pr, cudaStream_t stream);
// The backward of pad_nhwc: dx [B, H, W, C] = the interior of dy.
cudaError_t crop_nhwc(DType t, const void* dy, void* dx, int B, int H, int W, int C, int pt, int pb, int pl,
                      int pr, cudaStream_t stream);

// ---- embeddings ----
// diffusers get_timestep_embedding: t f32 [B] -> y [B, dim] (t); freq_i = exp(-ln(max_period) i /
// (half - shift)); [sin(t f), cos(t f)] * scale, swapped to [cos, sin] when flip_sin_to_cos; odd dim padded
// 0.
cudaError_t timestep_embedding(const float* t, DType ty, void* y, int B, int dim, bool flip_sin_to_cos,
                               float downscale_freq_shift, float scale, float max_period,
                               cudaStream_t stream);
// y [n, C] (t) = table [V, C] (t) rows of ids [n] (I32 or I64). An id outside [0, V) writes zeros and
// sets *bad (device int, may be null) to 1 + its position (the caller reports it).
cudaError_t embedding_forward(DType id_t, const void* ids, DType t, const void* table, void* y, int64_t n,
                              int C, int64_t V, int* bad, cudaStream_t stream);
// dtable [V, C] (f32) += scatter of dy [n, C] (t) by ids, repeated ids summed in position order
// (deterministic: no atomics).
size_t embedding_backward_workspace(int64_t n, int64_t V);
cudaError_t embedding_backward(DType id_t, const void* ids, DType t, const void* dy, float* dtable, int64_t n,
                               int C, int64_t V, void* workspace, cudaStream_t stream);

}  // namespace db::kernels
