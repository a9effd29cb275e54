#pragma once
// Helpers of the elementwise / layout / embedding kernel tests: random inputs, float dtypes on the device
// at an element offset (offset 1 breaks 16-byte alignment, so the scalar fallback runs), comparisons.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "../emu/device_buffer.h"
#include "dreambooth/core/dtype.h"
#include "dreambooth/core/tensor.h"

namespace db::test {

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -3.f, float hi = 3.f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// The bytes of v in dtype t (F32, BF16, F16, F64), rounded as Tensor::to does (nearest even).
inline std::vector<uint8_t> encode(const std::vector<float>& v, DType t) {
  const Tensor c = Tensor::from_vector(v, {int64_t(v.size())}).to(t);
  const uint8_t* p = static_cast<const uint8_t*>(c.raw());
  return std::vector<uint8_t>(p, p + c.nbytes());
}

inline std::vector<float> decode(const std::vector<uint8_t>& bytes, DType t) {
  const size_t n = bytes.size() / dtype_size(t);
  Tensor c = Tensor::empty({int64_t(n)}, t);
  std::memcpy(c.raw(), bytes.data(), bytes.size());
  const Tensor f = c.to(DType::F32);
  return std::vector<float>(f.f32(), f.f32() + n);
}

// v rounded to dtype t and back (what a t tensor of v holds).
inline std::vector<float> rounded(const std::vector<float>& v, DType t) {
  return t == DType::F32 ? v : decode(encode(v, t), t);
}

// n elements of dtype t on the device, starting `offset` elements into the allocation.
class DeviceArray {
 public:
  DeviceArray(DType t, size_t n, size_t offset = 0)
      : t_(t), n_(n), offset_(offset), buf_((n + offset) * dtype_size(t) + 1) {}
  DeviceArray(DType t, const std::vector<float>& v, size_t offset = 0) : DeviceArray(t, v.size(), offset) {
    upload(v);
  }
  void* get() const { return buf_.get() + offset_ * dtype_size(t_); }
  template <class T>
  T* as() const {
    return static_cast<T*>(get());
  }
  size_t size() const { return n_; }
  void upload(const std::vector<float>& v) {
    ASSERT_EQ(v.size(), n_);
    const std::vector<uint8_t> bytes = encode(v, t_);
    ASSERT_EQ(cudaMemcpy(get(), bytes.data(), bytes.size(), cudaMemcpyHostToDevice), cudaSuccess);
  }
  std::vector<uint8_t> bytes() const {
    std::vector<uint8_t> out(n_ * dtype_size(t_));
    EXPECT_EQ(cudaMemcpy(out.data(), get(), out.size(), cudaMemcpyDeviceToHost), cudaSuccess);
    return out;
  }
  std::vector<float> download() const { return decode(bytes(), t_); }

 private:
  DType t_;
  size_t n_, offset_;
  DeviceBuffer<uint8_t> buf_;
};

// Each |got - ref| <= abs_tol + rel_tol |ref|; reports the worst element.
inline void expect_close(const std::vector<float>& got, const std::vector<float>& ref, double rel_tol,
                         double abs_tol, const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  size_t worst = 0;
  double worst_excess = -1.0;
  for (size_t i = 0; i < got.size(); ++i) {
    const double err = std::fabs(double(got[i]) - double(ref[i]));
    const double excess =
        std::isnan(got[i]) != std::isnan(ref[i]) ? 1e30 : err - (abs_tol + rel_tol * std::fabs(ref[i]));
    if (excess > worst_excess) worst_excess = excess, worst = i;
  }
  EXPECT_LE(worst_excess, 0.0) << what << ": element " << worst << " got " << got[worst] << " want "
                               << ref[worst];
}

inline void expect_bits_equal(const std::vector<float>& got, const std::vector<float>& ref,
                              const std::string& what) {
  ASSERT_EQ(got.size(), ref.size()) << what;
  for (size_t i = 0; i < got.size(); ++i)
    if (std::memcmp(&got[i], &ref[i], sizeof(float)) != 0) {
      ADD_FAILURE() << what << ": element " << i << " got " << got[i] << " want " << ref[i];
      return;
    }
}

// ||got - ref|| / ||ref||.
inline double rel_l2(const std::vector<float>& got, const std::vector<float>& ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    num += (double(got[i]) - ref[i]) * (double(got[i]) - ref[i]);
    den += double(ref[i]) * ref[i];
  }
  return den > 0 ? std::sqrt(num / den) : std::sqrt(num);
}

inline const char* dtype_label(DType t) {
  return dtype_name(t);
}

}  // namespace db::test
