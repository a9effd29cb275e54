#pragma once
// Arena: one block sized once per shape, handed out by bumping a cursor (activations, workspaces).
//
// Typical use: run a pass with a measuring arena (capacity 0, measure=true) to learn the peak, then
// allocate the real arena once with that capacity and reuse it every step: reset() frees everything,
// mark()/release() free what a block allocated (gradient checkpointing, temporaries).
#include <cstddef>

#include "dreambooth/core/tensor.h"

namespace db {

class Arena {
 public:
  explicit Arena(size_t capacity_bytes = 0, bool measure = false);
  Tensor alloc(const Shape& shape, DType dtype = DType::F32);  // 64-byte aligned, uninitialised
  size_t mark() const { return used_; }
  void release(size_t mark) { used_ = mark; }
  void reset() { used_ = 0; }
  size_t used() const { return used_; }
  size_t peak() const { return peak_; }
  size_t capacity() const { return capacity_; }

 private:
  Tensor block_;
  size_t capacity_;
  size_t used_ = 0;
  size_t peak_ = 0;
  bool measure_;
};

}  // namespace db
