#pragma once
// Shared helpers of the UNet / VAE / CLIP registry builders (private to src/models).
#include <string>

#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"

namespace db::registry_detail {

inline void add_linear(ParamRegistry& r, const std::string& p, int64_t out, int64_t in, bool bias = true) {
  r.add(p + ".weight", {out, in});
  if (bias) r.add(p + ".bias", {out});
}

inline void add_conv(ParamRegistry& r, const std::string& p, int64_t out, int64_t in, int64_t k) {
  r.add(p + ".weight", {out, in, k, k});
  r.add(p + ".bias", {out});
}

inline void add_norm(ParamRegistry& r, const std::string& p, int64_t c) {
  r.add(p + ".weight", {c});
  r.add(p + ".bias", {c});
}

// ResnetBlock2D; temb = 0 for the VAE's blocks (no time_emb_proj).
inline void add_resnet(ParamRegistry& r, const std::string& p, int64_t in, int64_t out, int64_t temb) {
  add_norm(r, p + ".norm1", in);
  add_conv(r, p + ".conv1", out, in, 3);
  if (temb > 0) add_linear(r, p + ".time_emb_proj", out, temb);
  add_norm(r, p + ".norm2", out);
  add_conv(r, p + ".conv2", out, out, 3);
  if (in != out) add_conv(r, p + ".conv_shortcut", out, in, 1);
}

// Transformer2DModel with `layers` BasicTransformerBlocks (self-attn, cross-attn, GEGLU feed-forward).
inline void add_transformer(ParamRegistry& r, const std::string& p, int64_t c, const UNetConfig& cfg) {
  const int64_t cross = cfg.cross_attention_dim;
  add_norm(r, p + ".norm", c);
  if (cfg.use_linear_projection)
    add_linear(r, p + ".proj_in", c, c);
  else
    add_conv(r, p + ".proj_in", c, c, 1);
  for (int l = 0; l < cfg.transformer_layers_per_block; ++l) {
    const std::string b = p + ".transformer_blocks." + std::to_string(l);
    const int64_t kv1 = cfg.only_cross_attention ? cross : c;
    add_norm(r, b + ".norm1", c);
    add_linear(r, b + ".attn1.to_q", c, c, false);
    add_linear(r, b + ".attn1.to_k", c, kv1, false);
    add_linear(r, b + ".attn1.to_v", c, kv1, false);
    add_linear(r, b + ".attn1.to_out.0", c, c);
    add_norm(r, b + ".norm2", c);
    add_linear(r, b + ".attn2.to_q", c, c, false);
    add_linear(r, b + ".attn2.to_k", c, cross, false);
    add_linear(r, b + ".attn2.to_v", c, cross, false);
    add_linear(r, b + ".attn2.to_out.0", c, c);
    add_norm(r, b + ".norm3", c);
    add_linear(r, b + ".ff.net.0.proj", 2 * 4 * c, c);  // GEGLU: value and gate halves
    add_linear(r, b + ".ff.net.2", c, 4 * c);
  }
  if (cfg.use_linear_projection)
    add_linear(r, p + ".proj_out", c, c);
  else
    add_conv(r, p + ".proj_out", c, c, 1);
}

}  // namespace db::registry_detail
