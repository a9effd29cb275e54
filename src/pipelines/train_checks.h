#pragma once
// What `train` checks of its model and data before the first step (pipelines/train.cpp): each failure
// is one Error line naming the folder or shard and what differs.
#include "dreambooth/io/model_folder.h"
#include "dreambooth/pipelines/data_loader.h"

namespace db {

// The base model has a tokenizer (a pipeline written without one cannot be loaded by generate).
void check_trainable_model(const ModelFolder& base);

// The shards were prepared with the model's tokenizer (tokenizer_fingerprint, pad id included) and,
// when the loader uses their cached latents, with its VAE (vae_fingerprint). `instance` names the
// shards in messages.
void check_data_matches_model(const ModelFolder& base, const DataLoader& loader, const std::string& instance);

}  // namespace db
