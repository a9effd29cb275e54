#include "host_staging.h"

#include <vector>

#include "cuda_check.h"
#include "dreambooth/emu/host_waits.h"

namespace db::cuda {

// The stand-ins' waits are their own (the real build's cuBLASLt/cuDNN calls do not wait): uncounted.
Tensor download_f32(const void* src, DType t, const Shape& shape, cudaStream_t stream) {
  const emu::ScopedUncountedWaits uncounted;
  DB_CUDA(cudaStreamSynchronize(stream));
  Tensor raw = Tensor::empty(shape, t);
  DB_CUDA(cudaMemcpy(raw.raw(), src, raw.nbytes(), cudaMemcpyDeviceToHost));
  return t == DType::F32 ? raw : raw.to(DType::F32);
}

void upload_from_f32(const Tensor& src, DType t, void* dst, cudaStream_t stream) {
  const emu::ScopedUncountedWaits uncounted;
  const Tensor conv = t == DType::F32 ? src : src.to(t);
  DB_CUDA(cudaMemcpyAsync(dst, conv.raw(), conv.nbytes(), cudaMemcpyHostToDevice, stream));
  DB_CUDA(cudaStreamSynchronize(stream));
}

}  // namespace db::cuda
