// prepare --latents: VAE posterior moments from the model's VAE encoder, on the backend make_ops picks.
//
// The shard stores what diffusers' DiagonalGaussianDistribution holds after vae.encode(x): the mean
// and the log-variance clamped to [-30, 20], unscaled (no scaling_factor), NHWC.
#include <algorithm>
#include <cstring>

#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/pipelines/prepare.h"

#include "dreambooth/backend/device.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/vae.h"

namespace db {

namespace {

class VaeLatentEncoder final : public LatentEncoder {
 public:
  VaeLatentEncoder(const std::string& model_dir, const std::string& device) : ops_(make_ops(device)) {
    const ModelFolder m = ModelFolder::open(model_dir);
    cfg_ = m.vae;
    reg_ = m.registry(Component::Vae);
    const WeightFiles wf = m.weight_files(Component::Vae);
    fingerprint_ = sha256_files_hex(wf.files);
    flat_ = to_backend(*ops_, m.load(Component::Vae, reg_), ops_->activation_dtype());
    ops_->synchronize();
    vae_ = std::make_unique<AutoencoderKL>(cfg_, reg_, flat_);
    DB_CHECK(cfg_.latent_channels == 4, m.component_dir(Component::Vae), "/config.json: latent_channels ",
             cfg_.latent_channels, " (shards hold 4)");
  }
  int downscale_factor() const override { return cfg_.downscale_factor(); }
  std::string fingerprint() const override { return fingerprint_; }

  void encode(const float* images, int n, int resolution, float* mean, float* logvar) override {
    const Tensor x = Tensor::wrap(const_cast<float*>(images), {n, resolution, resolution, 3}, DType::F32);
    Ctx ctx{*ops_};
    // [n, h, w, 8]: mean | logvar on channels
    const Tensor moments =
        to_host(*ops_, vae_->encode(ctx, to_backend(*ops_, x, ops_->activation_dtype())), DType::F32);
    const int64_t C = moments.dim(3), half = C / 2;
    DB_CHECK(half == 4, "VAE encoder returned ", moments.desc(), ", expected 8 channels");
    const int64_t pixels = moments.numel() / C;
    const float* m = moments.f32();
    for (int64_t p = 0; p < pixels; ++p) {
      std::memcpy(mean + p * half, m + p * C, size_t(half) * sizeof(float));
      for (int64_t c = 0; c < half; ++c) logvar[p * half + c] = std::clamp(m[p * C + half + c], -30.f, 20.f);
    }
  }

 private:
  std::unique_ptr<Ops> ops_;
  VaeConfig cfg_;
  ParamRegistry reg_;
  Tensor flat_;
  std::unique_ptr<AutoencoderKL> vae_;
  std::string fingerprint_;
};

}  // namespace

std::unique_ptr<LatentEncoder> make_vae_latent_encoder(const std::string& model_dir,
                                                       const std::string& device) {
  return std::make_unique<VaeLatentEncoder>(model_dir, device);
}

}  // namespace db
