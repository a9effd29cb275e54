#include "dreambooth/nn/lora.h"

#include <cmath>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"

namespace db {

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

}  // namespace

const std::vector<std::string>& lora_unet_targets() {
  static const std::vector<std::string> t = {"to_q", "to_k", "to_v", "to_out.0"};
  return t;
}

const std::vector<std::string>& lora_text_targets() {
  static const std::vector<std::string> t = {"q_proj", "k_proj", "v_proj", "out_proj"};
  return t;
}

ParamRegistry build_lora_registry(const ParamRegistry& base, const std::vector<std::string>& targets,
                                  int rank) {
  DB_CHECK(rank >= 1, "LoRA rank must be >= 1 (got ", rank, ")");
  ParamRegistry reg;
  for (const ParamInfo& p : base.params()) {
    if (p.torch_shape.size() != 2) continue;
    for (const std::string& t : targets)
      if (ends_with(p.name, "." + t + ".weight") || p.name == t + ".weight") {
        const std::string path = p.name.substr(0, p.name.size() - 6);  // keeps the "."
        reg.add(path + "lora_A.weight", {rank, p.torch_shape[1]});
        reg.add(path + "lora_B.weight", {p.torch_shape[0], rank});
        break;
      }
  }
  DB_CHECK(!reg.params().empty(), "LoRA: the model has no module named ", targets.front(), " (or the other ",
           "targets) to adapt");
  return reg;
}

Tensor init_lora_params(const ParamRegistry& lreg, uint64_t seed, uint32_t stream) {
  Tensor out = Tensor::zeros({lreg.total_numel()});
  const std::vector<ParamInfo>& ps = lreg.params();
  for (size_t i = 0; i < ps.size(); ++i) {
    if (!ends_with(ps[i].name, "lora_A.weight")) continue;  // B stays 0
    const double bound = 1.0 / std::sqrt(double(ps[i].torch_shape[1]));
    const PhiloxStream rng(seed, RngPurpose::LoraInit, stream, uint32_t(i));
    float* a = out.f32() + ps[i].offset;
    for (int64_t e = 0; e < ps[i].numel; ++e) a[e] = float((2.0 * rng.uniform(uint64_t(e)) - 1.0) * bound);
  }
  return out;
}

int merge_lora(const ParamRegistry& base_reg, Tensor& base_params, const ParamRegistry& lreg,
               const Tensor& lora_params, float scale) {
  int merged = 0;
  for (const ParamInfo& pa : lreg.params()) {
    if (!ends_with(pa.name, ".lora_A.weight")) continue;
    const std::string path = pa.name.substr(0, pa.name.size() - 14);
    const ParamInfo& pb = lreg.at(path + ".lora_B.weight");
    const ParamInfo* pw = base_reg.find(path + ".weight");
    DB_CHECK(pw && pw->torch_shape.size() == 2, "LoRA: the adapter ", path,
             " names no linear weight of the model");
    const int64_t N = pw->torch_shape[0], K = pw->torch_shape[1], R = pa.torch_shape[0];
    DB_CHECK(pa.torch_shape[1] == K && pb.torch_shape[0] == N && pb.torch_shape[1] == R, "LoRA: the adapter ",
             path, " (A ", shape_str(pa.torch_shape), ", B ", shape_str(pb.torch_shape), ") does not fit ",
             shape_str(pw->torch_shape));
    const float *A = lora_params.f32() + pa.offset, *B = lora_params.f32() + pb.offset;
    float* W = base_params.f32() + pw->offset;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t k = 0; k < K; ++k) {
        double acc = 0;
        for (int64_t r = 0; r < R; ++r) acc += double(B[n * R + r]) * A[r * K + k];
        W[n * K + k] += float(double(scale) * acc);
      }
    ++merged;
  }
  return merged;
}

}  // namespace db
