#pragma once
// HDF5 data shards, schema v1 (docs/DATA_FORMAT.md): one file per rank written by `prepare`.
//
//   /pixels          uint8   [N, R, R, 3]   NHWC, the resized+cropped image (chunk = one sample)
//   /latent_mean     float32 [N, h, w, 4]   optional, VAE posterior moments (NHWC)
//   /latent_logvar   float32 [N, h, w, 4]   optional, present iff latent_mean is
//   /prompt_ids      int32   [N, 77]        CLIP token ids
//   /source_path     string  [N]            variable-length UTF-8
//   /sha256          string  [N]            fixed 64-byte ASCII hex of the source file's bytes
//   root attributes: schema_version (=1), resolution, crop, prompt, tokenizer_fingerprint,
//                    vae_fingerprint ("" without latents), created_by, num_samples
//
//   ShardWriter w(path, meta);  w.append(sample); ...  w.commit();   // atomic: tmp, fsync, rename
//   ShardReader r(path, /*expected_resolution=*/512);  r.read_pixels(i, buf);
//
// Files are opened with HDF5 file locking off (NFS/EFS/Lustre often lack the locks HDF5 wants).
// HDF5 is built without thread safety: every call here holds one process-wide mutex.
#include <cstdint>
#include <memory>
#include <string>

namespace db {

constexpr int kShardSchemaVersion = 1;
constexpr int kShardPromptLength = 77;
constexpr int kShardLatentChannels = 4;

struct ShardMeta {
  int resolution = 0;
  std::string crop = "center";  // "center" | "random"
  std::string prompt;
  std::string tokenizer_fingerprint;  // text/clip_tokenizer.h tokenizer_fingerprint (vocab, merges, pad id)
  std::string vae_fingerprint;        // hex, "" when the shard holds no latents
  std::string created_by = "dreambooth";
  int latent_height = 0;  // 0: no latent datasets
  int latent_width = 0;
  bool has_latents() const { return latent_height > 0 && latent_width > 0; }
};

struct ShardSample {
  const uint8_t* pixels = nullptr;       // [R, R, 3]
  const float* latent_mean = nullptr;    // [h, w, 4] when the shard has latents
  const float* latent_logvar = nullptr;  // [h, w, 4]
  const int32_t* prompt_ids = nullptr;   // [77]
  std::string source_path;
  std::string sha256;  // 64 hex chars
};

class ShardWriter {
 public:
  // Creates PATH.tmp-<pid>; nothing appears at `path` until commit().
  ShardWriter(const std::string& path, const ShardMeta& meta);
  ~ShardWriter();  // without commit(): closes and removes the tmp file
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  void append(const ShardSample& s);
  int64_t size() const;
  // Writes the string datasets and num_samples, flushes, closes, fsyncs, renames over `path`.
  void commit();
  const std::string& tmp_path() const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

class ShardReader {
 public:
  // Validates schema_version, resolution (when expected_resolution > 0), dataset shapes and types.
  explicit ShardReader(const std::string& path, int expected_resolution = 0);
  ~ShardReader();
  ShardReader(const ShardReader&) = delete;
  ShardReader& operator=(const ShardReader&) = delete;

  const std::string& path() const;
  const ShardMeta& meta() const;
  int64_t size() const;
  int64_t pixels_per_sample() const;        // R * R * 3
  int64_t latent_elems_per_sample() const;  // h * w * 4, 0 without latents

  void read_pixels(int64_t i, uint8_t* out) const;                 // one chunk read
  void read_latents(int64_t i, float* mean, float* logvar) const;  // throws without latents
  void read_prompt_ids(int64_t i, int32_t* out) const;
  std::string source_path(int64_t i) const;
  std::string sha256(int64_t i) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// Reads only the root attributes (no shape checks beyond schema_version); for `inspect`.
ShardMeta read_shard_meta(const std::string& path, int* schema_version = nullptr,
                          int64_t* num_samples = nullptr);

}  // namespace db
