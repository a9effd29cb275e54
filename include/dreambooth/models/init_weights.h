#pragma once
// Deterministic random initialisation of a registry's parameters (init-model).
//
// Parameter i (registry order) draws from PhiloxStream(seed, RngPurpose::Init, step = i, sample = stream),
// element k of its PyTorch-layout tensor being normal(k), so the result does not depend on the thread
// count. `stream` tells a pipeline's models apart (init-model: 0 unet, 1 text_encoder, 2 vae). Rules, by name
// and shape:
//   *.bias                         0
//   1-D *.weight (norms)           1
//   *embedding.weight              N(0, 0.02)
//   Linear [O, I], conv [O,I,kh,kw] N(0, 1 / (3 * fan_in)), fan_in = I*kh*kw: the variance of PyTorch's
//                                  default kaiming_uniform(a = sqrt(5)) init
#include <cstdint>

#include "dreambooth/core/tensor.h"
#include "dreambooth/models/registry.h"

namespace db {

// Fills `flat` (reg.total_numel() f32 elements; alignment padding set to 0).
void init_weights(const ParamRegistry& reg, const Tensor& flat, uint64_t seed, uint32_t stream = 0);
Tensor init_weights(const ParamRegistry& reg, uint64_t seed, uint32_t stream = 0);

// The standard deviation init_weights uses for a parameter (0 for constants).
float init_std(const ParamInfo& p);

}  // namespace db
