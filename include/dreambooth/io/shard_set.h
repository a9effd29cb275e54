#pragma once
// A dataset made of HDF5 shards (docs/DATA_FORMAT.md), opened for training.
//
//   ShardSet inst = ShardSet::open({"data/instance.h5"});          // a file
//   ShardSet cls  = ShardSet::open({"data/class-*.h5"});           // a glob
//   ShardSet more = ShardSet::open({"data/class_shards"});         // a folder: every *.h5 in it
//   check_compatible({&inst, &cls});   // resolution + tokenizer fingerprint agree across all shards
//
// Samples are ordered by (source_path, sha256) over all shards, not by shard: how `prepare` split the
// images across ranks (image i -> rank i mod N) does not change the dataset's order, so a model trained
// from shards written by 1 or N ranks sees the same examples in the same order.
// Every error is one line naming the offending file (or pattern).
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/io/shard.h"

namespace db {

// One spec -> sorted shard paths. A folder gives its *.h5 files (not recursive); a string with
// * ? or [ is a glob; anything else is one file. Throws when a folder or glob matches nothing, or a
// file does not exist.
std::vector<std::string> expand_shard_spec(const std::string& spec);

class ShardSet {
 public:
  // Opens every shard of every spec (duplicates removed), validates each (schema version, shapes)
  // and that they agree among themselves on resolution, tokenizer fingerprint, and latent shape and
  // VAE fingerprint (when they hold latents). `what` names the set in messages ("instance data").
  static ShardSet open(const std::vector<std::string>& specs, const std::string& what = "data");

  ShardSet(ShardSet&&) noexcept;
  ShardSet& operator=(ShardSet&&) noexcept;
  ~ShardSet();

  int64_t size() const { return int64_t(index_.size()); }
  int resolution() const { return resolution_; }
  const std::string& tokenizer_fingerprint() const { return tokenizer_fingerprint_; }
  bool has_latents() const { return has_latents_; }  // every shard holds latents (same VAE)
  const std::string& vae_fingerprint() const { return vae_fingerprint_; }
  int latent_height() const { return latent_h_; }
  int latent_width() const { return latent_w_; }
  const std::vector<std::string>& paths() const { return paths_; }
  const std::string& what() const { return what_; }

  // Sample i (dataset order) -> its shard and index within it.
  const ShardReader& reader(int64_t i, int64_t* local) const;

 private:
  ShardSet() = default;
  struct Entry {
    uint32_t shard;
    int64_t local;
  };
  std::string what_;
  std::vector<std::string> paths_;
  std::vector<std::unique_ptr<ShardReader>> readers_;
  std::vector<Entry> index_;
  int resolution_ = 0;
  std::string tokenizer_fingerprint_, vae_fingerprint_;
  bool has_latents_ = false;
  int latent_h_ = 0, latent_w_ = 0;
};

// Resolution and tokenizer fingerprint must agree across the sets (instance and class data).
void check_compatible(const std::vector<const ShardSet*>& sets);

}  // namespace db
