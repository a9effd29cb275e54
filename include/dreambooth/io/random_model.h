#pragma once
// A random-init Stable Diffusion pipeline folder (diffusers layout) from a preset: what
// `dreambooth init-model` writes. The folder is built under a temporary sibling name and renamed into
// place; `overwrite` replaces an existing non-empty `dir`, which is otherwise an error.
#include <cstdint>
#include <functional>
#include <string>

#include "dreambooth/core/dtype.h"

namespace db {

struct RandomModelOptions {
  std::string preset;  // sd1-tiny | sd2-tiny | sd15 | sd21
  std::string dir;
  uint64_t seed = 0;
  DType dtype = DType::F32;
  bool overwrite = false;
  std::function<void(const std::string&)> progress;  // one line per component, when set
};

void write_random_model(const RandomModelOptions& o);

}  // namespace db
