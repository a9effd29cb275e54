// Placeholder until the model folder loader and the CPU forward passes are in main.
#include "dreambooth/core/error.h"
#include "dreambooth/pipelines/generate.h"

namespace db {

std::unique_ptr<GenerateModels> load_generate_models(const std::string& model_dir) {
  throw Error("--model ", model_dir, ": this build has no model loader yet");
}

}  // namespace db
