#include "dreambooth/models/unet.h"

#include <cstddef>
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
                                           const Tensor& flat, const AdapterSet* adapters)
    : cfg_(cfg) {
  ErrorContext ec("unet");
  DB_CHECK(cfg.act_fn == "silu", "unsupported act_fn '", cfg.act_fn, "' (supported: silu)");
  DB_CHECK(cfg.resnet_time_scale_shift == "default", "unsupported resnet_time_scale_shift '",
           cfg.resnet_time_scale_shift, "'");
  DB_CHECK(cfg.time_embedding_type == "positional", "unsupported time_embedding_type '",
           cfg.time_embedding_type, "'");
  DB_CHECK(!cfg.dual_cross_attention, "dual_cross_attention is not supported");
  ParamSet p(reg, flat, "", adapters);
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
                                     const Tensor& encoder_hidden_states, Saved* s) const {
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
    ctx.ops.fill(ones, 1.f);
    ctx.ops.add_forward(sample, ones, x, 2.f, -1.f);
  }
  Tensor temb = time_embedding_.forward(ctx, timesteps, s ? &s->time_embedding : nullptr);  // [B, 4*C0]
  Tensor h = conv_in_.forward(ctx, x, s ? &s->conv_in : nullptr);                           // [B, h, w, C0]

  const bool ckpt = s && s->gradient_checkpointing;
  if (s) {
    s->down.clear();
    s->up.clear();
    s->mid = {};
    s->down_in.clear();
    s->up_in.clear();
    s->up_skips.clear();
    s->mid_in = s->temb = s->ehs = Tensor();
    if (ckpt) {
      s->temb = temb;
      s->ehs = ehs;
    } else {
      s->down.assign(down_.size(), {});
      s->up.assign(up_.size(), {});
    }
  }
  // With checkpointing, each block runs as in inference (nothing kept) after its inputs are recorded;
  // backward recomputes it.
  auto saved = [&](std::vector<UNetBlock::Saved>& v, size_t i) { return s && !ckpt ? &v[i] : nullptr; };

  std::vector<Tensor> skips{h};
  for (size_t i = 0; i < down_.size(); ++i) {
    if (ckpt) s->down_in.push_back(h);
    h = down_block_forward(ctx, i, h, temb, ehs, s ? saved(s->down, i) : nullptr, skips);
  }
  if (ckpt) s->mid_in = h;
  h = mid_block_forward(ctx, h, temb, ehs, s && !ckpt ? &s->mid : nullptr);
  for (size_t i = 0; i < up_.size(); ++i) {
    if (ckpt) {
      s->up_in.push_back(h);
      // the skips this block pops, in pop order (kept for the recomputation)
      const size_t n = up_[i].resnets.size();
      DB_CHECK(skips.size() >= n, "unet: skip bookkeeping out of step");
      s->up_skips.emplace_back(skips.end() - std::ptrdiff_t(n), skips.end());
    }
    h = up_block_forward(ctx, i, h, temb, ehs, s ? saved(s->up, i) : nullptr, skips);
  }
  DB_CHECK(skips.empty(), "unet: ", skips.size(), " skip connections left over");
  h = conv_norm_out_.forward(ctx, h, Activation::SiLU, s ? &s->conv_norm_out : nullptr);
  return conv_out_.forward(ctx, h, s ? &s->conv_out : nullptr);
}

Tensor UNet2DConditionModel::down_block_forward(Ctx& ctx, size_t i, Tensor h, const Tensor& temb,
                                                const Tensor& ehs, UNetBlock::Saved* bs,
                                                std::vector<Tensor>& skips) const {
  const OpsRange range(ctx.ops, "unet.down_blocks.", i);
  const UNetBlock& b = down_[i];
  if (bs) {
    bs->resnets.assign(b.resnets.size(), {});
    bs->attentions.assign(b.attentions.size(), {});
    bs->downsamplers.assign(b.downsamplers.size(), {});
  }
  for (size_t j = 0; j < b.resnets.size(); ++j) {
    h = b.resnets[j].forward(ctx, h, temb, bs ? &bs->resnets[j] : nullptr);
    if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs, bs ? &bs->attentions[j] : nullptr);
    skips.push_back(h);
  }
  for (size_t j = 0; j < b.downsamplers.size(); ++j) {
    h = b.downsamplers[j].forward(ctx, h, bs ? &bs->downsamplers[j] : nullptr);  // [B, h/2, w/2, C]
    skips.push_back(h);
  }
  return h;
}

Tensor UNet2DConditionModel::mid_block_forward(Ctx& ctx, Tensor h, const Tensor& temb, const Tensor& ehs,
                                               UNetBlock::Saved* bs) const {
  const OpsRange range(ctx.ops, "unet.mid_block");
  if (bs) {
    bs->resnets.assign(2, {});
    bs->attentions.assign(1, {});
  }
  h = mid_.resnets[0].forward(ctx, h, temb, bs ? &bs->resnets[0] : nullptr);
  h = mid_.attentions[0].forward(ctx, h, ehs, bs ? &bs->attentions[0] : nullptr);
  return mid_.resnets[1].forward(ctx, h, temb, bs ? &bs->resnets[1] : nullptr);
}

Tensor UNet2DConditionModel::up_block_forward(Ctx& ctx, size_t i, Tensor h, const Tensor& temb,
                                              const Tensor& ehs, UNetBlock::Saved* bs,
                                              std::vector<Tensor>& skips) const {
  const OpsRange range(ctx.ops, "unet.up_blocks.", i);
  const UNetBlock& b = up_[i];
  const int64_t B = h.dim(0);
  if (bs) {
    bs->resnets.assign(b.resnets.size(), {});
    bs->attentions.assign(b.attentions.size(), {});
    bs->upsamplers.assign(b.upsamplers.size(), {});
    bs->skip_channels.clear();
  }
  for (size_t j = 0; j < b.resnets.size(); ++j) {
    DB_CHECK(!skips.empty(), "unet: skip bookkeeping out of step");
    const Tensor res = skips.back();  // [B, h, w, Cskip]
    skips.pop_back();
    if (bs) bs->skip_channels.push_back(res.dim(3));
    Tensor cat = ctx.alloc({B, h.dim(1), h.dim(2), h.dim(3) + res.dim(3)});  // cat([h, res], channels)
    ctx.ops.concat_channels_forward(h, res, cat);
    h = b.resnets[j].forward(ctx, cat, temb, bs ? &bs->resnets[j] : nullptr);
    if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs, bs ? &bs->attentions[j] : nullptr);
  }
  for (size_t j = 0; j < b.upsamplers.size(); ++j)
    h = b.upsamplers[j].forward(ctx, h, bs ? &bs->upsamplers[j] : nullptr);  // [B, 2h, 2w, C]
  return h;
}

}  // namespace db
