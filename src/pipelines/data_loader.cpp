// Training data loader. See include/dreambooth/pipelines/data_loader.h.
#include "dreambooth/pipelines/data_loader.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <exception>
#include <mutex>
#include <optional>
#include <thread>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/image_transform.h"
#include "dreambooth/io/shard_set.h"

namespace db {

std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch) {
  DB_CHECK(n >= 0 && n <= int64_t(UINT32_MAX), "epoch_permutation: n = ", n, " out of range");
  DB_CHECK(epoch >= 0 && epoch <= int64_t(UINT32_MAX), "epoch_permutation: epoch ", epoch, " out of range");
  std::vector<int64_t> p(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) p[size_t(i)] = i;
  const PhiloxStream rng(seed, RngPurpose::Shuffle, uint32_t(epoch), 0);
  for (int64_t i = n - 1; i >= 1; --i) {
    const int64_t j = rng.below(uint64_t(n - 1 - i), uint32_t(i + 1));
    std::swap(p[size_t(i)], p[size_t(j)]);
  }
  return p;
}

struct DataLoader::Impl {
  DataLoaderOptions opt;
  std::optional<ShardSet> inst, cls;
  int64_t n = 0;  // examples per epoch
  int btot = 0;
  bool latents = false;
  std::string vae_fp;

  // Producer state (touched only by the thread, after construction).
  DataCursor produce_at;
  int64_t perm_epoch = -1;
  std::vector<int64_t> perm;

  std::mutex mu;
  std::condition_variable cv;
  struct Item {
    Batch batch;
    std::exception_ptr error;
  };
  std::deque<Item> queue;
  bool stop = false;
  std::thread thread;

  DataCursor normalize(DataCursor c) const {
    if (c.position + btot > n) c.epoch += 1, c.position = 0;
    return c;
  }

  Batch make(DataCursor c) {
    c = normalize(c);
    if (perm_epoch != c.epoch) perm = epoch_permutation(n, opt.seed, c.epoch), perm_epoch = c.epoch;
    const int B = opt.batch_size;
    const bool prior = cls.has_value();
    const int S = prior ? 2 * B : B;
    Batch b;
    b.cursor = c;
    b.step = c.epoch * (n / btot) + c.position / btot;
    b.pairs = B;
    b.prior = prior;
    b.latents = latents;
    b.prompt_ids = Tensor::empty({S, kShardPromptLength}, DType::I32);
    const int R = inst->resolution();
    if (latents) {
      const int h = inst->latent_height(), w = inst->latent_width();
      b.latent_mean = Tensor::empty({S, h, w, kShardLatentChannels});
      b.latent_logvar = Tensor::empty({S, h, w, kShardLatentChannels});
    } else {
      b.pixels = Tensor::empty({S, R, R, 3});
    }
    b.slot.resize(size_t(S));
    b.example.resize(size_t(S));
    b.sample.resize(size_t(S));
    Image u8(R, R);
    for (int s = 0; s < S; ++s) {
      const bool is_class = s >= B;
      const int q = is_class ? s - B : s;
      const int64_t g = int64_t(opt.rank) * B + q;  // global pair index in the step
      const int64_t k = perm[size_t(c.position + g)];
      const ShardSet& set = is_class ? *cls : *inst;
      const int64_t idx = k % set.size();
      b.slot[size_t(s)] = is_class ? btot + g : g;
      b.example[size_t(s)] = k;
      b.sample[size_t(s)] = idx;
      int64_t local = 0;
      const ShardReader& rd = set.reader(idx, &local);
      int32_t* ids = b.prompt_ids.data<int32_t>() + size_t(s) * kShardPromptLength;
      rd.read_prompt_ids(local, ids);
      if (opt.vocab_size > 0)
        for (int t = 0; t < kShardPromptLength; ++t)
          DB_CHECK(ids[t] >= 0 && ids[t] < opt.vocab_size, "shard ", rd.path(), ": sample ", local,
                   ": prompt_ids[", t, "] = ", ids[t], " is outside the text encoder's vocabulary [0, ",
                   opt.vocab_size, ")");
      if (latents) {
        const size_t e = size_t(rd.latent_elems_per_sample());
        rd.read_latents(local, b.latent_mean.f32() + size_t(s) * e, b.latent_logvar.f32() + size_t(s) * e);
      } else {
        rd.read_pixels(local, u8.pixels.data());
        normalize_to_unit_range(u8, b.pixels.f32() + size_t(s) * R * R * 3);
      }
    }
    return b;
  }

  void run() {
    DataCursor c = produce_at;
    for (;;) {
      {
        std::unique_lock<std::mutex> lk(mu);
        cv.wait(lk, [&] { return stop || int(queue.size()) < opt.prefetch; });
        if (stop) return;
      }
      Item it;
      try {
        it.batch = make(c);
        c = normalize(DataCursor{it.batch.cursor.epoch, it.batch.cursor.position + btot});
      } catch (...) {
        it.error = std::current_exception();
      }
      const bool failed = it.error != nullptr;
      {
        std::lock_guard<std::mutex> lk(mu);
        queue.push_back(std::move(it));
      }
      cv.notify_all();
      if (failed) return;
    }
  }
};

DataLoader::DataLoader(const DataLoaderOptions& opt) : impl_(std::make_unique<Impl>()) {
  Impl& m = *impl_;
  m.opt = opt;
  DB_CHECK(opt.batch_size > 0, "data loader: batch size ", opt.batch_size, " must be positive");
  DB_CHECK(opt.world_size > 0 && opt.rank >= 0 && opt.rank < opt.world_size, "data loader: rank ", opt.rank,
           " of ", opt.world_size);
  m.opt.prefetch = std::clamp(opt.prefetch, 1, 16);
  m.inst.emplace(ShardSet::open(opt.instance, "instance data"));
  if (!opt.class_data.empty()) m.cls.emplace(ShardSet::open(opt.class_data, "class data"));
  check_compatible({&*m.inst, m.cls ? &*m.cls : nullptr});
  if (opt.expected_resolution > 0)
    DB_CHECK(m.inst->resolution() == opt.expected_resolution, "shard ", m.inst->paths().front(),
             ": resolution ", m.inst->resolution(), " but the run expects ", opt.expected_resolution);
  m.latents = opt.use_latents && m.inst->has_latents() &&
              (!m.cls || (m.cls->has_latents() && m.cls->vae_fingerprint() == m.inst->vae_fingerprint() &&
                          m.cls->latent_height() == m.inst->latent_height() &&
                          m.cls->latent_width() == m.inst->latent_width()));
  if (m.latents) m.vae_fp = m.inst->vae_fingerprint();
  m.n = std::max(m.inst->size(), m.cls ? m.cls->size() : int64_t(0));
  m.btot = opt.batch_size * opt.world_size;
  DB_CHECK(m.n >= m.btot, "data loader: ", m.n, " examples (", m.inst->size(), " instance",
           m.cls ? str_cat(", ", m.cls->size(), " class") : std::string(),
           ") are fewer than one global batch of ", m.btot, " (batch ", opt.batch_size, " x ", opt.world_size,
           " ranks)");
  DB_CHECK(opt.start.epoch >= 0 && opt.start.position >= 0 && opt.start.position < m.n,
           "data loader: cursor (epoch ", opt.start.epoch, ", position ", opt.start.position,
           ") out of range for ", m.n, " examples");
  cursor_ = m.normalize(opt.start);
  m.produce_at = cursor_;
  m.thread = std::thread([&m] { m.run(); });
}

DataLoader::~DataLoader() {
  {
    std::lock_guard<std::mutex> lk(impl_->mu);
    impl_->stop = true;
  }
  impl_->cv.notify_all();
  if (impl_->thread.joinable()) impl_->thread.join();
}

Batch DataLoader::next() {
  Impl& m = *impl_;
  const auto t0 = std::chrono::steady_clock::now();
  Impl::Item it;
  {
    std::unique_lock<std::mutex> lk(m.mu);
    m.cv.wait(lk, [&] { return !m.queue.empty(); });
    it = std::move(m.queue.front());
    if (!it.error) m.queue.pop_front();  // an error stays queued: every later call rethrows it
  }
  m.cv.notify_all();
  if (it.error) std::rethrow_exception(it.error);
  it.batch.wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  total_wait_ += it.batch.wait_seconds;
  cursor_ = m.normalize(DataCursor{it.batch.cursor.epoch, it.batch.cursor.position + m.btot});
  return std::move(it.batch);
}

int64_t DataLoader::examples_per_epoch() const {
  return impl_->n;
}
int64_t DataLoader::batches_per_epoch() const {
  return impl_->n / impl_->btot;
}
int DataLoader::global_batch() const {
  return impl_->btot;
}
int DataLoader::resolution() const {
  return impl_->inst->resolution();
}
bool DataLoader::latents() const {
  return impl_->latents;
}
const std::string& DataLoader::vae_fingerprint() const {
  return impl_->vae_fp;
}
const std::string& DataLoader::tokenizer_fingerprint() const {
  return impl_->inst->tokenizer_fingerprint();
}
int64_t DataLoader::instance_count() const {
  return impl_->inst->size();
}
int64_t DataLoader::class_count() const {
  return impl_->cls ? impl_->cls->size() : 0;
}

std::string data_fingerprint(const std::vector<std::string>& instance,
                             const std::vector<std::string>& class_data) {
  Sha256 h;
  auto add_set = [&](const std::vector<std::string>& specs, const char* what) {
    h.update(str_cat(what, "\n"));
    if (specs.empty()) return;
    const ShardSet set = ShardSet::open(specs, what);
    h.update(str_cat(set.size(), " ", set.resolution(), " ", set.tokenizer_fingerprint(), " ",
                     set.has_latents() ? set.vae_fingerprint() : std::string(), "\n"));
    for (int64_t i = 0; i < set.size(); ++i) {
      int64_t local = 0;
      const ShardReader& r = set.reader(i, &local);
      h.update(r.meta().prompt + "\n" + r.sha256(local) + "\n");
    }
  };
  add_set(instance, "instance data");
  add_set(class_data, "class data");
  return h.hex_digest();
}

}  // namespace db
