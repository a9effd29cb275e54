// ShardSet: shards given as files, globs or folders; validated together. See io/shard_set.h.
#include "dreambooth/io/shard_set.h"

#include <glob.h>

#include <algorithm>
#include <filesystem>
#include <numeric>
#include <set>

#include "dreambooth/core/error.h"

namespace db {
namespace fs = std::filesystem;

std::vector<std::string> expand_shard_spec(const std::string& spec) {
  std::error_code ec;
  std::vector<std::string> out;
  if (fs::is_directory(spec, ec)) {
    for (const auto& e : fs::directory_iterator(spec, ec)) {
      const std::string name = e.path().filename().string();
      std::error_code ec2;
      if (name.size() > 3 && name[0] != '.' && name.compare(name.size() - 3, 3, ".h5") == 0 &&
          e.is_regular_file(ec2))
        out.push_back(e.path().string());
    }
    DB_CHECK(!ec, "shard folder ", spec, ": cannot list (", ec.message(), ")");
    DB_CHECK(!out.empty(), "shard folder ", spec, " holds no *.h5 files");
  } else if (spec.find_first_of("*?[") != std::string::npos) {
    glob_t g{};
    const int rc = ::glob(spec.c_str(), 0, nullptr, &g);
    if (rc == 0)
      for (size_t i = 0; i < g.gl_pathc; ++i) out.push_back(g.gl_pathv[i]);
    ::globfree(&g);
    DB_CHECK(rc == 0 || rc == GLOB_NOMATCH, "shard pattern ", spec, ": glob failed");
    DB_CHECK(!out.empty(), "shard pattern ", spec, " matches no file");
  } else {
    DB_CHECK(fs::exists(spec, ec), "shard ", spec, ": no such file");
    out.push_back(spec);
  }
  std::sort(out.begin(), out.end());
  return out;
}

ShardSet::ShardSet(ShardSet&&) noexcept = default;
ShardSet& ShardSet::operator=(ShardSet&&) noexcept = default;
ShardSet::~ShardSet() = default;

ShardSet ShardSet::open(const std::vector<std::string>& specs, const std::string& what) {
  DB_CHECK(!specs.empty(), what, ": no shard given");
  ShardSet s;
  s.what_ = what;
  std::set<std::string> seen;
  for (const auto& spec : specs)
    for (auto& p : expand_shard_spec(spec)) {
      std::error_code ec;
      std::string key = fs::weakly_canonical(p, ec).string();
      if (seen.insert(ec ? p : key).second) s.paths_.push_back(p);
    }
  struct Key {
    std::string source, sha;
    uint32_t shard;
    int64_t local;
  };
  std::vector<Key> keys;
  s.has_latents_ = true;
  for (const auto& p : s.paths_) {
    auto r = std::make_unique<ShardReader>(p);
    const ShardMeta& m = r->meta();
    const ShardReader* first = s.readers_.empty() ? nullptr : s.readers_.front().get();
    if (!first) {
      s.resolution_ = m.resolution;
      s.tokenizer_fingerprint_ = m.tokenizer_fingerprint;
      s.vae_fingerprint_ = m.vae_fingerprint;
      s.latent_h_ = m.latent_height, s.latent_w_ = m.latent_width;
    } else {
      DB_CHECK(m.resolution == s.resolution_, "shard ", p, ": resolution ", m.resolution, " differs from ",
               s.resolution_, " in ", first->path());
      DB_CHECK(m.tokenizer_fingerprint == s.tokenizer_fingerprint_, "shard ", p,
               ": prepared with a different tokenizer than ", first->path(), " (tokenizer_fingerprint ",
               m.tokenizer_fingerprint.substr(0, 12), "... vs ", s.tokenizer_fingerprint_.substr(0, 12),
               "...)");
    }
    if (!m.has_latents() || m.vae_fingerprint != s.vae_fingerprint_ || m.latent_height != s.latent_h_ ||
        m.latent_width != s.latent_w_)
      s.has_latents_ = false;
    const uint32_t k = uint32_t(s.readers_.size());
    for (int64_t i = 0; i < r->size(); ++i) keys.push_back({r->source_path(i), r->sha256(i), k, i});
    s.readers_.push_back(std::move(r));
  }
  if (!s.has_latents_) s.vae_fingerprint_.clear(), s.latent_h_ = s.latent_w_ = 0;
  std::stable_sort(keys.begin(), keys.end(), [](const Key& a, const Key& b) {
    return a.source != b.source ? a.source < b.source : a.sha < b.sha;
  });
  s.index_.reserve(keys.size());
  for (const auto& k : keys) s.index_.push_back({k.shard, k.local});
  DB_CHECK(!s.index_.empty(), what, ": the shards hold no samples (", s.paths_.front(),
           s.paths_.size() > 1 ? " ..." : "", ")");
  return s;
}

const ShardReader& ShardSet::reader(int64_t i, int64_t* local) const {
  DB_CHECK(i >= 0 && i < size(), what_, ": sample ", i, " out of range [0, ", size(), ")");
  const Entry& e = index_[size_t(i)];
  *local = e.local;
  return *readers_[e.shard];
}

void check_compatible(const std::vector<const ShardSet*>& sets) {
  const ShardSet* ref = nullptr;
  for (const ShardSet* s : sets) {
    if (!s) continue;
    if (!ref) {
      ref = s;
      continue;
    }
    DB_CHECK(s->resolution() == ref->resolution(), "shard ", s->paths().front(), " (", s->what(),
             "): resolution ", s->resolution(), " differs from ", ref->resolution(), " in ",
             ref->paths().front(), " (", ref->what(), ")");
    DB_CHECK(s->tokenizer_fingerprint() == ref->tokenizer_fingerprint(), "shard ", s->paths().front(), " (",
             s->what(), "): prepared with a different tokenizer than ", ref->paths().front(), " (",
             ref->what(), ")");
  }
}

}  // namespace db
