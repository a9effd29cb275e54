#include "dreambooth/core/arena.h"

#include "dreambooth/core/error.h"

namespace db {

Arena::Arena(size_t capacity_bytes, bool measure) : capacity_(capacity_bytes), measure_(measure) {
  if (!measure_ && capacity_ > 0) block_ = Tensor::empty({int64_t(capacity_)}, DType::U8);
}

Tensor Arena::alloc(const Shape& shape, DType dtype) {
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  size_t start = (used_ + 63) / 64 * 64;
  size_t end = start + bytes;
  if (end > peak_) peak_ = end;
  if (measure_) {
    used_ = end;
    return Tensor::empty(shape, dtype);  // real memory so the measuring pass can compute
  }
  DB_CHECK(end <= capacity_, "arena exhausted: need ", end, " bytes, capacity ", capacity_,
           " (the arena is sized for a different shape)");
  used_ = end;
  return Tensor::wrap(static_cast<char*>(block_.raw()) + start, shape, dtype, Device::CPU,
                      block_.storage_handle());
}

}  // namespace db
