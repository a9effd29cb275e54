#pragma once
// `dreambooth prepare`: a folder of photos -> HDF5 shard(s), schema v1 (docs/DATA_FORMAT.md).
//
//   PrepareOptions o; o.images_dir = "dog"; o.prompt = "photo of unqtkn dog"; o.model_dir = "sd15";
//   o.out = "data/instance.h5";
//   PrepareResult r = prepare(o);
//
// Inputs: every regular, non-hidden file directly in images_dir (not recursive; the manifest.jsonl
// that `generate` writes is ignored), sorted by name
// (byte order); the format is sniffed from magic bytes. Image i of that list goes to rank i mod N.
// Each file is read once: the SHA-256 and the decode use the same bytes.
//
// Outputs: with one rank exactly `out` (no extension is added); with N > 1 ranks rank r writes
// STEM-RRRRR-of-NNNNN.h5 where STEM is `out` without a trailing ".h5" (`data/inst.h5` ->
// `data/inst-00001-of-00002.h5`). Every shard is written to a temporary name and renamed only after
// all ranks have agreed that the run succeeded (one collective), so a failed run leaves no shard.
// A rank that ends up with no good image still writes its (empty) shard, so the set is complete.
//
// Resolution: `resolution` > 0, or the model's default, unet sample_size x VAE downscale factor
// (2^(len(vae block_out_channels)-1)), which is what StableDiffusionPipeline uses as its default
// height (512 for SD 1.x and 2.x base, 768 for SD 2.x 768-v). The VAE's own sample_size is not used:
// some published folders (SD 2.1 base) carry 768 there although the model is a 512 model.
//
// Bad images (zero-byte, not JPEG/PNG, truncated or corrupt, larger than max_pixels) are skipped and
// listed at the end; with `strict` the first one fails the whole run on every rank. A run where no
// rank has a good image fails ("every image was skipped").
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/image_transform.h"

namespace db {

// A failure every rank has agreed on (one collective), thrown on all ranks after each removed its
// temporary file: nobody needs MPI_Abort. report_here is true on exactly one rank (the one where it
// happened, the lowest if several), which prints the one-line message; the CLI exits 1 everywhere.
class CollectiveError : public Error {
 public:
  CollectiveError(const std::string& msg, bool report_here) : Error(msg), report_here(report_here) {}
  bool report_here;
};

// Computes VAE posterior moments for a batch of prepared images. Implemented over the model's VAE
// encoder (make_vae_latent_encoder); tests may plug in their own.
class LatentEncoder {
 public:
  virtual ~LatentEncoder() = default;
  virtual int downscale_factor() const = 0;     // latent side = resolution / this
  virtual std::string fingerprint() const = 0;  // hex SHA-256 of the VAE weights file(s)
  // images: [n, R, R, 3] float in [-1, 1] (NHWC); mean, logvar: [n, R/f, R/f, 4] each.
  virtual void encode(const float* images, int n, int resolution, float* mean, float* logvar) = 0;
};

// The VAE encoder of the diffusers folder `model_dir` (vae/config.json + weights). Throws when this
// build has no VAE forward pass.
// `device` as make_ops (backend/device.h).
std::unique_ptr<LatentEncoder> make_vae_latent_encoder(const std::string& model_dir,
                                                       const std::string& device = "auto");

struct PrepareOptions {
  std::string images_dir;
  std::string prompt;
  std::string model_dir;  // diffusers folder: tokenizer/ and, for the default resolution, unet/ vae/ configs
  std::string out;
  int resolution = 0;  // 0: the model's default (see above)
  CropMode crop = CropMode::Center;
  uint64_t seed = 0;  // random crops: Philox(seed, Crop, image index)
  bool latents = false;
  std::string device = "auto";  // backend of the VAE encoder (backend/device.h make_ops)
  bool overwrite = false;
  bool strict = false;
  int64_t max_pixels = 89'478'485;  // decode limit (Pillow's MAX_IMAGE_PIXELS)
  int rank = -1, world_size = -1;   // -1: from db::world()
  int progress_every = 0;           // log every k images (0: about every 2 s and at the end)
  int batch = 8;                    // images decoded in parallel (and VAE-encoded together)
  // Tests: overrides make_vae_latent_encoder when latents is set.
  std::function<std::unique_ptr<LatentEncoder>()> latent_encoder_factory;
};

struct SkippedFile {
  std::string path;
  std::string reason;
};

struct PrepareResult {
  std::vector<std::string> shard_paths;  // every rank's output name, in rank order
  std::string my_shard;                  // this rank's
  int resolution = 0;
  int64_t images_total = 0;    // files found (all ranks)
  int64_t prepared_mine = 0;   // good images in this rank's shard
  int64_t prepared_total = 0;  // all ranks
  int64_t skipped_total = 0;
  std::vector<SkippedFile> skipped_mine;
  double seconds = 0;
};

// Output name of rank r of n for `out` (see above).
std::string prepare_shard_path(const std::string& out, int rank, int world_size);

// The default resolution of a diffusers folder (unet sample_size x VAE downscale factor).
int model_default_resolution(const std::string& model_dir);

// Sorted list of candidate image files in `dir` (regular, not hidden, not recursive). Throws naming
// the folder when it is missing, not a folder, unreadable or holds no such file.
std::vector<std::string> list_image_files(const std::string& dir);

// Runs prepare on this rank; collective over db::world() when world_size > 1.
PrepareResult prepare(const PrepareOptions& opt);

}  // namespace db
