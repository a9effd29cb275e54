#pragma once
// Per-tensor differences between two models: diffusers folders, checkpoints or single safetensors
// files. Used by `dreambooth compare` and by tests (distributed equivalence, "the VAE did not move").
#include <cstdint>
#include <string>
#include <vector>

namespace db {

struct TensorDiff {
  std::string name;    // "unet/conv_in.weight", or the bare name for single files
  double max_abs = 0;  // max |a - b|
  double rel_l2 = 0;   // ||a - b||_2 / ||b||_2 (0 when both are zero; inf when only b is zero)
  int64_t numel = 0;
};

struct CompareResult {
  std::vector<TensorDiff> diffs;  // tensors present in both, same shape
  std::vector<std::string> only_in_a, only_in_b, shape_mismatch;
  double max_rel_l2() const;
};

// A and B: both folders (every *.safetensors and *.safetensors.index.json below them, tensor names
// prefixed with the file's folder relative to the root, e.g. "unet/"; a shard set counts once), or
// both .safetensors files. Tensors of any float dtype are compared in double after conversion to f32.
CompareResult compare_models(const std::string& a, const std::string& b);

}  // namespace db
