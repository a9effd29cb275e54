#pragma once
// The parameter registries of the three models, with exactly the names and shapes diffusers /
// transformers use for a config (checked against every preset by tests/reference/check_registry.py).
#include "dreambooth/nn/param_registry.h"

namespace db {

struct UNetConfig;
struct ClipTextConfig;
struct VaeConfig;

// Registries with exactly the names and shapes diffusers / transformers use for these configs.
ParamRegistry build_unet_registry(const UNetConfig& c);
ParamRegistry build_clip_text_registry(const ClipTextConfig& c);  // "text_model.*" names
ParamRegistry build_vae_registry(const VaeConfig& c);

}  // namespace db
