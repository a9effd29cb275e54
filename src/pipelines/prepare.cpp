// `dreambooth prepare`: photos -> HDF5 shards. See include/dreambooth/pipelines/prepare.h.
#include "dreambooth/pipelines/prepare.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <cstdio>
#include <filesystem>
#include <optional>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/core/version.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/io/shard.h"
#include "dreambooth/text/clip_tokenizer.h"

namespace db {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// All ranks learn the error of the lowest failing rank ("" when none failed). Collective.
struct Agreed {
  std::string message;
  int origin = -1;  // the rank whose message it is
  bool failed() const { return origin >= 0; }
};

Agreed agree(const std::string& local, int rank, int world_size) {
  Agreed a;
  if (world_size <= 1) {
    if (!local.empty()) a.message = local, a.origin = rank;
    return a;
  }
  const int64_t v = allreduce_max(local.empty() ? int64_t(0) : int64_t(world_size - rank));
  if (v == 0) return a;
  a.origin = int(world_size - v);
  int64_t len = a.origin == rank ? int64_t(local.size()) : 0;
  broadcast(&len, sizeof len, a.origin);
  a.message = a.origin == rank ? local : std::string(size_t(len), '\0');
  broadcast(a.message.data(), size_t(len), a.origin);
  return a;
}

// Ends the run on every rank with one message (CollectiveError; printed by the rank it came from).
[[noreturn]] void fail_together(const Agreed& a, int rank, int world_size) {
  throw CollectiveError(a.message, a.origin == rank || world_size <= 1);
}

std::string strip_prefix(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0 ? s.substr(prefix.size()) : s;
}

struct Slot {
  size_t global_index = 0;
  std::string path;
  std::string error;  // non-empty: skipped
  std::string sha256;
  int src_w = 0, src_h = 0;
  Image image;  // resized and cropped
};

void process_slot(Slot& s, int resolution, CropMode crop, uint64_t seed, const DecodeOptions& dopt) {
  try {
    std::vector<uint8_t> bytes = read_file_bytes(s.path);
    s.sha256 = sha256_hex(bytes.data(), bytes.size());
    Image im = decode_image(bytes.data(), bytes.size(), s.path, dopt);
    s.src_w = im.width, s.src_h = im.height;
    s.image = resize_and_crop(im, resolution, crop, seed, uint32_t(s.global_index));
  } catch (const std::exception& e) {
    s.error = strip_prefix(e.what(), "decode " + s.path + ": ");
    if (s.error.empty()) s.error = "unknown error";
  }
}

std::string join_skipped(const std::vector<SkippedFile>& v) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i) {
    if (i) out += ", ";
    out += fs::path(v[i].path).filename().string() + " (" + v[i].reason + ")";
  }
  return out;
}

}  // namespace

std::string prepare_shard_path(const std::string& out, int rank, int world_size) {
  if (world_size <= 1) return out;
  std::string stem = out;
  if (stem.size() > 3 && stem.compare(stem.size() - 3, 3, ".h5") == 0) stem.resize(stem.size() - 3);
  char buf[48];
  std::snprintf(buf, sizeof buf, "-%05d-of-%05d.h5", rank, world_size);
  return stem + buf;
}

// Shards of `out` written by another rank count (stem-RRRRR-of-MMMMM.h5 with MMMMM != world_size, or
// `out` itself when world_size > 1): a folder or glob of shards would read both sets.
static std::vector<std::string> other_shard_sets(const std::string& out, int world_size) {
  std::vector<std::string> found;
  const fs::path parent = fs::path(out).parent_path().empty() ? fs::path(".") : fs::path(out).parent_path();
  std::string stem = fs::path(out).filename().string();
  if (stem.size() > 3 && stem.compare(stem.size() - 3, 3, ".h5") == 0) stem.resize(stem.size() - 3);
  std::error_code ec;
  if (world_size > 1 && fs::is_regular_file(out, ec)) found.push_back(out);
  for (const auto& e : fs::directory_iterator(parent, ec)) {
    const std::string name = e.path().filename().string();
    const std::string rest =
        name.size() > stem.size() + 1 && name.compare(0, stem.size() + 1, stem + "-") == 0
            ? name.substr(stem.size() + 1)
            : "";
    // "RRRRR-of-MMMMM.h5"
    if (rest.size() != 17 || rest.compare(5, 4, "-of-") != 0 || rest.compare(14, 3, ".h5") != 0) continue;
    const std::string r = rest.substr(0, 5), m = rest.substr(9, 5);
    if (!std::all_of(r.begin(), r.end(), ::isdigit) || !std::all_of(m.begin(), m.end(), ::isdigit)) continue;
    if (std::stoi(m) != world_size || world_size == 1) found.push_back((parent / name).string());
  }
  std::sort(found.begin(), found.end());
  return found;
}

int model_default_resolution(const std::string& model_dir) {
  const ModelFolder m = ModelFolder::open(model_dir);
  return m.unet.sample_size * m.vae.downscale_factor();
}

std::vector<std::string> list_image_files(const std::string& dir) {
  std::error_code ec;
  DB_CHECK(fs::exists(dir, ec), "images folder ", dir, " does not exist");
  DB_CHECK(fs::is_directory(dir, ec), "images folder ", dir, " is not a folder");
  std::vector<std::string> names;
  fs::directory_iterator it(dir, ec);
  DB_CHECK(!ec, "images folder ", dir, ": cannot list (", ec.message(), ")");
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    DB_CHECK(!ec, "images folder ", dir, ": cannot list (", ec.message(), ")");
    const std::string name = it->path().filename().string();
    if (name.empty() || name[0] == '.') continue;
    // `dreambooth generate` writes its manifest beside the class images it makes: not a bad image.
    if (name == "manifest.jsonl") continue;
    std::error_code ec2;
    if (!it->is_regular_file(ec2)) continue;  // follows symlinks; folders and devices are ignored
    names.push_back(name);
  }
  std::sort(names.begin(), names.end());
  DB_CHECK(!names.empty(), "images folder ", dir, " holds no files");
  std::vector<std::string> paths;
  for (const auto& n : names) paths.push_back((fs::path(dir) / n).string());
  return paths;
}

PrepareResult prepare(const PrepareOptions& opt) {
  const auto t0 = Clock::now();
  const int rank = opt.rank >= 0 ? opt.rank : world().rank;
  const int nranks = opt.world_size > 0 ? opt.world_size : world().size;
  PrepareResult res;

  // ---- Phase A: everything that can fail before any pixel is touched; all ranks agree. ----
  std::vector<std::string> files;
  std::vector<int32_t> prompt_ids;
  ShardMeta meta;
  std::unique_ptr<LatentEncoder> encoder;
  std::unique_ptr<ShardWriter> writer;
  std::string err;
  std::vector<std::string> other_sets;  // shards of another rank count (removed with --overwrite)
  try {
    DB_CHECK(!opt.out.empty(), "--out is empty");
    DB_CHECK(opt.resolution >= 0, "resolution ", opt.resolution, " is negative");
    DB_CHECK(opt.max_pixels > 0, "max-pixels must be positive");
    files = list_image_files(opt.images_dir);
    for (int r = 0; r < nranks; ++r) res.shard_paths.push_back(prepare_shard_path(opt.out, r, nranks));
    res.my_shard = res.shard_paths[size_t(rank)];

    fs::path parent = fs::path(opt.out).parent_path();
    if (parent.empty()) parent = ".";
    std::error_code ec;
    DB_CHECK(fs::is_directory(parent, ec), "output folder ", parent.string(), " does not exist");
    DB_CHECK(::access(parent.c_str(), W_OK | X_OK) == 0, "output folder ", parent.string(),
             " is not writable");
    for (const auto& p : res.shard_paths) {
      if (!fs::exists(fs::symlink_status(p, ec))) continue;
      DB_CHECK(opt.overwrite, "output ", p, " already exists (use --overwrite to replace it)");
      DB_CHECK(!fs::is_directory(p, ec), "output ", p, " is a folder");
    }
    other_sets = other_shard_sets(opt.out, nranks);
    DB_CHECK(other_sets.empty() || opt.overwrite, "output ", opt.out, ": ", other_sets.front(),
             " exists, a shard set written by another number of ranks (use --overwrite to replace it, or "
             "another --out)");

    const fs::path tok_dir = fs::path(opt.model_dir) / "tokenizer";
    DB_CHECK(fs::is_directory(opt.model_dir, ec), "model folder ", opt.model_dir, " does not exist");
    const ModelFolder model = ModelFolder::open(opt.model_dir);
    DB_CHECK(model.has_tokenizer, "model folder ", opt.model_dir, " has no tokenizer (", tok_dir.string(),
             "/vocab.json and merges.txt)");
    ClipTokenizer tok = ClipTokenizer::load(tok_dir.string());
    ClipEncoding enc = tok.encode(opt.prompt);
    if (enc.truncated && rank == 0)
      log_warn("prompt is longer than ", tok.model_max_length(), " tokens; ", enc.dropped.size(),
               " tokens cut off: \"", tok.decode(enc.dropped), "\"");
    DB_CHECK(int(enc.ids.size()) == kShardPromptLength, "tokenizer ", tok_dir.string(), " pads to ",
             enc.ids.size(), " tokens; shards hold ", kShardPromptLength);
    prompt_ids = enc.ids;

    meta.resolution =
        opt.resolution > 0 ? opt.resolution : model.unet.sample_size * model.vae.downscale_factor();
    meta.crop = opt.crop == CropMode::Center ? "center" : "random";
    meta.prompt = opt.prompt;
    meta.tokenizer_fingerprint = tokenizer_fingerprint(tok_dir.string(), tok);
    meta.created_by = std::string("dreambooth ") + kVersion;
    if (opt.latents) {
      encoder = opt.latent_encoder_factory ? opt.latent_encoder_factory()
                                           : make_vae_latent_encoder(opt.model_dir, opt.device);
      const int f = encoder->downscale_factor();
      DB_CHECK(f > 0 && meta.resolution % f == 0, "resolution ", meta.resolution,
               " is not a multiple of the VAE downscale factor ", f);
      meta.latent_height = meta.latent_width = meta.resolution / f;
      meta.vae_fingerprint = encoder->fingerprint();
    }
    res.resolution = meta.resolution;
    writer = std::make_unique<ShardWriter>(res.my_shard, meta);
  } catch (const std::exception& e) {
    err = e.what();
  }
  if (Agreed a = agree(err, rank, nranks); a.failed()) {
    writer.reset();
    fail_together(a, rank, nranks);
  }
  res.images_total = int64_t(files.size());
  if (rank == 0)
    log_info("prepare: ", files.size(), " files in ", opt.images_dir, " -> ",
             nranks == 1 ? opt.out : prepare_shard_path(opt.out, 0, nranks) + " ...", " (resolution ",
             meta.resolution, ", ", meta.crop, " crop", opt.latents ? ", with latents" : "", ")");

  // ---- Phase B: this rank's images, `batch` at a time decoded in parallel, appended in order. ----
  std::vector<size_t> mine;
  for (size_t i = size_t(rank); i < files.size(); i += size_t(nranks)) mine.push_back(i);
  DecodeOptions dopt;
  dopt.max_pixels = opt.max_pixels;
  const int R = meta.resolution;
  const size_t batch = size_t(std::max(1, opt.batch));
  const size_t lat_elems = size_t(meta.latent_height) * meta.latent_width * kShardLatentChannels;
  std::vector<float> fpix, mean, logvar;
  auto last_log = t0;
  size_t done = 0;
  err.clear();
  try {
    for (size_t b0 = 0; b0 < mine.size() && err.empty(); b0 += batch) {
      const size_t n = std::min(batch, mine.size() - b0);
      std::vector<Slot> slots(n);
      for (size_t k = 0; k < n; ++k)
        slots[k].global_index = mine[b0 + k], slots[k].path = files[mine[b0 + k]];
#pragma omp parallel for schedule(dynamic, 1)
      for (size_t k = 0; k < n; ++k) process_slot(slots[k], R, opt.crop, opt.seed, dopt);

      std::vector<Slot*> good;
      for (auto& s : slots) {
        if (!s.error.empty()) {
          if (opt.strict) {
            err = str_cat(s.path, ": ", s.error, " (--strict: nothing was written)");
            break;
          }
          res.skipped_mine.push_back({s.path, s.error});
          continue;
        }
        if (std::min(s.src_w, s.src_h) < R)
          log_warn(s.path, " is ", s.src_w, "x", s.src_h, ", smaller than the resolution ", R, ": upscaled");
        good.push_back(&s);
      }
      if (!err.empty()) break;
      if (encoder && !good.empty()) {
        const size_t px = size_t(R) * R * 3;
        fpix.resize(good.size() * px);
        mean.resize(good.size() * lat_elems);
        logvar.resize(good.size() * lat_elems);
        for (size_t k = 0; k < good.size(); ++k)
          normalize_to_unit_range(good[k]->image, fpix.data() + k * px);
        encoder->encode(fpix.data(), int(good.size()), R, mean.data(), logvar.data());
      }
      for (size_t k = 0; k < good.size(); ++k) {
        ShardSample smp;
        smp.pixels = good[k]->image.pixels.data();
        if (encoder)
          smp.latent_mean = mean.data() + k * lat_elems, smp.latent_logvar = logvar.data() + k * lat_elems;
        smp.prompt_ids = prompt_ids.data();
        smp.source_path = good[k]->path;
        smp.sha256 = good[k]->sha256;
        writer->append(smp);
      }
      res.prepared_mine += int64_t(good.size());
      done += n;
      const bool at_end = done == mine.size();
      const bool by_count = opt.progress_every > 0 &&
                            (done / size_t(opt.progress_every)) != ((done - n) / size_t(opt.progress_every));
      if (at_end || by_count || (opt.progress_every <= 0 && seconds_since(last_log) >= 2.0)) {
        last_log = Clock::now();
        const double dt = seconds_since(t0);
        char rate[32];
        std::snprintf(rate, sizeof rate, "%.1f", dt > 0 ? double(done) / dt : 0.0);
        log_info("prepare: ", done, "/", mine.size(), " images", res.skipped_mine.empty() ? "" : " (",
                 res.skipped_mine.empty() ? "" : std::to_string(res.skipped_mine.size()) + " skipped)", ", ",
                 rate, " images/s");
      }
    }
  } catch (const std::exception& e) {
    err = e.what();
  }
  if (Agreed a = agree(err, rank, nranks); a.failed()) {
    writer.reset();
    fail_together(a, rank, nranks);
  }
  if (!res.skipped_mine.empty())
    log_warn("skipped ", res.skipped_mine.size(),
             res.skipped_mine.size() == 1 ? " file: " : " files: ", join_skipped(res.skipped_mine));

  res.prepared_total = nranks > 1 ? allreduce_sum(res.prepared_mine) : res.prepared_mine;
  res.skipped_total =
      nranks > 1 ? allreduce_sum(int64_t(res.skipped_mine.size())) : int64_t(res.skipped_mine.size());
  if (res.prepared_total == 0) {
    writer.reset();
    Agreed a;
    a.origin = 0;
    a.message = str_cat("every image in ", opt.images_dir, " was skipped (", res.skipped_total,
                        " files); nothing was written");
    fail_together(a, rank, nranks);
  }
  if (res.prepared_mine == 0) log_warn("this rank has no good image; its shard ", res.my_shard, " is empty");

  // ---- Phase C: commit everywhere; if any rank fails, the others remove what they renamed. ----
  err.clear();
  bool committed = false;
  try {
    writer->commit();
    committed = true;
  } catch (const std::exception& e) {
    err = e.what();
  }
  writer.reset();
  if (Agreed a = agree(err, rank, nranks); a.failed()) {
    if (committed) {
      std::error_code ec;
      fs::remove(res.my_shard, ec);
    }
    fail_together(a, rank, nranks);
  }
  res.seconds = seconds_since(t0);
  if (rank == 0) {
    for (const auto& p : other_sets) {  // --overwrite: the old set of another rank count goes too
      std::error_code ec;
      if (fs::remove(p, ec)) log_info("prepare: removed ", p, " (a shard set of another rank count)");
    }
    char rate[32];
    std::snprintf(rate, sizeof rate, "%.1f", res.seconds > 0 ? double(res.images_total) / res.seconds : 0.0);
    log_info(
        "prepare: wrote ", res.prepared_total, " images to ",
        nranks == 1 ? opt.out : str_cat(nranks, " shards ", prepare_shard_path(opt.out, 0, nranks), " ..."),
        res.skipped_total ? str_cat(" (", res.skipped_total, " skipped)") : std::string(), " in ",
        res.seconds, " s, ", rate, " images/s");
  }
  return res;
}

}  // namespace db
