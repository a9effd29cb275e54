#pragma once
// Golden tensors for the torch-oracle tests: a minimal F32/I64 safetensors reader (the tests need no more;
// the validated reader is io/safetensors.h) and the relative-L2 comparison the backward tests use.
// Files are found under $DREAMBOOTH_GOLDEN (default tests/golden, run from the repo root).
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/core/tensor.h"
#include "dreambooth/models/registry.h"

namespace db::test {

class Golden {
 public:
  // `rel` is relative to the golden root, e.g. "ops_grad/ops_grad.safetensors".
  explicit Golden(const std::string& rel) {
    const char* env = std::getenv("DREAMBOOTH_GOLDEN");
    path_ = std::string(env ? env : "tests/golden") + "/" + rel;
    std::ifstream f(path_, std::ios::binary);
    if (!f) throw Error(path_, ": cannot open (run from the repo root or set DREAMBOOTH_GOLDEN)");
    uint64_t n = 0;
    f.read(reinterpret_cast<char*>(&n), 8);
    std::string header(n, '\0');
    f.read(header.data(), std::streamsize(n));
    std::vector<char> data((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    const nlohmann::json meta = nlohmann::json::parse(header);
    for (const auto& [name, info] : meta.items()) {
      if (name == "__metadata__") continue;
      const std::string dtype = info.at("dtype");
      DB_CHECK(dtype == "F32" || dtype == "I64", path_, ": ", name, " is ", dtype, ", expected F32 or I64");
      const size_t begin = info["data_offsets"][0], end = info["data_offsets"][1];
      Tensor t = Tensor::empty(info["shape"].get<Shape>(), dtype == "F32" ? DType::F32 : DType::I64);
      DB_CHECK(end - begin == t.nbytes() && end <= data.size(), path_, ": bad offsets for ", name);
      std::memcpy(t.raw(), data.data() + begin, t.nbytes());
      tensors_[name] = t;
    }
  }
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  Tensor get(const std::string& name) const {
    auto it = tensors_.find(name);
    if (it == tensors_.end()) throw Error(path_, ": no tensor ", name);
    return it->second;
  }
  Tensor operator[](const std::string& name) const { return get(name); }
  // Names starting with `prefix`, in sorted order.
  std::vector<std::string> names(const std::string& prefix = "") const {
    std::vector<std::string> r;
    for (auto it = tensors_.lower_bound(prefix); it != tensors_.end() && it->first.rfind(prefix, 0) == 0;
         ++it)
      r.push_back(it->first);
    return r;
  }

 private:
  std::string path_;
  std::map<std::string, Tensor> tensors_;
};

inline Tensor zeros_like(const Tensor& t) {
  return Tensor::zeros(t.shape());
}

// ||a - ref|| / ||ref||, and max |a - ref|.
struct Diff {
  double rel_l2 = 0, max_abs = 0;
};
inline Diff diff(const Tensor& a, const Tensor& ref) {
  EXPECT_EQ(a.numel(), ref.numel());
  double num = 0, den = 0, mx = 0;
  for (int64_t i = 0; i < std::min(a.numel(), ref.numel()); ++i) {
    const double d = double(a.f32()[i]) - ref.f32()[i];
    num += d * d;
    den += double(ref.f32()[i]) * ref.f32()[i];
    mx = std::max(mx, std::abs(d));
  }
  return {std::sqrt(num / std::max(den, 1e-300)), mx};
}

// Checks rel-L2 <= tol and prints both figures (the report quotes them).
inline void expect_close(const std::string& what, const Tensor& a, const Tensor& ref, double tol) {
  const Diff d = diff(a, ref);
  std::printf("  %-34s rel_l2 %.2e  max_abs %.2e\n", what.c_str(), d.rel_l2, d.max_abs);
  EXPECT_LE(d.rel_l2, tol) << what << " (max abs " << d.max_abs << ")";
}

// Parameters "<prefix>NAME" of a golden file in a registry + flat buffer (conv weights permuted to
// [O, kh, kw, I]), and a zeroed gradient buffer of the same layout. Needs the registry's implementation.
struct GoldenParams {
  ParamRegistry reg;
  Tensor params, grads;
};
inline GoldenParams load_params(const Golden& g, const std::string& prefix) {
  GoldenParams b;
  for (const std::string& n : g.names(prefix)) b.reg.add(n.substr(prefix.size()), g[n].shape());
  b.params = Tensor::zeros({b.reg.total_numel()});
  b.grads = Tensor::zeros({b.reg.total_numel()});
  for (const ParamInfo& info : b.reg.params()) {
    const Tensor src = g[prefix + info.name];
    Tensor dst = b.reg.view(b.params, info);
    if (info.is_conv())
      conv_weight_torch_to_ours(src.f32(), dst.f32(), info.torch_shape);
    else
      std::memcpy(dst.f32(), src.f32(), src.nbytes());
  }
  return b;
}

// Every gradient in b.grads against "<grad_prefix>NAME" (compared in PyTorch layout), relative L2 <= tol.
// A gradient that is exactly zero in exact arithmetic holds only rounding noise on both sides, where a
// relative error means nothing: a key bias (it adds q·b to a whole row of scores, which softmax ignores),
// or a bias / time-embedding projection in front of a group norm with one channel per group (the norm
// subtracts it). When the relative check fails on a tensor with max |ref| <= 1e-5 x the largest gradient
// element of the set, it is checked for size only: max |got| <= 1e-5 x that largest element.
inline void expect_param_grads(const GoldenParams& b, const Golden& g, const std::string& grad_prefix,
                               double tol) {
  double scale = 0;
  for (const ParamInfo& info : b.reg.params())
    scale = std::max(scale, diff(g[grad_prefix + info.name], Tensor::zeros(info.torch_shape)).max_abs);
  const double floor = 1e-5 * scale;
  for (const ParamInfo& info : b.reg.params()) {
    const Tensor ref = g[grad_prefix + info.name];
    Tensor got = Tensor::empty(info.torch_shape);
    const Tensor v = b.reg.view(b.grads, info);
    if (info.is_conv())
      conv_weight_ours_to_torch(v.f32(), got.f32(), info.torch_shape);
    else
      std::memcpy(got.f32(), v.f32(), v.nbytes());
    const Tensor zero = Tensor::zeros(ref.shape());
    if (diff(got, ref).rel_l2 > tol && diff(ref, zero).max_abs <= floor) {
      const double noise = diff(got, zero).max_abs;
      std::printf("  %-34s max_abs %.2e (zero gradient, noise floor %.1e)\n",
                  (grad_prefix + info.name).c_str(), noise, floor);
      EXPECT_LE(noise, floor) << grad_prefix << info.name;
      continue;
    }
    expect_close(grad_prefix + info.name, got, ref, tol);
  }
}

}  // namespace db::test
