#pragma once
// The training data loader: DreamBooth pairs from instance (and class) shards, shuffled per epoch,
// split across ranks, prefetched on a background thread, resumable from a cursor.
//
//   DataLoaderOptions o; o.instance = {"data/instance.h5"}; o.class_data = {"data/class"};
//   o.batch_size = 1; o.rank = w.rank; o.world_size = w.size; o.seed = 1234;
//   DataLoader dl(o);                 // or o.start = checkpoint's cursor
//   Batch b = dl.next();              // b.wait_seconds: how long next() waited for data
//   checkpoint.cursor = dl.cursor();  // the position after the last batch next() returned
//
// Pairing (the Ray example / diffusers' DreamBoothDataset): n = max(n_inst, n_class) examples;
// example k = (instance[k mod n_inst], class[k mod n_class]) — the instance set is repeated to the
// class count. Without class data an example is one instance sample (prior preservation off).
//
// Order: epoch e visits the examples in the permutation epoch_permutation(n, seed, e) (Fisher–Yates,
// Philox RngPurpose::Shuffle, step = e). Each step takes the next global batch of B_total = B x world
// examples of that order; rank r takes [r*B, (r+1)*B) of it, so 2 ranks x B see exactly what 1 rank x
// 2B sees, in the same order. The last n mod B_total examples of an epoch are dropped (each step is a
// full global batch; the next epoch is a fresh permutation, so different examples are dropped each
// epoch).
//
// A rank's batch holds its B instance samples first, then its B class samples (2B samples), as
// diffusers concatenates them. Each sample carries `slot`, its position in the GLOBAL step: instance
// pair j (0 <= j < B_total) -> j, class pair j -> B_total + j; key per-sample noise and timesteps by
// (step, slot) and they do not depend on the world size.
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/core/tensor.h"

namespace db {

struct DataCursor {
  int64_t epoch = 0;
  int64_t position = 0;  // index in the epoch's order of the next global batch's first example
  bool operator==(const DataCursor&) const = default;
};

struct DataLoaderOptions {
  std::vector<std::string> instance;    // files, globs or folders of shards
  std::vector<std::string> class_data;  // empty: no prior preservation
  int batch_size = 1;                   // B, pairs per rank per step
  int rank = 0, world_size = 1;
  uint64_t seed = 0;
  int prefetch = 2;             // batches prepared ahead (bounded queue)
  bool use_latents = true;      // read cached moments when every shard has them (then no pixels)
  int expected_resolution = 0;  // > 0: shards must have it
  int vocab_size = 0;           // > 0: every prompt id must be in [0, vocab_size) (else next() throws)
  DataCursor start;
};

struct Batch {
  DataCursor cursor;  // where this batch's global batch starts
  int64_t step =
      0;  // global batches since (epoch 0, position 0): epoch * batches_per_epoch + position / B_total
  int pairs = 0;                      // B
  bool prior = false;                 // class samples present (2B samples) or not (B samples)
  bool latents = false;               // latent_mean/logvar filled, pixels undefined
  Tensor pixels;                      // f32 [S, R, R, 3] in [-1, 1]
  Tensor latent_mean, latent_logvar;  // f32 [S, h, w, 4]
  Tensor prompt_ids;                  // i32 [S, 77]
  std::vector<int64_t> slot;          // [S] global slot in the step (see above)
  std::vector<int64_t> example;       // [S] example index k of the pair it belongs to
  std::vector<int64_t> sample;        // [S] sample index in its set (instance or class data order)
  double wait_seconds = 0;            // time next() blocked for this batch
};

// Fisher–Yates over [0, n): for i = n-1 .. 1, j = below(n-1-i, i+1) of PhiloxStream(seed, Shuffle,
// step = epoch, sample = 0); swap(p[i], p[j]).
std::vector<int64_t> epoch_permutation(int64_t n, uint64_t seed, int64_t epoch);

class DataLoader {
 public:
  explicit DataLoader(const DataLoaderOptions& opt);
  ~DataLoader();  // stops and joins the prefetch thread
  DataLoader(const DataLoader&) = delete;
  DataLoader& operator=(const DataLoader&) = delete;

  Batch next();
  DataCursor cursor() const { return cursor_; }  // after the last batch returned (checkpoint this)

  int64_t examples_per_epoch() const;
  int64_t batches_per_epoch() const;  // global steps per epoch (full global batches only)
  int global_batch() const;           // B_total
  int resolution() const;
  bool latents() const;
  const std::string& vae_fingerprint() const;        // "" without latents
  const std::string& tokenizer_fingerprint() const;  // of every shard
  int64_t instance_count() const;
  int64_t class_count() const;  // 0 without class data
  double total_wait_seconds() const { return total_wait_; }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
  DataCursor cursor_;
  double total_wait_ = 0;
};

// Identity of a training data set for resume checks (issue 16): SHA-256 over, for the instance and then
// the class shards (dataset order, see io/shard_set.h): the set's size, resolution, tokenizer and VAE
// fingerprints, each shard's prompt, and every sample's image SHA-256. The same photos prepared again
// (by 1 or N ranks) give the same value; other photos, prompts or another tokenizer/VAE do not.
std::string data_fingerprint(const std::vector<std::string>& instance,
                             const std::vector<std::string>& class_data);

}  // namespace db
