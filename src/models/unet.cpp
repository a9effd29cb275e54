#include "dreambooth/models/unet.h"

#include <string>

#include "dreambooth/core/error.h"

namespace db {

namespace {

// diffusers' Transformer2DModel builds its GroupNorm with eps=1e-6 (transformer_2d.py,
// _init_continuous_input) and its BasicTransformerBlocks' LayerNorms with its own norm_eps, whose
// default 1e-5 the UNet blocks never override (unet_2d_blocks.py). Neither is a config field.
constexpr float kTransformerGroupNormEps = 1e-6f;
constexpr float kTransformerLayerNormEps = 1e-5f;

std::string idx(const char* base, size_t i) {
  return base + std::to_string(i);
}

}  // namespace

UNet2DConditionModel::UNet2DConditionModel(const UNetConfig& cfg, const ParamRegistry& reg,
                                           const Tensor& flat)
    : cfg_(cfg) {
  ErrorContext ec("unet");
  DB_CHECK(cfg.act_fn == "silu", "unsupported act_fn '", cfg.act_fn, "' (supported: silu)");
  DB_CHECK(cfg.resnet_time_scale_shift == "default", "unsupported resnet_time_scale_shift '",
           cfg.resnet_time_scale_shift, "'");
  DB_CHECK(cfg.time_embedding_type == "positional", "unsupported time_embedding_type '",
           cfg.time_embedding_type, "'");
  DB_CHECK(!cfg.dual_cross_attention, "dual_cross_attention is not supported");
  ParamSet p(reg, flat);
  const std::vector<int>& boc = cfg.block_out_channels;
  const std::vector<int> heads = cfg.num_attention_heads.value_or(cfg.num_heads);
  const size_t n = boc.size();
  DB_CHECK(cfg.down_block_types.size() == n && cfg.up_block_types.size() == n && heads.size() == n,
           "block_out_channels, down/up_block_types and heads must have the same length");

  TimestepEmbeddingParams tp;
  tp.flip_sin_to_cos = cfg.flip_sin_to_cos;
  tp.downscale_freq_shift = float(cfg.freq_shift);
  time_embedding_ = TimestepEmbedding(p.sub("time_embedding"), boc[0], tp, Activation::SiLU);
  conv_in_ = Conv2d(p.sub("conv_in"), Conv2dGeometry::same(1));

  ResnetOptions ro;
  ro.groups = cfg.norm_num_groups;
  ro.eps = cfg.norm_eps;
  auto transformer = [&](const ParamSet& tps, int h, bool only_cross) {
    Transformer2DOptions o;
    o.heads = h;
    o.layers = cfg.transformer_layers_per_block;
    o.norm_groups = cfg.norm_num_groups;
    o.norm_eps = kTransformerGroupNormEps;
    o.block_norm_eps = kTransformerLayerNormEps;
    o.upcast_attention = cfg.upcast_attention;
    o.only_cross_attention = only_cross;
    return Transformer2D(tps, o);
  };

  for (size_t i = 0; i < n; ++i) {
    const ParamSet bp = p.sub(idx("down_blocks.", i));
    const bool attn = cfg.down_block_types[i] == "CrossAttnDownBlock2D";
    UNetBlock b;
    for (int j = 0; j < cfg.layers_per_block; ++j) {
      b.resnets.emplace_back(bp.sub(idx("resnets.", j)), ro);
      if (attn)
        b.attentions.push_back(
            transformer(bp.sub(idx("attentions.", j)), heads[i], cfg.only_cross_attention));
    }
    if (i + 1 < n) b.downsamplers.emplace_back(bp.sub("downsamplers.0"), cfg.downsample_padding);
    down_.push_back(std::move(b));
  }

  DB_CHECK(cfg.mid_block_type == "UNetMidBlock2DCrossAttn", "unsupported mid_block_type '",
           cfg.mid_block_type, "'");
  ResnetOptions mo = ro;
  mo.output_scale_factor = cfg.mid_block_scale_factor;
  const ParamSet mp = p.sub("mid_block");
  mid_.resnets.emplace_back(mp.sub("resnets.0"), mo);
  mid_.attentions.push_back(
      transformer(mp.sub("attentions.0"), heads[n - 1], false));  // mid: never only-cross
  mid_.resnets.emplace_back(mp.sub("resnets.1"), mo);

  for (size_t i = 0; i < n; ++i) {
    const ParamSet bp = p.sub(idx("up_blocks.", i));
    const bool attn = cfg.up_block_types[i] == "CrossAttnUpBlock2D";
    UNetBlock b;
    for (int j = 0; j < cfg.layers_per_block + 1; ++j) {
      b.resnets.emplace_back(bp.sub(idx("resnets.", j)), ro);
      if (attn)
        b.attentions.push_back(
            transformer(bp.sub(idx("attentions.", j)), heads[n - 1 - i], cfg.only_cross_attention));
    }
    if (i + 1 < n) b.upsamplers.emplace_back(bp.sub("upsamplers.0"));
    up_.push_back(std::move(b));
  }
  conv_norm_out_ = GroupNorm(p.sub("conv_norm_out"), cfg.norm_num_groups, cfg.norm_eps);
  conv_out_ = Conv2d(p.sub("conv_out"), Conv2dGeometry::same(1));
}

// sample [B, h, w, Cin], timesteps [B], encoder_hidden_states [B, T, D] -> [B, h, w, Cout]
Tensor UNet2DConditionModel::forward(Ctx& ctx, const Tensor& sample, const Tensor& timesteps,
                                     const Tensor& encoder_hidden_states) const {
  DB_CHECK(sample.ndim() == 4 && sample.dim(3) == cfg_.in_channels, "unet: expected sample [B, h, w, ",
           cfg_.in_channels, "], got ", sample.desc());
  const int64_t B = sample.dim(0);
  DB_CHECK(timesteps.numel() == B && encoder_hidden_states.dim(0) == B, "unet: batch of ", B,
           " samples needs as many timesteps and encoder states, got ", timesteps.desc(), " and ",
           encoder_hidden_states.desc());
  const int64_t factor = int64_t(1) << (down_.size() - 1);
  DB_CHECK(sample.dim(1) % factor == 0 && sample.dim(2) % factor == 0, "unet: sample ", sample.desc(),
           " must be a multiple of ", factor, " in h and w");
  const Tensor& ehs = encoder_hidden_states;

  Tensor x = sample;
  if (cfg_.center_input_sample) {  // 2 * sample - 1.0
    x = ctx.alloc(sample.shape());
    Tensor ones = ctx.alloc(sample.shape());
    const std::vector<float> host_ones(size_t(sample.numel()), 1.f);
    ctx.ops.upload(host_ones.data(), ones);  // backend-agnostic (no host fill of a device tensor)
    ctx.ops.add_forward(sample, ones, x, 2.f, -1.f);
  }
  Tensor temb = time_embedding_.forward(ctx, timesteps);  // [B, 4*C0]
  Tensor h = conv_in_.forward(ctx, x);                    // [B, h, w, C0]

  std::vector<Tensor> skips{h};
  for (const UNetBlock& b : down_) {
    for (size_t j = 0; j < b.resnets.size(); ++j) {
      h = b.resnets[j].forward(ctx, h, temb);
      if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs);
      skips.push_back(h);
    }
    for (const Downsample2D& d : b.downsamplers) {
      h = d.forward(ctx, h);  // [B, h/2, w/2, C]
      skips.push_back(h);
    }
  }

  h = mid_.resnets[0].forward(ctx, h, temb);
  h = mid_.attentions[0].forward(ctx, h, ehs);
  h = mid_.resnets[1].forward(ctx, h, temb);

  for (const UNetBlock& b : up_) {
    for (size_t j = 0; j < b.resnets.size(); ++j) {
      const Tensor res = skips.back();  // [B, h, w, Cskip]
      skips.pop_back();
      Tensor cat = ctx.alloc({B, h.dim(1), h.dim(2), h.dim(3) + res.dim(3)});  // cat([h, res], channels)
      ctx.ops.concat_channels_forward(h, res, cat);
      h = b.resnets[j].forward(ctx, cat, temb);
      if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs);
    }
    for (const Upsample2D& u : b.upsamplers) h = u.forward(ctx, h);  // [B, 2h, 2w, C]
  }
  DB_CHECK(skips.empty(), "unet: ", skips.size(), " skip connections left over");
  h = conv_norm_out_.forward(ctx, h, Activation::SiLU);
  return conv_out_.forward(ctx, h);
}

}  // namespace db
