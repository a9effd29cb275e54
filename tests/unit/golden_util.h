#pragma once
// Shared by the forward golden tests (test_{clip,unet,vae}_golden.cpp):
// locating a golden folder
// ($DREAMBOOTH_GOLDEN, default tests/golden, then <preset>/), loading one model
// component from its diffusers folder, reading golden tensors (PyTorch layout)
// and comparing outputs.
//
// Why relative L2 <= 5e-6 (not a looser 1e-4): both sides are fp32 and differ
// only in summation order (GEMM blocking, im2col vs PyTorch's conv, double vs
// float norm statistics); measured on the tiny presets that gives 2e-7..1.3e-6.
// The bound must still catch numerics bugs, and on these random models they are
// small: a transformer GroupNorm eps of 1e-5 instead of 1e-6 moves the UNet
// error to 2e-5, a VAE eps of 1e-5 to 2.5e-5..5.5e-5, a transformer LayerNorm
// eps of 1e-6 instead of 1e-5 to 7e-6..2.6e-5 (1e-4 would pass all of these).
// Structural bugs (a missing residual, a swapped GEGLU half, a wrong head
// split) give >= 1e-2. 5e-6 keeps ~4x headroom over the measured error.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <string>

#include "dreambooth/core/error.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/safetensors.h"

namespace db::golden {

constexpr double kRelL2Bound = 5e-6;

inline std::string root() {
  const char* env = std::getenv("DREAMBOOTH_GOLDEN");
  return env && *env ? env : "tests/golden";
}

// <root>/<preset>, or "" when it (or its forward.safetensors) is missing.
inline std::string preset_dir(const std::string& preset) {
  const std::string d = root() + "/" + preset;
  return std::filesystem::exists(d + "/forward.safetensors") ? d : "";
}

// The golden's model folder (diffusers layout), opened by the project's loader.
inline ModelFolder model(const std::string& dir) {
  return ModelFolder::open(dir + "/model");
}

// A golden tensor as f32 (ids stay integer).
inline Tensor tensor(const SafetensorsFile& f, const std::string& name) {
  const SafeTensorInfo* t = f.find(name);
  if (!t) throw Error(f.path(), ": missing golden tensor ", name);
  if (t->dtype == DType::I64 || t->dtype == DType::I32) return f.get(name).clone();
  Tensor out = Tensor::empty(t->shape);
  f.read_f32(*t, out.f32());
  return out;
}

// [B, C, H, W] -> [B, H, W, C]
inline Tensor nchw_to_nhwc(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = Tensor::empty({B, H, W, C});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H * W; ++i) y.f32()[(b * H * W + i) * C + c] = x.f32()[(b * C + c) * H * W + i];
  return y;
}

// Relative L2 error ||got - want|| / ||want||; prints it with the max abs
// error.
inline double compare(const std::string& what, const Tensor& got, const Tensor& want) {
  EXPECT_EQ(got.numel(), want.numel()) << what;
  double num = 0, den = 0, max_abs = 0;
  for (int64_t i = 0; i < std::min(got.numel(), want.numel()); ++i) {
    const double d = double(got.f32()[i]) - double(want.f32()[i]);
    num += d * d;
    den += double(want.f32()[i]) * want.f32()[i];
    max_abs = std::max(max_abs, std::abs(d));
  }
  const double rel = std::sqrt(num / std::max(den, 1e-30));
  std::cout << "[golden] " << what << ": rel L2 " << rel << ", max abs " << max_abs << "\n";
  ::testing::Test::RecordProperty(what + " rel_l2", std::to_string(rel));
  ::testing::Test::RecordProperty(what + " max_abs", std::to_string(max_abs));
  return rel;
}

}  // namespace db::golden
