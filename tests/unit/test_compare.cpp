#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"
#include "dreambooth/pipelines/compare.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;

namespace {

// A model folder skeleton (unet/, vae/) inside a temporary folder.
fs::path model_dir(const db::test::TempDir& t, const std::string& name) {
  fs::create_directories(t.path / name / "unet");
  fs::create_directories(t.path / name / "vae");
  return t.path / name;
}

void write_model(const fs::path& d, float w0, bool with_extra) {
  std::vector<std::pair<std::string, Tensor>> unet = {{"w", Tensor::from_vector({w0, 2.f, 2.f, 1.f}, {2, 2})},
                                                      {"b", Tensor::from_vector({0.f, 0.f}, {2})}};
  if (with_extra) unet.push_back({"extra", Tensor::from_vector({1.f}, {1})});
  write_safetensors((d / "unet" / "diffusion_pytorch_model.safetensors").string(), unet);
  write_safetensors((d / "vae" / "diffusion_pytorch_model.safetensors").string(),
                    {{"z", Tensor::from_vector({3.f, 4.f}, {2}).to(DType::F16)}});
}

const TensorDiff* find(const CompareResult& r, const std::string& name) {
  for (const auto& d : r.diffs)
    if (d.name == name) return &d;
  return nullptr;
}

}  // namespace

TEST(Compare, ReportsPerTensorDifferences) {
  const db::test::TempDir tmp("compare");
  fs::path a = model_dir(tmp, "a"), b = model_dir(tmp, "b");
  write_model(a, 1.f, true);
  write_model(b, 1.5f, false);
  CompareResult r = compare_models(a.string(), b.string());
  ASSERT_EQ(r.diffs.size(), 3u);
  const TensorDiff* w = find(r, "unet/w");
  ASSERT_NE(w, nullptr);
  EXPECT_DOUBLE_EQ(w->max_abs, 0.5);
  // ||a - b|| / ||b|| = 0.5 / sqrt(1.5^2 + 4 + 4 + 1)
  EXPECT_NEAR(w->rel_l2, 0.5 / std::sqrt(11.25), 1e-12);
  EXPECT_EQ(find(r, "unet/b")->rel_l2, 0.0);  // both zero: no difference
  EXPECT_EQ(find(r, "vae/z")->max_abs, 0.0);  // f16 read back as f32
  EXPECT_EQ(r.only_in_a, std::vector<std::string>{"unet/extra"});
  EXPECT_TRUE(r.only_in_b.empty());
}

TEST(Compare, IdenticalFoldersAreWithinZeroTolerance) {
  const db::test::TempDir tmp("compare");
  fs::path a = model_dir(tmp, "c"), b = model_dir(tmp, "d");
  write_model(a, 1.f, false);
  write_model(b, 1.f, false);
  CompareResult r = compare_models(a.string(), b.string());
  EXPECT_EQ(r.max_rel_l2(), 0.0);
  EXPECT_TRUE(r.only_in_a.empty() && r.only_in_b.empty() && r.shape_mismatch.empty());
}

TEST(Compare, MissingPathIsAClearError) {
  try {
    compare_models("/nonexistent/a", "/nonexistent/b");
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/a"), std::string::npos) << e.what();
  }
}
