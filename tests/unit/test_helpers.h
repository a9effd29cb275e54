#pragma once
// The one header of test chores, so that each is done one way:
//   - golden data: where it is (golden_root), a committed file that is missing FAILS naming it
//     (golden_path), golden tensors read with the project's validated reader (Golden, io/safetensors.h),
//     the model presets the golden tests run on (golden_presets);
//   - the real photos of ../shared: the only reason a test may skip (needs_shared_data);
//   - temporary folders (TempDir), NCHW -> NHWC, relative L2 differences (diff, expect_close);
//   - parameters from a golden file in a registry + flat buffer, and every parameter gradient checked.
// Tests run from the repository root (tests/run_tests.sh does).
#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/core/tensor.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"

namespace db::test {

// ---------------------------------------------------------------------------------------------------
// Golden data (tests/reference writes it; tests/golden/MANIFEST lists every committed file).

// The committed goldens, relative to the repository root.
inline constexpr const char* kCommittedGolden = "tests/golden";

// $DREAMBOOTH_GOLDEN (another harness output, e.g. a new architecture), else the committed tests/golden.
inline std::string golden_root() {
  const char* env = std::getenv("DREAMBOOTH_GOLDEN");
  return env && *env ? env : kCommittedGolden;
}

// <root>/<rel>. A golden that is missing is a failure, never a skip: the test would otherwise pass with
// nothing checked. Throws (GoogleTest reports the exception as the test's failure) naming the file.
inline std::string golden_path(const std::string& rel) {
  const std::string p = golden_root() + "/" + rel;
  if (!std::filesystem::exists(p))
    throw Error(p, ": golden file missing (committed under tests/golden, listed in tests/golden/MANIFEST; ",
                "tests/reference/README.md regenerates it; run from the repo root)");
  return p;
}

// A golden preset's diffusers model folder (written by diffusers' save_pretrained).
inline std::string golden_model(const std::string& preset = "sd1-tiny") {
  return golden_path(preset + "/model");
}

// A golden JSON file, parsed.
inline nlohmann::json golden_json(const std::string& rel) {
  return read_json_file(golden_path(rel));
}

// The model presets whose harness folders (<root>/<preset>/{model/, forward.safetensors,
// train.safetensors}) the model tests run on: the committed sd1-tiny, sd2-tiny and extra, or the
// space-separated names in $DREAMBOOTH_GOLDEN_PRESETS (to check another architecture's harness output).
inline std::vector<std::string> golden_presets() {
  const char* env = std::getenv("DREAMBOOTH_GOLDEN_PRESETS");
  if (!env || !*env) return {"sd1-tiny", "sd2-tiny", "extra"};
  std::vector<std::string> r;
  std::istringstream in(env);
  for (std::string s; in >> s;) r.push_back(s);
  return r;
}

// A GoogleTest parameter name for a preset ("sd1-tiny" -> "sd1_tiny").
inline std::string param_name(std::string s) {
  for (char& c : s)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return s;
}

// Golden tensors of one safetensors file (PyTorch layouts), read with the project's validated reader.
class Golden {
 public:
  // `rel` is relative to the golden root, e.g. "ops_grad/ops_grad.safetensors".
  explicit Golden(const std::string& rel) : file_(SafetensorsFile::open(golden_path(rel))) {}
  bool has(const std::string& name) const { return file_.find(name) != nullptr; }
  // A copy: float tensors as F32, integer tensors (ids, timesteps, images) in their own dtype.
  Tensor get(const std::string& name) const {
    const SafeTensorInfo* t = file_.find(name);
    if (!t) throw Error(file_.path(), ": no golden tensor ", name);
    if (t->dtype != DType::F32 && t->dtype != DType::F16 && t->dtype != DType::BF16)
      return file_.get(name).clone();  // the mapping may be unaligned for the type: copy
    Tensor out = Tensor::empty(t->shape);
    file_.read_f32(*t, out.f32());
    return out;
  }
  Tensor operator[](const std::string& name) const { return get(name); }
  // Names starting with `prefix`, sorted.
  std::vector<std::string> names(const std::string& prefix = "") const {
    std::vector<std::string> r;
    for (const SafeTensorInfo& t : file_.tensors())
      if (t.name.rfind(prefix, 0) == 0) r.push_back(t.name);
    std::sort(r.begin(), r.end());
    return r;
  }
  const SafetensorsFile& file() const { return file_; }

 private:
  SafetensorsFile file_;
};

// Why the forward golden tests (UNet, CLIP text encoder, VAE encode/decode; the prepare VAE encoder)
// use relative L2 <= 5e-6, not a looser 1e-4: both sides are fp32 and differ only in summation order
// (GEMM blocking, im2col vs PyTorch's conv, double vs float norm statistics); measured on the tiny
// presets that gives 2e-7..1.3e-6. The bound must still catch numerics bugs, and on these random models
// they are small: a transformer GroupNorm eps of 1e-5 instead of 1e-6 moves the UNet error to 2e-5, a
// VAE eps of 1e-5 to 2.5e-5..5.5e-5, a transformer LayerNorm eps of 1e-6 instead of 1e-5 to
// 7e-6..2.6e-5 (1e-4 would pass all of these). Structural bugs (a missing residual, a swapped GEGLU
// half, a wrong head split) give >= 1e-2. 5e-6 keeps ~4x headroom over the measured error.
constexpr double kForwardRelL2 = 5e-6;

// ---------------------------------------------------------------------------------------------------
// The real DreamBooth photos: the only data a test may skip without.

// $DREAMBOOTH_SHARED_DATA, else ../shared/data/dreambooth (the clone's neighbour).
inline std::string shared_data_dir() {
  if (const char* e = std::getenv("DREAMBOOTH_SHARED_DATA"); e && *e) return e;
  return "../shared/data/dreambooth";
}

// The skip message of a test that needs `path` from ../shared: tests/run_tests.sh fails on any skip
// whose message lacks "needs ../shared".
//   if (!fs::is_directory(dir)) GTEST_SKIP() << needs_shared_data(dir);
inline std::string needs_shared_data(const std::string& path) {
  return "needs ../shared: no " + path + " (set DREAMBOOTH_SHARED_DATA)";
}

// ---------------------------------------------------------------------------------------------------
// Temporary folders.

// A new, empty folder under the system temp dir (unique: mkdtemp), removed with its contents at scope
// exit. `t / "name"` is a path inside it.
struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& tag) {
    std::string tmpl = (std::filesystem::temp_directory_path() / ("db_" + tag + "_XXXXXX")).string();
    if (!::mkdtemp(tmpl.data())) throw Error("mkdtemp ", tmpl, ": ", std::strerror(errno));
    path = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  std::string str() const { return path.string(); }
  std::string operator/(const std::string& name) const { return (path / name).string(); }
};

// ---------------------------------------------------------------------------------------------------
// Layouts and differences.

// [B, C, H, W] (PyTorch) -> [B, H, W, C] (ours).
inline Tensor nchw_to_nhwc(const Tensor& x) {
  const int64_t B = x.dim(0), C = x.dim(1), H = x.dim(2), W = x.dim(3);
  Tensor y = Tensor::empty({B, H, W, C});
  for (int64_t b = 0; b < B; ++b)
    for (int64_t c = 0; c < C; ++c)
      for (int64_t i = 0; i < H * W; ++i) y.f32()[(b * H * W + i) * C + c] = x.f32()[(b * C + c) * H * W + i];
  return y;
}

inline Tensor zeros_like(const Tensor& t) {
  return Tensor::zeros(t.shape());
}

// ||a - ref||_2 / ||ref||_2 and max |a - ref|, accumulated in double.
struct Diff {
  double rel_l2 = 0, max_abs = 0;
};
inline Diff diff(const float* a, const float* ref, size_t n) {
  double num = 0, den = 0, mx = 0;
  for (size_t i = 0; i < n; ++i) {
    const double d = double(a[i]) - double(ref[i]);
    num += d * d;
    den += double(ref[i]) * ref[i];
    mx = std::max(mx, std::abs(d));
  }
  return {std::sqrt(num / std::max(den, 1e-300)), mx};
}
inline Diff diff(const std::vector<float>& a, const std::vector<float>& ref) {
  EXPECT_EQ(a.size(), ref.size());
  return diff(a.data(), ref.data(), std::min(a.size(), ref.size()));
}
inline Diff diff(const Tensor& a, const Tensor& ref) {
  EXPECT_EQ(a.numel(), ref.numel());
  return diff(a.f32(), ref.f32(), size_t(std::min(a.numel(), ref.numel())));
}

// Checks rel-L2 <= tol; prints both figures and records them in the XML/JSON report.
inline Diff expect_close(const std::string& what, const Tensor& a, const Tensor& ref, double tol) {
  EXPECT_EQ(a.shape(), ref.shape()) << what;
  const Diff d = diff(a, ref);
  std::printf("  %-34s rel_l2 %.2e  max_abs %.2e\n", what.c_str(), d.rel_l2, d.max_abs);
  ::testing::Test::RecordProperty(what + " rel_l2", std::to_string(d.rel_l2));
  EXPECT_LE(d.rel_l2, tol) << what << " (max abs " << d.max_abs << ")";
  return d;
}

// ---------------------------------------------------------------------------------------------------
// Parameters and gradients against torch.

// Parameters "<prefix>NAME" of a golden file in a registry + flat buffer (conv weights permuted to
// [O, kh, kw, I]), and a zeroed gradient buffer of the same layout.
struct GoldenParams {
  ParamRegistry reg;
  Tensor params, grads;
};
inline GoldenParams load_params(const Golden& g, const std::string& prefix) {
  GoldenParams b;
  for (const std::string& n : g.names(prefix)) b.reg.add(n.substr(prefix.size()), g.file().find(n)->shape);
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

// One parameter of a flat buffer in PyTorch layout (conv weights back to [O, I, kh, kw]).
inline Tensor torch_layout(const ParamRegistry& reg, const Tensor& flat, const ParamInfo& info) {
  Tensor got = Tensor::empty(info.torch_shape);
  const Tensor v = reg.view(flat, info);
  if (info.is_conv())
    conv_weight_ours_to_torch(v.f32(), got.f32(), info.torch_shape);
  else
    std::memcpy(got.f32(), v.f32(), v.nbytes());
  return got;
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
  for (const ParamInfo& info : b.reg.params()) {
    const Tensor ref = g[grad_prefix + info.name];
    for (int64_t i = 0; i < ref.numel(); ++i) scale = std::max(scale, double(std::abs(ref.f32()[i])));
  }
  const double floor = 1e-5 * scale;
  for (const ParamInfo& info : b.reg.params()) {
    const Tensor ref = g[grad_prefix + info.name];
    const Tensor got = torch_layout(b.reg, b.grads, info);
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
