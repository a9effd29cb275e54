// transformers' CLIPTextModel state-dict names: "text_model." + embeddings, encoder.layers.N, and
// final_layer_norm, in the order transformers lists them (k, v, q, out projections). The position_ids
// buffer is not a parameter (see model_folder.cpp for how loading treats it).
#include "dreambooth/models/config.h"
#include "dreambooth/models/registry.h"
#include "registry_builders.h"

namespace db {

using namespace registry_detail;

ParamRegistry build_clip_text_registry(const ClipTextConfig& c) {
  ParamRegistry r;
  const int64_t H = c.hidden_size, I = c.intermediate_size;
  r.add("text_model.embeddings.token_embedding.weight", {c.vocab_size, H});
  r.add("text_model.embeddings.position_embedding.weight", {c.max_position_embeddings, H});
  for (int l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "text_model.encoder.layers." + std::to_string(l);
    for (const char* proj :
         {".self_attn.k_proj", ".self_attn.v_proj", ".self_attn.q_proj", ".self_attn.out_proj"})
      add_linear(r, p + proj, H, H);
    add_norm(r, p + ".layer_norm1", H);
    add_linear(r, p + ".mlp.fc1", I, H);
    add_linear(r, p + ".mlp.fc2", H, I);
    add_norm(r, p + ".layer_norm2", H);
  }
  add_norm(r, "text_model.final_layer_norm", H);
  return r;
}

}  // namespace db
