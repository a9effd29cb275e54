#include "dreambooth/models/clip_text.h"

#include <string>

#include "dreambooth/core/error.h"

namespace db {

namespace {
Activation clip_activation(const std::string& name) {
  if (name == "quick_gelu") return Activation::QuickGELU;
  if (name == "gelu") return Activation::GELU;
  throw Error("text_encoder: unsupported hidden_act '", name, "' (supported: quick_gelu, gelu)");
}
}  // namespace

ClipTextModel::ClipTextModel(const ClipTextConfig& cfg, const ParamRegistry& reg, const Tensor& flat,
                             const AdapterSet* adapters)
    : cfg_(cfg) {
  ParamSet p(reg, flat, "text_model.", adapters);
  token_embedding_ = p.get("embeddings.token_embedding.weight");
  position_embedding_ = p.get("embeddings.position_embedding.weight");
  const Activation act = clip_activation(cfg.hidden_act);
  for (int i = 0; i < cfg.num_hidden_layers; ++i)
    layers_.emplace_back(p.sub("encoder.layers." + std::to_string(i)), cfg.num_attention_heads,
                         cfg.layer_norm_eps, act);
  final_layer_norm_ = LayerNorm(p.sub("final_layer_norm"), cfg.layer_norm_eps);
}

// ids [B, T] -> last_hidden_state [B, T, H]
Tensor ClipTextModel::forward(Ctx& ctx, const Tensor& ids, Saved* s) const {
  const OpsRange range(ctx.ops, "text_encoder");
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
  if (!s) {
    for (const ClipEncoderLayer& layer : layers_) x = layer.forward(ctx, x);
    return final_layer_norm_.forward(ctx, x);
  }
  s->ids = ids;
  s->layers.clear();
  s->layer_in.clear();
  if (!s->gradient_checkpointing) s->layers.assign(layers_.size(), {});
  for (size_t i = 0; i < layers_.size(); ++i) {
    if (s->gradient_checkpointing) s->layer_in.push_back(x);  // the layer runs as in inference
    x = layers_[i].forward(ctx, x, s->gradient_checkpointing ? nullptr : &s->layers[i]);
  }
  return final_layer_norm_.forward(ctx, x, &s->final_layer_norm);
}

// dout [B, T, H] -> parameter gradients (+= into grad)
void ClipTextModel::backward(Ctx& ctx, const Saved& s, const Tensor& dout, ClipTextModel* grad) const {
  const OpsRange range(ctx.ops, "text_encoder.backward");
  ClipTextModel* g = grad;
  Tensor d = final_layer_norm_.backward(ctx, s.final_layer_norm, dout, g ? &g->final_layer_norm_ : nullptr);
  ctx.notify_grads_ready("text_model.final_layer_norm.");
  for (size_t i = layers_.size(); i-- > 0;) {
    if (s.gradient_checkpointing) {  // rebuild the layer's activations from its input, backward, drop
      ClipEncoderLayer::Saved ls;
      layers_[i].forward(ctx, s.layer_in[i], &ls);
      d = layers_[i].backward(ctx, ls, d, g ? &g->layers_[i] : nullptr);
    } else {
      d = layers_[i].backward(ctx, s.layers[i], d, g ? &g->layers_[i] : nullptr);
    }
    ctx.notify_grads_ready("text_model.encoder.layers." + std::to_string(i) + ".");
  }
  if (!g) return;
  // d [B, T, H]: gradient of token_embedding(ids) + position_embedding(arange(T))
  ctx.ops.embedding_backward(s.ids, d, g->token_embedding_);
  Tensor dpos = g->position_embedding_.slice(0, d.dim(1));  // [T, H], summed over the batch in order
  for (int64_t b = 0; b < d.dim(0); ++b) ctx.ops.add_forward(dpos, d.select(b), dpos);
  ctx.notify_grads_ready("text_model.embeddings.");
}

}  // namespace db
