#include "dreambooth/core/tensor.h"

#include <cstdlib>
#include <cstring>
#include <sstream>

#include "dreambooth/core/error.h"

namespace db {

int64_t shape_numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

std::string shape_str(const Shape& s) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < s.size(); ++i) os << (i ? ", " : "") << s[i];
  os << "]";
  return os.str();
}

Tensor Tensor::empty(const Shape& shape, DType dtype) {
  for (int64_t d : shape) DB_CHECK(d >= 0, "negative dimension in shape ", shape_str(shape));
  Tensor t;
  size_t bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  size_t alloc = (bytes + 63) / 64 * 64;
  void* p = std::aligned_alloc(64, alloc ? alloc : 64);
  if (!p)
    throw Error("out of host memory allocating ", bytes, " bytes for ", dtype_name(dtype), shape_str(shape));
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = p;
  t.storage_->bytes = bytes;
  t.storage_->keep_alive = std::shared_ptr<void>(p, std::free);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::zeros(const Shape& shape, DType dtype) {
  Tensor t = empty(shape, dtype);
  std::memset(t.raw(), 0, t.nbytes());
  return t;
}

Tensor Tensor::wrap(void* data, const Shape& shape, DType dtype, Device device, std::shared_ptr<void> owner) {
  Tensor t;
  t.storage_ = std::make_shared<Storage>();
  t.storage_->data = data;
  t.storage_->bytes = size_t(shape_numel(shape)) * dtype_size(dtype);
  t.storage_->device = device;
  t.storage_->keep_alive = std::move(owner);
  t.shape_ = shape;
  t.dtype_ = dtype;
  return t;
}

Tensor Tensor::from_vector(const std::vector<float>& v, const Shape& shape) {
  DB_CHECK(int64_t(v.size()) == shape_numel(shape), "from_vector: ", v.size(), " values for shape ",
           shape_str(shape));
  Tensor t = empty(shape, DType::F32);
  std::memcpy(t.raw(), v.data(), v.size() * 4);
  return t;
}

int64_t Tensor::dim(int i) const {
  int n = ndim();
  if (i < 0) i += n;
  DB_CHECK(i >= 0 && i < n, "dimension ", i, " out of range for ", desc());
  return shape_[size_t(i)];
}

float* Tensor::f32() const {
  DB_CHECK(dtype_ == DType::F32, "expected an f32 tensor, got ", desc());
  DB_CHECK(device() == Device::CPU, "expected a CPU tensor");
  return data<float>();
}

Tensor Tensor::view(const Shape& shape) const {
  Shape s = shape;
  int infer = -1;
  int64_t known = 1;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == -1) {
      DB_CHECK(infer < 0, "view: more than one -1 in ", shape_str(shape));
      infer = int(i);
    } else {
      known *= s[i];
    }
  }
  if (infer >= 0) {
    DB_CHECK(known > 0 && numel() % known == 0, "view: cannot infer ", shape_str(shape), " from ", desc());
    s[size_t(infer)] = numel() / known;
  }
  DB_CHECK(shape_numel(s) == numel(), "view: ", shape_str(shape), " does not match ", desc());
  Tensor t = *this;
  t.shape_ = s;
  return t;
}

Tensor Tensor::slice(int64_t begin, int64_t end) const {
  DB_CHECK(ndim() >= 1 && begin >= 0 && begin <= end && end <= shape_[0], "slice [", begin, ", ", end,
           ") out of range for ", desc());
  int64_t row = shape_[0] ? numel() / shape_[0] : 0;
  Tensor t = *this;
  t.offset_ += size_t(begin * row) * dtype_size(dtype_);
  t.shape_[0] = end - begin;
  return t;
}

Tensor Tensor::select(int64_t i) const {
  Tensor t = slice(i, i + 1);
  t.shape_.erase(t.shape_.begin());
  return t;
}

Tensor Tensor::clone() const {
  DB_CHECK(device() == Device::CPU, "clone: CPU tensors only");
  Tensor t = empty(shape_, dtype_);
  std::memcpy(t.raw(), raw(), nbytes());
  return t;
}

Tensor Tensor::to(DType target) const {
  DB_CHECK(device() == Device::CPU, "to: CPU tensors only");
  if (target == dtype_) return clone();
  Tensor out = empty(shape_, target);
  const int64_t n = numel();
  auto load = [&](int64_t i) -> float {
    switch (dtype_) {
      case DType::F32:
        return data<float>()[i];
      case DType::BF16:
        return bf16_to_f32(data<uint16_t>()[i]);
      case DType::F16:
        return f16_to_f32(data<uint16_t>()[i]);
      case DType::I32:
        return float(data<int32_t>()[i]);
      case DType::I64:
        return float(data<int64_t>()[i]);
      case DType::U8:
        return float(data<uint8_t>()[i]);
      case DType::F64:
        return float(data<double>()[i]);
    }
    return 0.f;
  };
  for (int64_t i = 0; i < n; ++i) {
    float v = load(i);
    switch (target) {
      case DType::F32:
        out.data<float>()[i] = v;
        break;
      case DType::BF16:
        out.data<uint16_t>()[i] = f32_to_bf16(v);
        break;
      case DType::F16:
        out.data<uint16_t>()[i] = f32_to_f16(v);
        break;
      case DType::I32:
        out.data<int32_t>()[i] = int32_t(v);
        break;
      case DType::I64:
        out.data<int64_t>()[i] = int64_t(v);
        break;
      case DType::U8:
        out.data<uint8_t>()[i] = uint8_t(v);
        break;
      case DType::F64:
        out.data<double>()[i] = double(v);
        break;
    }
  }
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  DB_CHECK(src.shape_ == shape_ && src.dtype_ == dtype_, "copy_from: ", src.desc(), " into ", desc());
  DB_CHECK(device() == Device::CPU && src.device() == Device::CPU, "copy_from: CPU tensors only");
  std::memmove(raw(), src.raw(), nbytes());
}

void Tensor::fill(float v) {
  float* p = f32();
  for (int64_t i = 0, n = numel(); i < n; ++i) p[i] = v;
}

std::string Tensor::desc() const {
  return str_cat(dtype_name(dtype_), shape_str(shape_));
}

}  // namespace db
