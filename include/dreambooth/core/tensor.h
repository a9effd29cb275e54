#pragma once
// Tensor: a typed, shaped, contiguous view over shared storage on one device.
//
// Views share storage: view() reshapes, slice() narrows dimension 0, select() drops it. Every tensor
// is contiguous (row-major); layers that need another layout permute explicitly. Feature maps are NHWC
// ([B, H, W, C]) and token sequences [B, T, C] everywhere (DESIGN.md decision 1).
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/core/dtype.h"

namespace db {

enum class Device : uint8_t { CPU, CUDA };

using Shape = std::vector<int64_t>;
int64_t shape_numel(const Shape& s);
std::string shape_str(const Shape& s);  // "[2, 64, 64, 4]"

// A block of bytes on one device. Owns it unless built over foreign memory (mmap, arena).
struct Storage {
  void* data = nullptr;
  size_t bytes = 0;
  Device device = Device::CPU;
  std::shared_ptr<void> keep_alive;  // frees the block (or keeps its owner alive)
};

// Host tensors (files, data loading, sampler math) are made here; tensors a backend computes on come
// from Ops::empty and are touched only through Ops (their memory may be a GPU's). The element accessors
// and host helpers below (f32, clone, to, copy_from, fill) refuse non-CPU tensors.
class Tensor {
 public:
  Tensor() = default;
  // Allocates zero-filled host memory (64-byte aligned).
  static Tensor zeros(const Shape& shape, DType dtype = DType::F32);
  static Tensor empty(const Shape& shape, DType dtype = DType::F32);
  // Wraps memory owned by someone else; `owner` is kept alive as long as any view is.
  static Tensor wrap(void* data, const Shape& shape, DType dtype, Device device = Device::CPU,
                     std::shared_ptr<void> owner = nullptr);
  static Tensor from_vector(const std::vector<float>& v, const Shape& shape);

  bool defined() const { return storage_ != nullptr; }
  const Shape& shape() const { return shape_; }
  int64_t dim(int i) const;  // negative counts from the end
  int ndim() const { return int(shape_.size()); }
  int64_t numel() const { return shape_numel(shape_); }
  size_t nbytes() const { return size_t(numel()) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return storage_ ? storage_->device : Device::CPU; }

  void* raw() const { return static_cast<char*>(storage_->data) + offset_; }
  template <typename T>
  T* data() const {
    return static_cast<T*>(raw());
  }
  float* f32() const;  // checks dtype F32 and CPU

  Tensor view(const Shape& shape) const;           // same numel; -1 allowed once
  Tensor slice(int64_t begin, int64_t end) const;  // rows [begin, end) of dim 0
  Tensor select(int64_t i) const;                  // row i of dim 0, that dim dropped
  Tensor clone() const;                            // deep copy (CPU)
  Tensor to(DType t) const;                        // converted copy (CPU float types)
  void copy_from(const Tensor& src);               // same shape and dtype (CPU)
  void fill(float v);                              // F32 CPU

  std::string desc() const;                                          // "f32[2, 4]"
  std::shared_ptr<void> storage_handle() const { return storage_; }  // keeps the storage alive

 private:
  std::shared_ptr<Storage> storage_;
  size_t offset_ = 0;  // bytes
  Shape shape_;
  DType dtype_ = DType::F32;
};

}  // namespace db
