// CLIPTextModel training forward and backward.
#include "dreambooth/core/error.h"
#include "dreambooth/models/clip_text.h"

namespace db {

// ids [B, T] -> last_hidden_state [B, T, H]
Tensor ClipTextModel::forward(Ctx& ctx, const Tensor& ids, Saved& s) const {
  DB_CHECK(ids.ndim() == 2, "text_encoder: expected ids [B, T], got ", ids.desc());
  const int64_t B = ids.dim(0), T = ids.dim(1), H = cfg_.hidden_size;
  DB_CHECK(T <= cfg_.max_position_embeddings, "text_encoder: ", T, " tokens exceed max_position_embeddings ",
           cfg_.max_position_embeddings);
  s.ids = ids;
  Tensor x = ctx.alloc({B, T, H});
  ctx.ops.embedding_forward(ids, token_embedding_, x);
  const Tensor pos = position_embedding_.slice(0, T);  // [T, H] = position_embedding(arange(T))
  for (int64_t b = 0; b < B; ++b) {
    Tensor xb = x.select(b);  // [T, H]
    ctx.ops.add_forward(xb, pos, xb);
  }
  s.layers.clear();
  s.layer_in.clear();
  if (s.gradient_checkpointing) {
    for (size_t i = 0; i < layers_.size(); ++i) {
      s.layer_in.push_back(x);
      ClipEncoderLayer::Saved tmp;  // dropped: backward recomputes it
      x = layers_[i].forward(ctx, x, tmp);
    }
  } else {
    s.layers.assign(layers_.size(), {});
    for (size_t i = 0; i < layers_.size(); ++i) x = layers_[i].forward(ctx, x, s.layers[i]);
  }
  return final_layer_norm_.forward(ctx, x, s.final_layer_norm);
}

// dout [B, T, H] -> parameter gradients (+= into grad)
void ClipTextModel::backward(Ctx& ctx, const Saved& s, const Tensor& dout, ClipTextModel* grad) const {
  ClipTextModel* g = grad;
  Tensor d = final_layer_norm_.backward(ctx, s.final_layer_norm, dout, g ? &g->final_layer_norm_ : nullptr);
  for (size_t i = layers_.size(); i-- > 0;) {
    if (s.gradient_checkpointing) {  // rebuild the layer's activations from its input, backward, drop
      ClipEncoderLayer::Saved ls;
      layers_[i].forward(ctx, s.layer_in[i], ls);
      d = layers_[i].backward(ctx, ls, d, g ? &g->layers_[i] : nullptr);
    } else {
      d = layers_[i].backward(ctx, s.layers[i], d, g ? &g->layers_[i] : nullptr);
    }
  }
  if (!g) return;
  // d [B, T, H]: gradient of token_embedding(ids) + position_embedding(arange(T))
  ctx.ops.embedding_backward(s.ids, d, g->token_embedding_);
  Tensor dpos = g->position_embedding_.slice(0, d.dim(1));  // [T, H], summed over the batch in order
  for (int64_t b = 0; b < d.dim(0); ++b) ctx.ops.add_forward(dpos, d.select(b), dpos);
}

}  // namespace db
