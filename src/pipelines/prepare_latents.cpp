// prepare --latents: VAE posterior moments from the model's VAE encoder.
#include "dreambooth/core/error.h"
#include "dreambooth/pipelines/prepare.h"

namespace db {

std::unique_ptr<LatentEncoder> make_vae_latent_encoder(const std::string& model_dir) {
  // The AutoencoderKL forward pass (models/vae.h) has not landed in this build yet.
  throw Error("--latents: this build has no VAE encoder yet (", model_dir,
              "/vae); prepare without --latents, the trainer encodes pixels itself");
}

}  // namespace db
