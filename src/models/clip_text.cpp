#include "dreambooth/models/clip_text.h"

#include "dreambooth/core/error.h"

namespace db {

namespace {
Activation clip_activation(const std::string& name) {
  if (name == "quick_gelu") return Activation::QuickGELU;
  if (name == "gelu") return Activation::GELU;
  throw Error("text_encoder: unsupported hidden_act '", name, "' (supported: quick_gelu, gelu)");
}
}  // namespace

ClipTextModel::ClipTextModel(const ClipTextConfig& cfg, const ParamRegistry& reg, const Tensor& flat)
    : cfg_(cfg) {
  ParamSet p(reg, flat, "text_model.");
  token_embedding_ = p.get("embeddings.token_embedding.weight");
  position_embedding_ = p.get("embeddings.position_embedding.weight");
  const Activation act = clip_activation(cfg.hidden_act);
  for (int i = 0; i < cfg.num_hidden_layers; ++i)
    layers_.emplace_back(p.sub("encoder.layers." + std::to_string(i)), cfg.num_attention_heads,
                         cfg.layer_norm_eps, act);
  final_layer_norm_ = LayerNorm(p.sub("final_layer_norm"), cfg.layer_norm_eps);
}

// ids [B, T] -> [B, T, H]
Tensor ClipTextModel::forward(Ctx& ctx, const Tensor& ids) const {
  DB_CHECK(ids.ndim() == 2, "text_encoder: expected ids [B, T], got ", ids.desc());
  const int64_t B = ids.dim(0), T = ids.dim(1), H = cfg_.hidden_size;
  DB_CHECK(T <= cfg_.max_position_embeddings, "text_encoder: ", T, " tokens exceed max_position_embeddings ",
           cfg_.max_position_embeddings);
  Tensor x = ctx.alloc({B, T, H});
  ctx.ops.embedding_forward(ids, token_embedding_, x);
  const Tensor pos = position_embedding_.slice(0, T);  // [T, H] = position_embedding(arange(T))
  for (int64_t b = 0; b < B; ++b) {
    Tensor xb = x.select(b);  // [T, H]
    ctx.ops.add_forward(xb, pos, xb);
  }
  for (const ClipEncoderLayer& layer : layers_) x = layer.forward(ctx, x);
  return final_layer_norm_.forward(ctx, x);
}

}  // namespace db
