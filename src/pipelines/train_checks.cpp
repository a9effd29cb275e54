// See train_checks.h.
#include "train_checks.h"

#include <filesystem>

#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/text/clip_tokenizer.h"

namespace db {

void check_trainable_model(const ModelFolder& base) {
  DB_CHECK(base.has_tokenizer, "train: model ", base.dir(), " has no tokenizer/ (vocab.json, merges.txt): ",
           "the tuned pipeline would not load in generate, and the shards' prompts cannot be checked");
}

void check_data_matches_model(const ModelFolder& base, const DataLoader& loader,
                              const std::string& instance) {
  const std::string tok_dir = (std::filesystem::path(base.dir()) / "tokenizer").string();
  const std::string tok_fp = tokenizer_fingerprint(tok_dir, ClipTokenizer::load(tok_dir));
  DB_CHECK(loader.tokenizer_fingerprint() == tok_fp, "train: shards ", instance,
           " were tokenised with another tokenizer than the model's (tokenizer_fingerprint ",
           loader.tokenizer_fingerprint(), " in the shards, ", tok_fp, " for ", tok_dir,
           "): re-run 'dreambooth prepare --model ", base.dir(), "'");
  if (!loader.latents()) return;
  const WeightFiles wf = base.weight_files(Component::Vae);
  const std::string vae_fp = sha256_files_hex(wf.files);
  DB_CHECK(loader.vae_fingerprint() == vae_fp, "train: shards ", instance,
           " hold latents of another VAE than the model's (vae_fingerprint ", loader.vae_fingerprint(),
           " in the shards, ", vae_fp, " for ", wf.path, "): re-run 'dreambooth prepare --latents --model ",
           base.dir(), "', or train with --no-cached-latents");
}

}  // namespace db
