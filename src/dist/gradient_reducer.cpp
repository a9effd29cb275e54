#include "dreambooth/dist/gradient_reducer.h"

#include <algorithm>

#include "dreambooth/core/error.h"

namespace db {

GradientReducer::GradientReducer(Communicator& comm, Ops& ops, size_t bucket_bytes)
    : comm_(comm), ops_(ops), bucket_bytes_(bucket_bytes) {}

void GradientReducer::attach(const std::string& model, const ParamRegistry& reg, const Tensor& grad,
                             const ShardLayout* shard) {
  DB_CHECK(grad.dtype() == DType::F32 && grad.numel() == reg.total_numel(), "gradient reducer: ", model,
           " gradients ", grad.desc(), " do not match the registry (", reg.total_numel(), " elements)");
  DB_CHECK(!shard || (shard->ranks() == comm_.size() && shard->numel() == grad.numel()),
           "gradient reducer: ", model, " shard layout does not match the world or the gradients");
  models_.push_back({model, &reg, grad.view({grad.numel()}), std::vector<char>(reg.params().size(), 0),
                     shard ? *shard : ShardLayout()});
}

GradientReducer::Model& GradientReducer::find(const std::string& model) {
  for (Model& m : models_)
    if (m.name == model) return m;
  throw Error("gradient reducer: no model '", model, "' attached");
}

void GradientReducer::ready(const std::string& model, const std::string& prefix) {
  if (comm_.size() == 1) return;
  Model& m = find(model);
  const auto [first, second] = m.reg->range(prefix);
  const auto& params = m.reg->params();
  for (size_t i = 0; i < params.size(); ++i)
    if (params[i].offset >= first && params[i].offset < second) {
      DB_CHECK(!m.reduced[i], "gradient reducer: ", model, " ", params[i].name, " announced twice in a step");
      m.reduced[i] = 1;
    }
  add(size_t(&m - models_.data()), first, second);
  if (bucket_bytes_ > 0 && pending_bytes_ >= bucket_bytes_) flush();
}

void GradientReducer::add(size_t model, int64_t first, int64_t second) {
  pending_.push_back({model, first, second});
  pending_bytes_ += size_t(second - first) * sizeof(float);
}

// Reduces the pending ranges, merging neighbours (backward announces adjacent blocks one after
// another, so a bucket is usually one or two contiguous spans). The order depends only on the models
// and offsets, never on addresses, so every rank issues the same collectives.
void GradientReducer::flush() {
  std::sort(pending_.begin(), pending_.end(), [](const Range& a, const Range& b) {
    return a.model != b.model ? a.model < b.model : a.first < b.first;
  });
  for (size_t i = 0; i < pending_.size();) {
    Range span = pending_[i];
    size_t j = i + 1;
    for (; j < pending_.size() && pending_[j].model == span.model && pending_[j].first == span.second; ++j)
      span.second = pending_[j].second;
    const Model& m = models_[span.model];
    Tensor t = m.grad.slice(span.first, span.second);
    if (m.shard.ranks() > 0)
      comm_.issue_reduce_scatter_sum(t, m.shard.counts_in(span.first, span.second));
    else
      comm_.issue_allreduce_sum(t);
    i = j;
  }
  pending_.clear();
  pending_bytes_ = 0;
}

void GradientReducer::finish() {
  if (comm_.size() == 1) return;
  for (Model& m : models_) {  // whatever backward did not announce, in registry order
    const auto& params = m.reg->params();
    for (size_t i = 0; i < params.size(); ++i)
      if (!m.reduced[i]) {
        const int64_t end = i + 1 < params.size() ? params[i + 1].offset : m.grad.numel();
        add(size_t(&m - models_.data()), params[i].offset, end);
      }
  }
  flush();
  comm_.wait_issued();  // the scale below is the first op to touch the reduced gradients
  const float inv = 1.f / float(comm_.size());
  for (Model& m : models_) {
    if (m.shard.ranks() > 0) {
      Tensor own = m.grad.slice(m.shard.begin(comm_.rank()), m.shard.end(comm_.rank()));
      if (own.numel() > 0) ops_.scale_forward(own, own, inv);
    } else {
      ops_.scale_forward(m.grad, m.grad, inv);
    }
    std::fill(m.reduced.begin(), m.reduced.end(), 0);
  }
}

}  // namespace db
