// Layout kernels on NHWC tensors: channel concat and its split, nearest 2x upsample and its 2x2-sum
// backward, zero padding and its crop.
//
// Launch configuration: 256 threads, grid-stride loops over at most 4096 blocks. The pure copies
// (concat, split, upsample forward, pad, crop) move 16-byte units (uint4) when every pointer is 16-byte
// aligned and every channel width is a whole number of units, else one element (2 or 4 bytes) per step:
// the dtype does not matter to a copy. upsample backward sums the 2x2 block in fp32 in the CPU's order,
// (r0[2w] + r0[2w + 1]) + (r1[2w] + r1[2w + 1]), V = 16 / sizeof(T) channels per step when C allows.
// ptxas -v, sm_90a (CUDA 13, -O3), no spills on sm_80 or sm_90a: concat / split 28-32 registers, upsample
// 32-36, upsample backward 30-36, pad 34, crop 38-40; no shared memory.
#include "dreambooth/kernels/elementwise.h"
#include "elementwise_common.cuh"

namespace db::kernels {
namespace {

using namespace detail;

// y [rows, ca + cb] = (a [rows, ca] | b [rows, cb]), widths in units U.
template <class U>
__global__ void __launch_bounds__(kThreads)
    concat_kernel(const U* __restrict__ a, const U* __restrict__ b, U* __restrict__ y, int64_t rows,
                  int64_t ca, int64_t cb) {
  const int64_t c = ca + cb;
  for (int64_t u = global_thread(); u < rows * c; u += grid_stride()) {
    const int64_t r = u / c, j = u % c;
    y[u] = j < ca ? a[r * ca + j] : b[r * cb + j - ca];
  }
}

// da [rows, ca], db [rows, cb] (either null) from dy [rows, ca + cb].
template <class U>
__global__ void __launch_bounds__(kThreads)
    split_kernel(const U* __restrict__ dy, U* __restrict__ da, U* __restrict__ db, int64_t rows, int64_t ca,
                 int64_t cb) {
  const int64_t c = ca + cb;
  for (int64_t u = global_thread(); u < rows * c; u += grid_stride()) {
    const int64_t r = u / c, j = u % c;
    if (j < ca) {
      if (da) da[r * ca + j] = dy[u];
    } else if (db) {
      db[r * cb + j - ca] = dy[u];
    }
  }
}

// y [B, 2H, 2W, c] from x [B, H, W, c], c in units.
template <class U>
__global__ void __launch_bounds__(kThreads)
    upsample_kernel(const U* __restrict__ x, U* __restrict__ y, int B, int H, int W, int64_t c) {
  const int64_t total = int64_t(B) * 4 * H * W * c;
  for (int64_t u = global_thread(); u < total; u += grid_stride()) {
    const int64_t j = u % c, p = u / c, ow = p % (2 * W), q = p / (2 * W), oh = q % (2 * H), b = q / (2 * H);
    y[u] = x[((b * H + oh / 2) * W + ow / 2) * c + j];
  }
}

// dx [B, H, W, C] = 2x2 sums of dy [B, 2H, 2W, C]; u indexes packs of V along dx (V divides C).
template <int V, class T>
__global__ void __launch_bounds__(kThreads)
    upsample_bwd_kernel(const T* __restrict__ dy, T* __restrict__ dx, int B, int H, int W, int64_t C) {
  const int64_t units = int64_t(B) * H * W * C / V;
  for (int64_t u = global_thread(); u < units; u += grid_stride()) {
    const int64_t e = u * V, j = e % C, p = e / C, w = p % W, q = p / W, h = q % H, b = q / H;
    const T* r0 = dy + ((b * 2 * H + 2 * h) * 2 * W + 2 * w) * C + j;  // dy[b, 2h, 2w]
    const T* r1 = r0 + 2 * W * C;                                      // dy[b, 2h + 1, 2w]
    float a0[V], a1[V], b0[V], b1[V], out[V];
    load_f<V>(r0, a0);
    load_f<V>(r0 + C, a1);
    load_f<V>(r1, b0);
    load_f<V>(r1 + C, b1);
#pragma unroll
    for (int i = 0; i < V; ++i) out[i] = (a0[i] + a1[i]) + (b0[i] + b1[i]);
    store_f<V>(dx + e, out);
  }
}

struct Pad {
  int pt, pb, pl, pr;
};

// y [B, H + pt + pb, W + pl + pr, c] = x [B, H, W, c] inside, 0 outside.
template <class U>
__global__ void __launch_bounds__(kThreads)
    pad_kernel(const U* __restrict__ x, U* __restrict__ y, int B, int H, int W, int64_t c, Pad pad) {
  const int64_t Ho = H + pad.pt + pad.pb, Wo = W + pad.pl + pad.pr, total = int64_t(B) * Ho * Wo * c;
  for (int64_t u = global_thread(); u < total; u += grid_stride()) {
    const int64_t j = u % c, p = u / c, ow = p % Wo, q = p / Wo, oh = q % Ho, b = q / Ho;
    const int64_t ih = oh - pad.pt, iw = ow - pad.pl;
    y[u] = ih >= 0 && ih < H && iw >= 0 && iw < W ? x[((b * H + ih) * W + iw) * c + j] : U{};
  }
}

// dx [B, H, W, c] = the interior of dy [B, H + pt + pb, W + pl + pr, c].
template <class U>
__global__ void __launch_bounds__(kThreads)
    crop_kernel(const U* __restrict__ dy, U* __restrict__ dx, int B, int H, int W, int64_t c, Pad pad) {
  const int64_t Ho = H + pad.pt + pad.pb, Wo = W + pad.pl + pad.pr, total = int64_t(B) * H * W * c;
  for (int64_t u = global_thread(); u < total; u += grid_stride()) {
    const int64_t j = u % c, p = u / c, w = p % W, q = p / W, h = q % H, b = q / H;
    dx[u] = dy[((b * Ho + h + pad.pt) * Wo + w + pad.pl) * c + j];
  }
}

// Element size of a dtype a copy kernel accepts (F32, BF16, F16), 0 otherwise.
size_t copy_size(DType t) {
  return t == DType::F32 ? 4 : (t == DType::BF16 || t == DType::F16) ? 2 : 0;
}

bool all_aligned(std::initializer_list<const void*> ptrs) {
  for (const void* p : ptrs)
    if (!aligned(p, 16)) return false;
  return true;
}

// Runs f.template operator()<U>(unit bytes) with U = uint4 when `wide`, else the element-sized unit.
template <class F>
cudaError_t with_unit(size_t es, bool wide, F&& f) {
  if (wide) return f.template operator()<uint4>(size_t(16));
  if (es == 4) return f.template operator()<uint32_t>(size_t(4));
  if (es == 2) return f.template operator()<uint16_t>(size_t(2));
  return cudaErrorInvalidValue;
}

}  // namespace

cudaError_t concat_channels_forward(DType t, const void* a, const void* b, void* y, int64_t rows, int Ca,
                                    int Cb, cudaStream_t stream) {
  const size_t es = copy_size(t);
  if (!es || rows < 0 || Ca < 0 || Cb < 0) return cudaErrorInvalidValue;
  if (rows * (Ca + Cb) == 0) return cudaSuccess;
  const bool wide = all_aligned({a, b, y}) && Ca * es % 16 == 0 && Cb * es % 16 == 0;
  return with_unit(es, wide, [&]<class U>(size_t ub) {
    const int64_t ca = int64_t(Ca * es / ub), cb = int64_t(Cb * es / ub);
    return DB_LAUNCH((concat_kernel<U>), grid_for(rows * (ca + cb)), dim3(kThreads), 0, stream,
                     static_cast<const U*>(a), static_cast<const U*>(b), static_cast<U*>(y), rows, ca, cb);
  });
}

cudaError_t concat_channels_backward(DType t, const void* dy, void* da, void* db, int64_t rows, int Ca,
                                     int Cb, cudaStream_t stream) {
  const size_t es = copy_size(t);
  if (!es || rows < 0 || Ca < 0 || Cb < 0) return cudaErrorInvalidValue;
  if (rows * (Ca + Cb) == 0 || (!da && !db)) return cudaSuccess;
  const bool wide = all_aligned({dy, da, db}) && Ca * es % 16 == 0 && Cb * es % 16 == 0;
  return with_unit(es, wide, [&]<class U>(size_t ub) {
    const int64_t ca = int64_t(Ca * es / ub), cb = int64_t(Cb * es / ub);
    return DB_LAUNCH((split_kernel<U>), grid_for(rows * (ca + cb)), dim3(kThreads), 0, stream,
                     static_cast<const U*>(dy), static_cast<U*>(da), static_cast<U*>(db), rows, ca, cb);
  });
}

cudaError_t upsample_nearest2x_forward(DType t, const void* x, void* y, int B, int H, int W, int C,
                                       cudaStream_t stream) {
  const size_t es = copy_size(t);
  if (!es || B < 0 || H < 0 || W < 0 || C < 0) return cudaErrorInvalidValue;
  if (int64_t(B) * H * W * C == 0) return cudaSuccess;
  const bool wide = all_aligned({x, y}) && C * es % 16 == 0;
  return with_unit(es, wide, [&]<class U>(size_t ub) {
    const int64_t c = int64_t(C * es / ub);
    return DB_LAUNCH((upsample_kernel<U>), grid_for(int64_t(B) * 4 * H * W * c), dim3(kThreads), 0, stream,
                     static_cast<const U*>(x), static_cast<U*>(y), B, H, W, c);
  });
}

cudaError_t upsample_nearest2x_backward(DType t, const void* dy, void* dx, int B, int H, int W, int C,
                                        cudaStream_t stream) {
  if (B < 0 || H < 0 || W < 0 || C < 0) return cudaErrorInvalidValue;
  const int64_t total = int64_t(B) * H * W * C;
  if (total == 0) return cudaSuccess;
  cudaError_t err = cudaErrorInvalidValue;
  with_float_type(t, [&]<class T>() {
    constexpr int V = int(16 / sizeof(T));
    const T* dyp = static_cast<const T*>(dy);
    T* dxp = static_cast<T*>(dx);
    if (C % V == 0 && all_aligned({dy, dx}))
      err = DB_LAUNCH((upsample_bwd_kernel<V, T>), grid_for(total / V), dim3(kThreads), 0, stream, dyp, dxp,
                      B, H, W, int64_t(C));
    else
      err = DB_LAUNCH((upsample_bwd_kernel<1, T>), grid_for(total), dim3(kThreads), 0, stream, dyp, dxp, B, H,
                      W, int64_t(C));
  });
  return err;
}

cudaError_t pad_nhwc(DType t, const void* x, void* y, int B, int H, int W, int C, int pt, int pb, int pl,
                     int pr, cudaStream_t stream) {
  const size_t es = copy_size(t);
  if (!es || B < 0 || H < 0 || W < 0 || C < 0 || pt < 0 || pb < 0 || pl < 0 || pr < 0)
    return cudaErrorInvalidValue;
  if (int64_t(B) * (H + pt + pb) * (W + pl + pr) * C == 0) return cudaSuccess;
  const bool wide = all_aligned({x, y}) && C * es % 16 == 0;
  return with_unit(es, wide, [&]<class U>(size_t ub) {
    const int64_t c = int64_t(C * es / ub);
    return DB_LAUNCH((pad_kernel<U>), grid_for(int64_t(B) * (H + pt + pb) * (W + pl + pr) * c),
                     dim3(kThreads), 0, stream, static_cast<const U*>(x), static_cast<U*>(y), B, H, W, c,
                     Pad{pt, pb, pl, pr});
  });
}

cudaError_t crop_nhwc(DType t, const void* dy, void* dx, int B, int H, int W, int C, int pt, int pb, int pl,
                      int pr, cudaStream_t stream) {
  const size_t es = copy_size(t);
  if (!es || B < 0 || H < 0 || W < 0 || C < 0 || pt < 0 || pb < 0 || pl < 0 || pr < 0)
    return cudaErrorInvalidValue;
  if (int64_t(B) * H * W * C == 0) return cudaSuccess;
  const bool wide = all_aligned({dy, dx}) && C * es % 16 == 0;
  return with_unit(es, wide, [&]<class U>(size_t ub) {
    const int64_t c = int64_t(C * es / ub);
    return DB_LAUNCH((crop_kernel<U>), grid_for(int64_t(B) * H * W * c), dim3(kThreads), 0, stream,
                     static_cast<const U*>(dy), static_cast<U*>(dx), B, H, W, c, Pad{pt, pb, pl, pr});
  });
}

}  // namespace db::kernels
