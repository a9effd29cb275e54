// load_generate_models: the CPU fp32 reference backend behind the generate pipeline.
#include <filesystem>

#include "dreambooth/backend/cpu_ops.h"
#include "dreambooth/core/error.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/models/vae.h"
#include "dreambooth/nn/module.h"
#include "dreambooth/pipelines/generate.h"

namespace db {
namespace {

ClipTokenizer load_tokenizer(const ModelFolder& mf) {
  const std::string dir = (std::filesystem::path(mf.dir()) / "tokenizer").string();
  DB_CHECK(mf.has_tokenizer, mf.dir(), ": no tokenizer/ folder (vocab.json, merges.txt); generate needs it");
  return ClipTokenizer::load(dir);
}

// Registries and flat parameter buffers are members declared before the models that view them.
class CpuGenerateModels final : public GenerateModels {
 public:
  explicit CpuGenerateModels(const std::string& dir)
      : mf_(ModelFolder::open(dir)),
        tok_(load_tokenizer(mf_)),
        text_reg_(mf_.registry(Component::TextEncoder)),
        unet_reg_(mf_.registry(Component::UNet)),
        vae_reg_(mf_.registry(Component::Vae)),
        text_flat_(mf_.load(Component::TextEncoder, text_reg_)),
        unet_flat_(mf_.load(Component::UNet, unet_reg_)),
        vae_flat_(mf_.load(Component::Vae, vae_reg_)),
        text_(mf_.text_encoder, text_reg_, text_flat_),
        unet_(mf_.unet, unet_reg_, unet_flat_),
        vae_(mf_.vae, vae_reg_, vae_flat_) {
    DB_CHECK(
        mf_.unet.in_channels == mf_.vae.latent_channels && mf_.unet.out_channels == mf_.vae.latent_channels,
        dir, ": unet in/out channels (", mf_.unet.in_channels, "/", mf_.unet.out_channels,
        ") differ from the VAE's latent channels (", mf_.vae.latent_channels, ")");
    DB_CHECK(mf_.unet.cross_attention_dim == mf_.text_encoder.hidden_size, dir, ": unet cross_attention_dim ",
             mf_.unet.cross_attention_dim, " differs from the text encoder's hidden_size ",
             mf_.text_encoder.hidden_size);
    info_.latent_channels = mf_.unet.in_channels;
    info_.unet_sample_size = mf_.unet.sample_size;
    info_.vae_scale_factor = mf_.vae.downscale_factor();
    info_.scaling_factor = mf_.vae.scaling_factor;
    info_.fingerprint = model_fingerprint(dir);
  }
  const Info& info() const override { return info_; }
  const ClipTokenizer& tokenizer() const override { return tok_; }
  const SchedulerConfig& scheduler_config() const override { return mf_.scheduler; }
  Tensor encode_text(const Tensor& ids) override {
    Ctx ctx{ops_};
    return text_.forward(ctx, ids);
  }
  Tensor unet(const Tensor& sample, const Tensor& timesteps, const Tensor& ehs) override {
    Ctx ctx{ops_};
    return unet_.forward(ctx, sample, timesteps, ehs);
  }
  Tensor vae_decode(const Tensor& z) override {
    Ctx ctx{ops_};
    return vae_.decode(ctx, z);
  }

 private:
  CpuOps ops_;
  ModelFolder mf_;
  ClipTokenizer tok_;
  ParamRegistry text_reg_, unet_reg_, vae_reg_;
  Tensor text_flat_, unet_flat_, vae_flat_;
  ClipTextModel text_;
  UNet2DConditionModel unet_;
  AutoencoderKL vae_;
  Info info_;
};

// Borrowed networks (the trainer's): same ops, same model classes, so the same numbers as
// CpuGenerateModels over the same parameter values.
class BorrowedGenerateModels final : public GenerateModels {
 public:
  BorrowedGenerateModels(const ModelFolder& mf, const ClipTextModel& text, const UNet2DConditionModel& unet,
                         const AutoencoderKL& vae)
      : tok_(load_tokenizer(mf)), scheduler_(mf.scheduler), text_(text), unet_(unet), vae_(vae) {
    DB_CHECK(mf.unet.in_channels == mf.vae.latent_channels && mf.unet.out_channels == mf.vae.latent_channels,
             mf.dir(), ": unet in/out channels differ from the VAE's latent channels");
    DB_CHECK(mf.unet.cross_attention_dim == mf.text_encoder.hidden_size, mf.dir(),
             ": unet cross_attention_dim differs from the text encoder's hidden_size");
    info_.latent_channels = mf.unet.in_channels;
    info_.unet_sample_size = mf.unet.sample_size;
    info_.vae_scale_factor = mf.vae.downscale_factor();
    info_.scaling_factor = mf.vae.scaling_factor;
  }
  const Info& info() const override { return info_; }
  const ClipTokenizer& tokenizer() const override { return tok_; }
  const SchedulerConfig& scheduler_config() const override { return scheduler_; }
  Tensor encode_text(const Tensor& ids) override {
    Ctx ctx{ops_};
    return text_.forward(ctx, ids);
  }
  Tensor unet(const Tensor& sample, const Tensor& timesteps, const Tensor& ehs) override {
    Ctx ctx{ops_};
    return unet_.forward(ctx, sample, timesteps, ehs);
  }
  Tensor vae_decode(const Tensor& z) override {
    Ctx ctx{ops_};
    return vae_.decode(ctx, z);
  }

 private:
  CpuOps ops_;
  ClipTokenizer tok_;
  SchedulerConfig scheduler_;
  const ClipTextModel& text_;
  const UNet2DConditionModel& unet_;
  const AutoencoderKL& vae_;
  Info info_;
};

}  // namespace

std::unique_ptr<GenerateModels> load_generate_models(const std::string& model_dir) {
  return std::make_unique<CpuGenerateModels>(model_dir);
}

std::unique_ptr<GenerateModels> borrow_generate_models(const ModelFolder& mf, const ClipTextModel& text,
                                                       const UNet2DConditionModel& unet,
                                                       const AutoencoderKL& vae) {
  return std::make_unique<BorrowedGenerateModels>(mf, text, unet, vae);
}

}  // namespace db
