// UNet2DConditionModel training forward (the sequence of forward() with every layer's Saved kept)
// and backward. Skip connections: the down pass pushes skips s_0 .. s_K (conv_in output, then each
// resnet(+attention) and downsample output); the up pass pops them from the back. Backward collects
// each skip's gradient from the up pass first, then adds it where the down pass produced that skip.
#include <cstddef>

#include "dreambooth/core/error.h"
#include "dreambooth/models/unet.h"

namespace db {

// sample [B, h, w, Cin], timesteps [B], encoder_hidden_states [B, T, D] -> [B, h, w, Cout]
Tensor UNet2DConditionModel::forward(Ctx& ctx, const Tensor& sample, const Tensor& timesteps,
                                     const Tensor& encoder_hidden_states, Saved& s) const {
  DB_CHECK(sample.ndim() == 4 && sample.dim(3) == cfg_.in_channels, "unet: expected sample [B, h, w, ",
           cfg_.in_channels, "], got ", sample.desc());
  const int64_t B = sample.dim(0);
  DB_CHECK(timesteps.numel() == B && encoder_hidden_states.dim(0) == B, "unet: batch of ", B,
           " samples needs as many timesteps and encoder states, got ", timesteps.desc(), " and ",
           encoder_hidden_states.desc());
  const Tensor& ehs = encoder_hidden_states;
  Tensor x = sample;
  if (cfg_.center_input_sample) {  // 2 * sample - 1.0
    x = ctx.alloc(sample.shape());
    Tensor ones = ctx.alloc(sample.shape());
    ones.fill(1.f);
    ctx.ops.add_forward(sample, ones, x, 2.f, -1.f);
  }
  Tensor temb = time_embedding_.forward(ctx, timesteps, s.time_embedding);  // [B, 4*C0]
  Tensor h = conv_in_.forward(ctx, x, s.conv_in);                           // [B, h, w, C0]

  const bool ckpt = s.gradient_checkpointing;
  s.down.clear();
  s.up.clear();
  s.mid = {};
  s.down_in.clear();
  s.up_in.clear();
  s.up_skips.clear();
  s.mid_in = s.temb = s.ehs = Tensor();
  if (ckpt) {
    s.temb = temb;
    s.ehs = ehs;
  }

  std::vector<Tensor> skips{h};
  if (!ckpt) s.down.assign(down_.size(), {});
  for (size_t i = 0; i < down_.size(); ++i) {
    if (ckpt) {
      s.down_in.push_back(h);
      UNetBlock::Saved tmp;  // dropped: backward recomputes it
      h = down_block_forward(ctx, i, h, temb, ehs, tmp, skips);
    } else {
      h = down_block_forward(ctx, i, h, temb, ehs, s.down[i], skips);
    }
  }

  if (ckpt) {
    s.mid_in = h;
    UNetBlock::Saved tmp;
    h = mid_block_forward(ctx, h, temb, ehs, tmp);
  } else {
    h = mid_block_forward(ctx, h, temb, ehs, s.mid);
  }

  if (!ckpt) s.up.assign(up_.size(), {});
  for (size_t i = 0; i < up_.size(); ++i) {
    if (ckpt) {
      s.up_in.push_back(h);
      // the skips this block pops, in pop order (kept for the recomputation)
      const size_t n = up_[i].resnets.size();
      DB_CHECK(skips.size() >= n, "unet: skip bookkeeping out of step");
      s.up_skips.emplace_back(skips.end() - std::ptrdiff_t(n), skips.end());
      UNetBlock::Saved tmp;
      h = up_block_forward(ctx, i, h, temb, ehs, tmp, skips);
    } else {
      h = up_block_forward(ctx, i, h, temb, ehs, s.up[i], skips);
    }
  }
  DB_CHECK(skips.empty(), "unet: ", skips.size(), " skip connections left over");
  h = conv_norm_out_.forward(ctx, h, Activation::SiLU, s.conv_norm_out);
  return conv_out_.forward(ctx, h, s.conv_out);
}

Tensor UNet2DConditionModel::down_block_forward(Ctx& ctx, size_t i, Tensor h, const Tensor& temb,
                                                const Tensor& ehs, UNetBlock::Saved& bs,
                                                std::vector<Tensor>& skips) const {
  const UNetBlock& b = down_[i];
  bs.resnets.assign(b.resnets.size(), {});
  bs.attentions.assign(b.attentions.size(), {});
  bs.downsamplers.assign(b.downsamplers.size(), {});
  for (size_t j = 0; j < b.resnets.size(); ++j) {
    h = b.resnets[j].forward(ctx, h, temb, bs.resnets[j]);
    if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs, bs.attentions[j]);
    skips.push_back(h);
  }
  for (size_t j = 0; j < b.downsamplers.size(); ++j) {
    h = b.downsamplers[j].forward(ctx, h, bs.downsamplers[j]);  // [B, h/2, w/2, C]
    skips.push_back(h);
  }
  return h;
}

Tensor UNet2DConditionModel::mid_block_forward(Ctx& ctx, Tensor h, const Tensor& temb, const Tensor& ehs,
                                               UNetBlock::Saved& bs) const {
  bs.resnets.assign(2, {});
  bs.attentions.assign(1, {});
  h = mid_.resnets[0].forward(ctx, h, temb, bs.resnets[0]);
  h = mid_.attentions[0].forward(ctx, h, ehs, bs.attentions[0]);
  return mid_.resnets[1].forward(ctx, h, temb, bs.resnets[1]);
}

Tensor UNet2DConditionModel::up_block_forward(Ctx& ctx, size_t i, Tensor h, const Tensor& temb,
                                              const Tensor& ehs, UNetBlock::Saved& bs,
                                              std::vector<Tensor>& skips) const {
  const UNetBlock& b = up_[i];
  const int64_t B = h.dim(0);
  bs.resnets.assign(b.resnets.size(), {});
  bs.attentions.assign(b.attentions.size(), {});
  bs.upsamplers.assign(b.upsamplers.size(), {});
  bs.skip_channels.clear();
  for (size_t j = 0; j < b.resnets.size(); ++j) {
    DB_CHECK(!skips.empty(), "unet: skip bookkeeping out of step");
    const Tensor res = skips.back();  // [B, h, w, Cskip]
    skips.pop_back();
    bs.skip_channels.push_back(res.dim(3));
    Tensor cat = ctx.alloc({B, h.dim(1), h.dim(2), h.dim(3) + res.dim(3)});  // cat([h, res], channels)
    ctx.ops.concat_channels_forward(h, res, cat);
    h = b.resnets[j].forward(ctx, cat, temb, bs.resnets[j]);
    if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs, bs.attentions[j]);
  }
  for (size_t j = 0; j < b.upsamplers.size(); ++j)
    h = b.upsamplers[j].forward(ctx, h, bs.upsamplers[j]);  // [B, 2h, 2w, C]
  return h;
}

Tensor UNet2DConditionModel::up_block_backward(Ctx& ctx, size_t i, const UNetBlock::Saved& bs, Tensor d,
                                               UNet2DConditionModel* g, Tensor& dtemb, Tensor* d_ehs,
                                               std::vector<Tensor>& dskips) const {
  const UNetBlock& b = up_[i];
  UNetBlock* gb = g ? &g->up_[i] : nullptr;
  const int64_t B = d.dim(0);
  for (size_t j = b.upsamplers.size(); j-- > 0;)
    d = b.upsamplers[j].backward(ctx, bs.upsamplers[j], d, gb ? &gb->upsamplers[j] : nullptr);
  for (size_t j = b.resnets.size(); j-- > 0;) {
    if (!b.attentions.empty())
      d = b.attentions[j].backward(ctx, bs.attentions[j], d, gb ? &gb->attentions[j] : nullptr, d_ehs);
    Tensor dcat = b.resnets[j].backward(ctx, bs.resnets[j], d, gb ? &gb->resnets[j] : nullptr, &dtemb);
    const int64_t cs = bs.skip_channels[j], ch = dcat.dim(3) - cs;
    Tensor dh = ctx.alloc({B, dcat.dim(1), dcat.dim(2), ch});
    Tensor dskip = ctx.alloc({B, dcat.dim(1), dcat.dim(2), cs});
    ctx.ops.concat_channels_backward(dcat, &dh, &dskip);
    dskips.push_back(dskip);
    d = dh;
  }
  return d;
}

Tensor UNet2DConditionModel::mid_block_backward(Ctx& ctx, const UNetBlock::Saved& bs, Tensor d,
                                                UNet2DConditionModel* g, Tensor& dtemb, Tensor* d_ehs) const {
  for (size_t r = 2; r-- > 0;) {
    d = mid_.resnets[r].backward(ctx, bs.resnets[r], d, g ? &g->mid_.resnets[r] : nullptr, &dtemb);
    if (r == 1)
      d = mid_.attentions[0].backward(ctx, bs.attentions[0], d, g ? &g->mid_.attentions[0] : nullptr, d_ehs);
  }
  return d;
}

Tensor UNet2DConditionModel::down_block_backward(Ctx& ctx, size_t i, const UNetBlock::Saved& bs, Tensor d,
                                                 UNet2DConditionModel* g, Tensor& dtemb, Tensor* d_ehs,
                                                 const std::vector<Tensor>& dskips, size_t& k) const {
  auto add_skip = [&](Tensor& dh) {
    DB_CHECK(k > 0, "unet backward: skip bookkeeping out of step");
    ctx.ops.add_forward(dh, dskips[--k], dh);
  };
  const UNetBlock& b = down_[i];
  UNetBlock* gb = g ? &g->down_[i] : nullptr;
  for (size_t j = b.downsamplers.size(); j-- > 0;) {
    add_skip(d);
    d = b.downsamplers[j].backward(ctx, bs.downsamplers[j], d, gb ? &gb->downsamplers[j] : nullptr);
  }
  for (size_t j = b.resnets.size(); j-- > 0;) {
    add_skip(d);
    if (!b.attentions.empty())
      d = b.attentions[j].backward(ctx, bs.attentions[j], d, gb ? &gb->attentions[j] : nullptr, d_ehs);
    d = b.resnets[j].backward(ctx, bs.resnets[j], d, gb ? &gb->resnets[j] : nullptr, &dtemb);
  }
  return d;
}

// dout [B, h, w, Cout] -> parameter gradients (+= into grad), *d_encoder_hidden_states +=
void UNet2DConditionModel::backward(Ctx& ctx, const Saved& s, const Tensor& dout, UNet2DConditionModel* grad,
                                    Tensor* d_ehs) const {
  UNet2DConditionModel* g = grad;
  const bool ckpt = s.gradient_checkpointing;
  Tensor d = conv_out_.backward(ctx, s.conv_out, dout, g ? &g->conv_out_ : nullptr);
  d = conv_norm_out_.backward(ctx, s.conv_norm_out, d, g ? &g->conv_norm_out_ : nullptr);
  const int64_t B = dout.dim(0);
  Tensor dtemb = ctx.alloc({B, time_embedding_.linear_2.out_features()});  // [B, 4*C0], summed over resnets
  dtemb.fill(0.f);

  // up pass, reversed: the skips it consumed come out in down-pass order s_0, s_1, ...
  std::vector<Tensor> dskips;
  for (size_t i = up_.size(); i-- > 0;) {
    if (ckpt) {  // rebuild this block's activations from its inputs, backward, drop them
      UNetBlock::Saved bs;
      std::vector<Tensor> skips = s.up_skips[i];
      up_block_forward(ctx, i, s.up_in[i], s.temb, s.ehs, bs, skips);
      d = up_block_backward(ctx, i, bs, d, g, dtemb, d_ehs, dskips);
    } else {
      d = up_block_backward(ctx, i, s.up[i], d, g, dtemb, d_ehs, dskips);
    }
  }
  // dskips[k] is now the up pass's gradient of skip s_k (popped in reverse, processed in reverse)

  if (ckpt) {
    UNetBlock::Saved bs;
    mid_block_forward(ctx, s.mid_in, s.temb, s.ehs, bs);
    d = mid_block_backward(ctx, bs, d, g, dtemb, d_ehs);
  } else {
    d = mid_block_backward(ctx, s.mid, d, g, dtemb, d_ehs);
  }

  // down pass, reversed: before backpropagating through the layer that produced skip s_k, add its gradient
  size_t k = dskips.size();
  for (size_t i = down_.size(); i-- > 0;) {
    if (ckpt) {
      UNetBlock::Saved bs;
      std::vector<Tensor> skips;  // the recomputed skips are not needed (the kept ones are the same)
      down_block_forward(ctx, i, s.down_in[i], s.temb, s.ehs, bs, skips);
      d = down_block_backward(ctx, i, bs, d, g, dtemb, d_ehs, dskips, k);
    } else {
      d = down_block_backward(ctx, i, s.down[i], d, g, dtemb, d_ehs, dskips, k);
    }
  }
  DB_CHECK(k > 0, "unet backward: skip bookkeeping out of step");
  ctx.ops.add_forward(d, dskips[--k], d);  // s_0, the conv_in output
  DB_CHECK(k == 0, "unet backward: ", k, " skip gradients left over");
  conv_in_.backward(ctx, s.conv_in, d, g ? &g->conv_in_ : nullptr, /*need_dx=*/false);
  time_embedding_.backward(ctx, s.time_embedding, dtemb, g ? &g->time_embedding_ : nullptr);
}

}  // namespace db
