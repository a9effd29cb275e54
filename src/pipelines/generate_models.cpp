// GenerateModels over a backend: the networks run on Ops; inputs and outputs cross as host f32.
#include <filesystem>

#include "dreambooth/backend/device.h"
#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/io/model_folder.h"
#include "dreambooth/models/clip_text.h"
#include "dreambooth/models/unet.h"
#include "dreambooth/models/vae.h"
#include "dreambooth/nn/module.h"
#include "dreambooth/pipelines/generate.h"
#include "dreambooth/pipelines/lora_file.h"

namespace db {
namespace {

ClipTokenizer load_tokenizer(const ModelFolder& mf) {
  const std::string dir = (std::filesystem::path(mf.dir()) / "tokenizer").string();
  DB_CHECK(mf.has_tokenizer, mf.dir(), ": no tokenizer/ folder (vocab.json, merges.txt); generate needs it");
  return ClipTokenizer::load(dir);
}

GenerateModels::Info model_info(const ModelFolder& mf, std::string fingerprint) {
  DB_CHECK(mf.unet.in_channels == mf.vae.latent_channels && mf.unet.out_channels == mf.vae.latent_channels,
           mf.dir(), ": unet in/out channels (", mf.unet.in_channels, "/", mf.unet.out_channels,
           ") differ from the VAE's latent channels (", mf.vae.latent_channels, ")");
  DB_CHECK(mf.unet.cross_attention_dim == mf.text_encoder.hidden_size, mf.dir(),
           ": unet cross_attention_dim ", mf.unet.cross_attention_dim,
           " differs from the text encoder's hidden_size ", mf.text_encoder.hidden_size);
  GenerateModels::Info info;
  info.latent_channels = mf.unet.in_channels;
  info.unet_sample_size = mf.unet.sample_size;
  info.vae_scale_factor = mf.vae.downscale_factor();
  info.scaling_factor = mf.vae.scaling_factor;
  info.fingerprint = std::move(fingerprint);
  return info;
}

// The networks (owned or borrowed) on `ops` (a GPU pair: the text encoder and VAE on `second`); host
// tensors in and out.
class BackendGenerateModels : public GenerateModels {
 public:
  BackendGenerateModels(Ops& ops, ClipTokenizer tok, SchedulerConfig sched, Info info, Ops* second = nullptr)
      : ops_(ops),
        second_(second ? *second : ops),
        tok_(std::move(tok)),
        scheduler_(std::move(sched)),
        info_(std::move(info)) {}
  const Info& info() const override { return info_; }
  const ClipTokenizer& tokenizer() const override { return tok_; }
  const SchedulerConfig& scheduler_config() const override { return scheduler_; }
  Tensor encode_text(const Tensor& ids) override {
    Ctx ctx{second_};
    return to_host(second_, text().forward(ctx, to_backend(second_, ids)), DType::F32);
  }
  Tensor unet(const Tensor& sample, const Tensor& timesteps, const Tensor& ehs) override {
    Ctx ctx{ops_};
    const DType act = ops_.activation_dtype();
    return to_host(ops_,
                   unet_net().forward(ctx, to_backend(ops_, sample, act), to_backend(ops_, timesteps),
                                      to_backend(ops_, ehs, act)),
                   DType::F32);
  }
  Tensor vae_decode(const Tensor& z) override {
    Ctx ctx{second_};
    return to_host(second_, vae().decode(ctx, to_backend(second_, z, second_.activation_dtype())),
                   DType::F32);
  }

 protected:
  virtual const ClipTextModel& text() const = 0;
  virtual const UNet2DConditionModel& unet_net() const = 0;
  virtual const AutoencoderKL& vae() const = 0;
  Ops& ops_;
  Ops& second_;

 private:
  ClipTokenizer tok_;
  SchedulerConfig scheduler_;
  Info info_;
};

// Owns its backend and the parameters (working dtype, in backend memory); members are declared before
// the models that view them.
class LoadedGenerateModels final : public BackendGenerateModels {
 public:
  LoadedGenerateModels(std::unique_ptr<Ops> ops, const ModelFolder& mf, std::string fingerprint,
                       const LoraWeights* lora, float lora_scale)
      : BackendGenerateModels(*ops, load_tokenizer(mf), mf.scheduler, model_info(mf, std::move(fingerprint))),
        owned_ops_(std::move(ops)),
        text_reg_(mf.registry(Component::TextEncoder)),
        unet_reg_(mf.registry(Component::UNet)),
        vae_reg_(mf.registry(Component::Vae)),
        text_flat_(load(mf, Component::TextEncoder, text_reg_, lora, lora_scale)),
        unet_flat_(load(mf, Component::UNet, unet_reg_, lora, lora_scale)),
        vae_flat_(load(mf, Component::Vae, vae_reg_)),
        text_(mf.text_encoder, text_reg_, text_flat_),
        unet_(mf.unet, unet_reg_, unet_flat_),
        vae_(mf.vae, vae_reg_, vae_flat_) {}

 protected:
  const ClipTextModel& text() const override { return text_; }
  const UNet2DConditionModel& unet_net() const override { return unet_; }
  const AutoencoderKL& vae() const override { return vae_; }

 private:
  Tensor load(const ModelFolder& mf, Component c, const ParamRegistry& reg, const LoraWeights* lora = nullptr,
              float lora_scale = 1.f) {
    Tensor host = mf.load(c, reg);
    if (lora && c == Component::UNet && lora->unet_params.defined())
      merge_lora(reg, host, lora->unet, lora->unet_params, lora_scale);
    if (lora && c == Component::TextEncoder && lora->te_params.defined())
      merge_lora(reg, host, lora->text_encoder, lora->te_params, lora_scale);
    const Tensor t = to_backend(ops_, host, ops_.activation_dtype());
    ops_.synchronize();  // the host copy is released on return
    return t;
  }
  std::unique_ptr<Ops> owned_ops_;
  ParamRegistry text_reg_, unet_reg_, vae_reg_;
  Tensor text_flat_, unet_flat_, vae_flat_;
  ClipTextModel text_;
  UNet2DConditionModel unet_;
  AutoencoderKL vae_;
};

// Borrowed networks (the trainer's): same ops, same model classes, so the same numbers as
// LoadedGenerateModels over the same parameter values.
class BorrowedGenerateModels final : public BackendGenerateModels {
 public:
  BorrowedGenerateModels(Ops& ops, const ModelFolder& mf, const ClipTextModel& text,
                         const UNet2DConditionModel& unet, const AutoencoderKL& vae, Ops* second)
      : BackendGenerateModels(ops, load_tokenizer(mf), mf.scheduler, model_info(mf, ""), second),
        text_(text),
        unet_(unet),
        vae_(vae) {}

 protected:
  const ClipTextModel& text() const override { return text_; }
  const UNet2DConditionModel& unet_net() const override { return unet_; }
  const AutoencoderKL& vae() const override { return vae_; }

 private:
  const ClipTextModel& text_;
  const UNet2DConditionModel& unet_;
  const AutoencoderKL& vae_;
};

}  // namespace

std::unique_ptr<GenerateModels> load_generate_models(const std::string& model_dir, const std::string& device,
                                                     const std::string& lora, float lora_scale) {
  std::unique_ptr<Ops> ops = make_ops(device);
  const ModelFolder mf = ModelFolder::open(model_dir);
  std::string fingerprint = model_fingerprint(model_dir);
  if (lora.empty())
    return std::make_unique<LoadedGenerateModels>(std::move(ops), mf, fingerprint, nullptr, 1.f);
  const LoraWeights w = read_lora_weights(lora);
  const std::string id = str_cat(fingerprint, " lora ", sha256_file_hex(lora), " scale ", lora_scale);
  fingerprint = sha256_hex(id.data(), id.size());
  return std::make_unique<LoadedGenerateModels>(std::move(ops), mf, fingerprint, &w, lora_scale);
}

std::unique_ptr<GenerateModels> borrow_generate_models(Ops& ops, const ModelFolder& mf,
                                                       const ClipTextModel& text,
                                                       const UNet2DConditionModel& unet,
                                                       const AutoencoderKL& vae, Ops* second) {
  return std::make_unique<BorrowedGenerateModels>(ops, mf, text, unet, vae, second);
}

}  // namespace db
