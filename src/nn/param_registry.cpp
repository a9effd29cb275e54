#include "dreambooth/nn/param_registry.h"

#include "dreambooth/core/error.h"

namespace db {

void ParamRegistry::add(const std::string& name, const Shape& torch_shape) {
  DB_CHECK(!index_.count(name), "parameter registry: duplicate parameter '", name, "'");
  DB_CHECK(!torch_shape.empty() && torch_shape.size() <= 4, "parameter registry: '", name,
           "': unsupported rank ", torch_shape.size());
  ParamInfo p;
  p.name = name;
  p.torch_shape = torch_shape;
  p.shape = torch_shape;
  if (torch_shape.size() == 4) p.shape = {torch_shape[0], torch_shape[2], torch_shape[3], torch_shape[1]};
  p.numel = shape_numel(torch_shape);
  p.offset = total_;
  total_ += (p.numel + 15) / 16 * 16;
  index_[name] = params_.size();
  params_.push_back(std::move(p));
}

const ParamInfo* ParamRegistry::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &params_[it->second];
}

const ParamInfo& ParamRegistry::at(const std::string& name) const {
  const ParamInfo* p = find(name);
  if (!p) throw Error("parameter '", name, "' is not in the registry");
  return *p;
}

int64_t ParamRegistry::param_count() const {
  int64_t n = 0;
  for (const auto& p : params_) n += p.numel;
  return n;
}

Tensor ParamRegistry::view(const Tensor& flat, const std::string& name) const {
  return view(flat, at(name));
}

Tensor ParamRegistry::view(const Tensor& flat, const ParamInfo& p) const {
  DB_CHECK(flat.numel() >= total_, "parameter buffer ", flat.desc(), " is smaller than the registry (",
           total_, " elements)");
  Tensor v = flat.view({flat.numel()}).slice(p.offset, p.offset + p.numel);
  return v.view(p.shape);
}

std::pair<int64_t, int64_t> ParamRegistry::range(const std::string& prefix) const {
  size_t first = params_.size(), last = params_.size();
  for (size_t i = 0; i < params_.size(); ++i)
    if (params_[i].name.rfind(prefix, 0) == 0) {
      DB_CHECK(last == params_.size() || last + 1 == i, "parameter registry: the parameters under '", prefix,
               "' are not contiguous (", params_[i].name, ")");
      if (first == params_.size()) first = i;
      last = i;
    }
  DB_CHECK(first < params_.size(), "parameter registry: no parameter under '", prefix, "'");
  const ParamInfo& l = params_[last];
  return {params_[first].offset, l.offset + (l.numel + 15) / 16 * 16};
}

void conv_weight_torch_to_ours(const float* src, float* dst, const Shape& s) {
  const int64_t O = s[0], I = s[1], K = s[2] * s[3];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t k = 0; k < K; ++k) dst[(o * K + k) * I + i] = src[(o * I + i) * K + k];
}

void conv_weight_ours_to_torch(const float* src, float* dst, const Shape& s) {
  const int64_t O = s[0], I = s[1], K = s[2] * s[3];
  for (int64_t o = 0; o < O; ++o)
    for (int64_t i = 0; i < I; ++i)
      for (int64_t k = 0; k < K; ++k) dst[(o * I + i) * K + k] = src[(o * K + k) * I + i];
}

}  // namespace db
