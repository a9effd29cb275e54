// `dreambooth generate`: see include/dreambooth/pipelines/generate.h.
#include "dreambooth/pipelines/generate.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"
#include "dreambooth/core/philox.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/dist/world.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/safetensors.h"

namespace db {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}

// Philox noise for a batch whose images are not consecutive (a rank's images are i, i + N, ...):
// image b of the batch draws what PhiloxNoiseSource draws for its global index.
class ImagesNoiseSource final : public NoiseSource {
 public:
  ImagesNoiseSource(uint64_t seed, std::vector<uint32_t> images) : seed_(seed), images_(std::move(images)) {}
  void fill(int step_index, Tensor& out) override {
    DB_CHECK(out.ndim() >= 1 && out.dim(0) == int64_t(images_.size()), "generate: noise for ", images_.size(),
             " images, got ", out.desc());
    for (size_t b = 0; b < images_.size(); ++b) {
      Tensor row = out.slice(int64_t(b), int64_t(b) + 1);
      PhiloxNoiseSource(seed_, images_[b]).fill(step_index, row);
    }
  }

 private:
  uint64_t seed_;
  std::vector<uint32_t> images_;
};

std::string image_file_name(int index, const std::string& format) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%05d.%s", index, format == "jpg" ? "jpg" : "png");
  return buf;
}

// A float option as the decimal the user typed (7.3, not 7.300000190734863): the shortest string that
// reads back to the same float, as a JSON number.
double shortest(float v) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::strtod(std::string(buf, r.ptr).c_str(), nullptr);
}

nlohmann::ordered_json manifest_line(const GenerateOptions& o, const GenerateModels::Info& info,
                                     const std::string& scheduler, int height, int width, int index) {
  nlohmann::ordered_json j;
  j["file"] = image_file_name(index, o.format);
  j["index"] = index;
  j["prompt"] = o.prompt;
  j["negative_prompt"] = o.negative_prompt;
  j["seed"] = o.seed;
  j["scheduler"] = scheduler;
  j["steps"] = o.steps;
  j["guidance"] = shortest(o.guidance);
  if (o.eta != 0.f) j["eta"] = shortest(o.eta);
  j["height"] = height;
  j["width"] = width;
  j["model"] = o.model;
  j["model_fingerprint"] = info.fingerprint;
  j["init_latents"] =
      o.init_latents.empty() ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(o.init_latents);
  return j;
}

// The lines of an existing manifest by file name (settings only: "model" may be spelled differently).
std::map<std::string, nlohmann::ordered_json> read_manifest(const fs::path& path) {
  std::map<std::string, nlohmann::ordered_json> out;
  std::ifstream f(path);
  if (!f) return out;
  std::string line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    auto j = nlohmann::ordered_json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object() || !j.contains("file")) continue;
    j.erase("model");
    out[j["file"].get<std::string>()] = j;
  }
  return out;
}

// Unscaled initial latents of `images` from the options' source, NHWC [B, h, w, C].
class InitLatents {
 public:
  InitLatents(const GenerateOptions& o, int h, int w, int c) : o_(o), h_(h), w_(w), c_(c) {
    if (o.init_latents_tensor.defined()) {
      const Shape want = {o.num_images, h, w, c};
      DB_CHECK(o.init_latents_tensor.shape() == want, "generate: init_latents_tensor ",
               o.init_latents_tensor.desc(), ", expected ", shape_str(want));
      rows_ = o.init_latents_tensor;
    } else if (!o.init_latents.empty()) {
      ErrorContext ctx("--init-latents ", o.init_latents);
      SafetensorsFile f = SafetensorsFile::open(o.init_latents);
      const SafeTensorInfo* t = f.find("latents");
      DB_CHECK(t, "no tensor named 'latents' (expected float [N, C, h, w], PyTorch layout)");
      DB_CHECK(t->shape.size() == 4 && t->shape[1] == c && t->shape[2] == h && t->shape[3] == w,
               "tensor 'latents' has shape ", shape_str(t->shape), ", expected [N, ", c, ", ", h, ", ", w,
               "] (PyTorch layout N, C, h, w) for this model at this image size");
      DB_CHECK(t->shape[0] >= o.num_images, "tensor 'latents' has ", t->shape[0], " rows, --num-images is ",
               o.num_images);
      std::vector<float> nchw(size_t(shape_numel(t->shape)));
      f.read_f32(*t, nchw.data());
      rows_ = Tensor::empty({o.num_images, h, w, c});
      float* d = rows_.f32();
      for (int64_t n = 0; n < o.num_images; ++n)
        for (int y = 0; y < h; ++y)
          for (int x = 0; x < w; ++x)
            for (int k = 0; k < c; ++k)
              d[((n * h + y) * w + x) * c + k] = nchw[size_t(((n * c + k) * h + y) * w + x)];
    }
  }
  Tensor batch(const std::vector<uint32_t>& images) const {
    Tensor x = Tensor::empty({int64_t(images.size()), h_, w_, c_});
    const int64_t n = int64_t(h_) * w_ * c_;
    for (size_t b = 0; b < images.size(); ++b) {
      if (rows_.defined()) {
        std::memcpy(x.f32() + b * n, rows_.f32() + int64_t(images[b]) * n, size_t(n) * sizeof(float));
      } else {
        Tensor r = initial_latents(o_.seed, images[b], {1, h_, w_, c_});
        std::memcpy(x.f32() + b * n, r.f32(), size_t(n) * sizeof(float));
      }
    }
    return x;
  }

 private:
  const GenerateOptions& o_;
  int h_, w_, c_;
  Tensor rows_;
};

// Progress on stderr: a rewritten line on a terminal, one line per finished batch otherwise.
class Progress {
 public:
  // The rewritten step line only on rank 0's terminal (ranks share it under mpirun).
  Progress(bool on, int total_mine, int steps)
      : on_(on), tty_(isatty(2) && world().is_root()), total_(total_mine), steps_(steps) {}
  void step(int done_images, int batch, int s, double s_per_it) {
    if (!on_ || !tty_) return;
    std::fprintf(stderr, "\rgenerate: images %d-%d/%d  step %d/%d  %.3f s/it   ", done_images + 1,
                 done_images + batch, total_, s, steps_, s_per_it);
    std::fflush(stderr);
  }
  void batch_done(int done_images, double s_per_it, double s_per_image) {
    if (!on_) return;
    if (tty_) std::fprintf(stderr, "\r");
    log_info("generate: ", done_images, "/", total_, " images  ", fmt(s_per_it), " s/it  ", fmt(s_per_image),
             " s/image");
  }

 private:
  static std::string fmt(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", v);
    return b;
  }
  bool on_, tty_;
  int total_, steps_;
};

}  // namespace

uint8_t image_value_to_u8(float x) {
  float v = x * 0.5f;
  v = v + 0.5f;
  v = v > 0.f ? v : 0.f;  // NaN -> 0 (what numpy's astype(uint8) gives on x86 in practice)
  v = v < 1.f ? v : 1.f;
  return uint8_t(std::nearbyint(v * 255.f));  // default rounding mode: half to even, as numpy's round
}

void validate_generate_options(const GenerateOptions& o) {
  if (o.steps <= 0) throw UsageError(str_cat("generate: --steps must be a positive number, got ", o.steps));
  if (o.num_images <= 0)
    throw UsageError(str_cat("generate: --num-images must be a positive number, got ", o.num_images));
  if (o.batch_size <= 0)
    throw UsageError(str_cat("generate: --batch-size must be a positive number, got ", o.batch_size));
  if (!(o.guidance >= 0.f) || !std::isfinite(o.guidance))
    throw UsageError(str_cat("generate: --guidance must be a finite number >= 0, got ", o.guidance));
  if (o.format != "png" && o.format != "jpg")
    throw UsageError("generate: --format must be png or jpg, got '" + o.format + "'");
  if (o.quality < 1 || o.quality > 100)
    throw UsageError(str_cat("generate: --quality must be in 1..100, got ", o.quality));
  if (!o.scheduler.empty()) {
    const auto& names = sampler_names();
    if (std::find(names.begin(), names.end(), o.scheduler) == names.end())
      throw UsageError("generate: unknown --scheduler '" + o.scheduler + "' (valid: " + join(names) + ")");
  }
  if (o.eta < 0.f || o.eta > 1.f || !std::isfinite(o.eta))
    throw UsageError(str_cat("generate: --eta must be in [0, 1], got ", o.eta));
  for (auto [v, name] : {std::pair{o.height, "--height"}, std::pair{o.width, "--width"}}) {
    if (v < 0) throw UsageError(str_cat("generate: ", name, " must be positive, got ", v));
    if (v > 0 && v % 8 != 0)
      throw UsageError(
          str_cat("generate: ", name, " must be divisible by 8 (as diffusers requires), got ", v));
  }
  if (o.prompt.empty()) log_warn("generate: the prompt is empty (unconditional images)");
}

std::string model_fingerprint(const std::string& model_dir) {
  const fs::path root(model_dir);
  Sha256 h;
  auto add_file = [&](const fs::path& rel) {
    const fs::path p = root / rel;
    if (!fs::is_regular_file(p)) return;
    const auto bytes = read_file_bytes(p.string());
    h.update(rel.generic_string());
    const uint64_t n = bytes.size();
    h.update(&n, sizeof n);
    h.update(bytes.data(), bytes.size());
  };
  add_file("model_index.json");
  for (const char* c : {"unet/config.json", "text_encoder/config.json", "vae/config.json",
                        "scheduler/scheduler_config.json", "tokenizer/vocab.json", "tokenizer/merges.txt"})
    add_file(c);
  for (const char* comp : {"unet", "text_encoder", "vae"}) {
    std::vector<fs::path> files;
    std::error_code ec;
    for (const auto& e : fs::directory_iterator(root / comp, ec))
      if (e.is_regular_file() && e.path().extension() == ".safetensors") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& p : files) {
      std::ifstream f(p, std::ios::binary);
      DB_CHECK(f, p.string(), ": cannot open");
      const uint64_t size = fs::file_size(p);
      h.update(fs::relative(p, root).generic_string());
      h.update(&size, sizeof size);
      uint64_t hlen = 0;
      f.read(reinterpret_cast<char*>(&hlen), 8);
      DB_CHECK(f && hlen <= size - 8, p.string(), ": not a safetensors file");
      std::vector<char> buf(static_cast<size_t>(hlen));
      f.read(buf.data(), std::streamsize(hlen));
      h.update(buf.data(), buf.size());
      const uint64_t data0 = 8 + hlen, data_size = size - data0;
      constexpr uint64_t kBlock = 4096, kBlocks = 256;
      if (data_size <= kBlock * kBlocks) {
        buf.resize(size_t(data_size));
        f.read(buf.data(), std::streamsize(data_size));
        h.update(buf.data(), buf.size());
      } else {
        buf.resize(kBlock);
        for (uint64_t b = 0; b < kBlocks; ++b) {
          const uint64_t off = data0 + (data_size - kBlock) * b / (kBlocks - 1);
          f.seekg(std::streamoff(off));
          f.read(buf.data(), kBlock);
          h.update(buf.data(), buf.size());
        }
      }
      DB_CHECK(f, p.string(), ": read failed");
    }
  }
  return h.hex_digest();
}

GenerateResult generate_images(GenerateModels& models, const GenerateOptions& o) {
  validate_generate_options(o);
  const auto t_start = Clock::now();
  const World& w = world();
  const GenerateModels::Info& info = models.info();
  const int f = info.vae_scale_factor, c = info.latent_channels;
  const int height = o.height ? o.height : info.unet_sample_size * f;
  const int width = o.width ? o.width : info.unet_sample_size * f;
  for (auto [v, name] : {std::pair{height, "--height"}, std::pair{width, "--width"}})
    if (v % f != 0)
      throw UsageError(
          str_cat("generate: ", name, " must be divisible by the VAE's scale factor ", f, ", got ", v));
  const int h = height / f, wl = width / f;

  // Sampler: --scheduler or the model's class, with StableDiffusionPipeline's config fixups.
  const SchedulerConfig& scfg = models.scheduler_config();
  const std::string sname = o.scheduler.empty() ? sampler_name_for(scfg) : o.scheduler;
  SamplerOptions sopts;
  sopts.eta = o.eta;
  sopts.sd_pipeline_fixups = true;
  sopts.from_pipeline_config = !o.scheduler.empty();
  if (o.eta != 0.f && sname != "ddim")
    throw UsageError("generate: --eta applies to the ddim scheduler only (got --scheduler " + sname + ")");
  make_sampler(sname, scfg, sopts)->set_timesteps(o.steps);  // fails early on a bad step count

  GenerateResult res;
  res.scheduler = sname;
  res.height = height;
  res.width = width;

  // Output folder: created by every rank (idempotent), checked before any work.
  fs::path out;
  std::map<std::string, nlohmann::ordered_json> old_manifest;
  if (!o.out_dir.empty()) {
    out = o.out_dir;
    std::error_code ec;
    fs::create_directories(out, ec);
    if (ec || !fs::is_directory(out))
      throw Error("generate: cannot create the output folder ", o.out_dir, ": ",
                  ec ? ec.message() : std::string("not a directory"));
    if (::access(out.c_str(), W_OK) != 0)
      throw Error("generate: the output folder ", o.out_dir, " is not writable: ", std::strerror(errno));
    if (o.skip_existing) old_manifest = read_manifest(out / "manifest.jsonl");
  }

  // This rank's batches: batch k = images [k * bs, (k + 1) * bs), made by rank k mod world size, so a
  // batch holds the same images whatever the rank count (the CPU GEMM rounds differently for different
  // row counts; see the header). Images kept with skip_existing are left out of their batch.
  std::vector<std::vector<uint32_t>> batches;
  const int bs = o.batch_size;
  const int my_rank = o.this_rank_only ? 0 : w.rank, n_ranks = o.this_rank_only ? 1 : w.size;
  for (int k = my_rank; int64_t(k) * bs < o.num_images; k += n_ranks) {
    std::vector<uint32_t> batch;
    for (int i = k * bs; i < std::min(o.num_images, (k + 1) * bs); ++i) {
      if (!out.empty() && o.skip_existing) {
        const std::string file = image_file_name(i, o.format);
        if (fs::exists(out / file)) {
          auto want = manifest_line(o, info, sname, height, width, i);
          want.erase("model");
          auto it = old_manifest.find(file);
          if (it == old_manifest.end() || it->second != want)
            throw Error("generate: ", (out / file).string(), " exists but ",
                        (out / "manifest.jsonl").string(),
                        " does not record it with these settings; remove it or run without --skip-existing");
          ++res.skipped;
          continue;
        }
      }
      batch.push_back(uint32_t(i));
    }
    if (!batch.empty()) batches.push_back(std::move(batch));
  }
  size_t n_mine = 0;
  for (const auto& b : batches) n_mine += b.size();

  // Text: prompt and negative prompt, encoded once.
  const bool cfg_on = o.guidance > 1.f;  // diffusers: do_classifier_free_guidance = guidance_scale > 1
  const ClipTokenizer& tok = models.tokenizer();
  std::vector<std::string> texts;
  if (cfg_on) texts.push_back(o.negative_prompt);
  texts.push_back(o.prompt);
  const int T = tok.model_max_length();
  Tensor ids = Tensor::empty({int64_t(texts.size()), T}, DType::I32);
  for (size_t k = 0; k < texts.size(); ++k) {
    ClipEncoding e = tok.encode(texts[k]);
    if (e.truncated && (o.this_rank_only || w.is_root()))
      log_warn("The following part of your input was truncated because CLIP can only handle sequences up to ",
               T, " tokens: ", tok.decode(e.dropped));
    DB_CHECK(int(e.ids.size()) == T, "generate: tokenizer returned ", e.ids.size(), " ids, expected ", T);
    std::memcpy(ids.data<int32_t>() + k * T, e.ids.data(), size_t(T) * sizeof(int32_t));
  }
  Tensor text = batches.empty() ? Tensor() : models.encode_text(ids);  // [1 or 2, T, D]

  InitLatents init(o, h, wl, c);
  Progress progress(o.progress, int(n_mine), o.steps);
  const int64_t per_image = int64_t(h) * wl * c;
  int done = 0;
  double sample_seconds = 0;
  int64_t sample_iters = 0;
  for (const std::vector<uint32_t>& batch : batches) {
    const int64_t B = int64_t(batch.size());
    auto sampler = make_sampler(sname, scfg, sopts);
    const std::vector<float> timesteps = sampler->set_timesteps(o.steps);
    Tensor x = init.batch(batch);
    const float sigma0 = sampler->init_noise_sigma();
    for (int64_t e = 0; e < x.numel(); ++e) x.f32()[e] = x.f32()[e] * sigma0;
    std::unique_ptr<NoiseSource> noise =
        o.noise_factory ? o.noise_factory(batch) : std::make_unique<ImagesNoiseSource>(o.seed, batch);

    // encoder_hidden_states: [uncond x B, cond x B] with guidance, [cond x B] without.
    const int64_t halves = cfg_on ? 2 : 1, D = text.dim(2), row = int64_t(T) * D;
    Tensor ehs = Tensor::empty({halves * B, T, D});
    for (int64_t half = 0; half < halves; ++half)
      for (int64_t b = 0; b < B; ++b)
        std::memcpy(ehs.f32() + (half * B + b) * row, text.f32() + half * row, size_t(row) * sizeof(float));
    Tensor tvec = Tensor::empty({halves * B});

    const auto t_batch = Clock::now();
    for (size_t s = 0; s < timesteps.size(); ++s) {
      const float t = timesteps[s];
      Tensor m = sampler->scale_model_input(x, t);
      Tensor in = m;
      if (cfg_on) {
        in = Tensor::empty({2 * B, h, wl, c});
        std::memcpy(in.f32(), m.f32(), size_t(B * per_image) * sizeof(float));
        std::memcpy(in.f32() + B * per_image, m.f32(), size_t(B * per_image) * sizeof(float));
      }
      tvec.fill(t);
      Tensor eps_all = models.unet(in, tvec, ehs);
      DB_CHECK(eps_all.shape() == in.shape(), "generate: UNet output ", eps_all.desc(), ", expected ",
               shape_str(in.shape()));
      res.unet_evals += halves * B;
      Tensor eps = eps_all;
      if (cfg_on) {
        eps = Tensor::empty({B, h, wl, c});
        const float* u = eps_all.f32();
        const float* cd = eps_all.f32() + B * per_image;
        float* e = eps.f32();
        const float g = o.guidance;
        for (int64_t k = 0; k < B * per_image; ++k) e[k] = u[k] + g * (cd[k] - u[k]);
      }
      x = sampler->step(eps, t, x, noise.get());
      progress.step(done, int(B), int(s) + 1, seconds_since(t_batch) / double(s + 1));
    }
    sample_seconds += seconds_since(t_batch);
    sample_iters += int64_t(timesteps.size());

    // Decode: latents / scaling_factor -> VAE -> uint8.
    Tensor z = Tensor::empty(x.shape());
    for (int64_t e = 0; e < x.numel(); ++e) z.f32()[e] = x.f32()[e] / info.scaling_factor;
    Tensor img = models.vae_decode(z);
    DB_CHECK(
        img.ndim() == 4 && img.dim(0) == B && img.dim(1) == height && img.dim(2) == width && img.dim(3) == 3,
        "generate: VAE output ", img.desc(), ", expected [", B, ", ", height, ", ", width, ", 3]");
    const int64_t npx = int64_t(height) * width * 3;
    for (int64_t b = 0; b < B; ++b) {
      Image im(width, height);
      const float* src = img.f32() + b * npx;
      for (int64_t k = 0; k < npx; ++k) im.pixels[size_t(k)] = image_value_to_u8(src[k]);
      if (!out.empty()) {
        const std::string path = (out / image_file_name(int(batch[size_t(b)]), o.format)).string();
        if (o.format == "jpg")
          write_jpeg(path, im, o.quality);
        else
          write_png(path, im);
      }
      if (o.keep_results) {
        GeneratedImage g;
        g.index = int(batch[size_t(b)]);
        g.latents = Tensor::empty({h, wl, c});
        std::memcpy(g.latents.f32(), x.f32() + b * per_image, size_t(per_image) * sizeof(float));
        g.rgb = std::move(im.pixels);
        res.images.push_back(std::move(g));
      }
    }
    done += int(B);
    res.made += int(B);
    progress.batch_done(done, sample_seconds / double(sample_iters), seconds_since(t_start) / done);
  }

  // Manifest: every line is a function of the options and the index, so rank 0 writes it once all ranks
  // are done (the barrier), listing every image in index order.
  if (!o.this_rank_only) barrier();
  if (!out.empty() && (o.this_rank_only || w.is_root())) {
    std::string text_out;
    for (int i = 0; i < o.num_images; ++i)
      text_out += manifest_line(o, info, sname, height, width, i).dump() + "\n";
    write_file_atomic((out / "manifest.jsonl").string(), text_out.data(), text_out.size());
  }
  res.seconds = seconds_since(t_start);
  return res;
}

GenerateResult generate_images(const GenerateOptions& o) {
  validate_generate_options(o);
  auto models = load_generate_models(o.model, o.device, o.lora, o.lora_scale);
  return generate_images(*models, o);
}

}  // namespace db
