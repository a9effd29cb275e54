// UNet2DConditionModel training forward (the sequence of forward() with every layer's Saved kept)
// and backward. Skip connections: the down pass pushes skips s_0 .. s_K (conv_in output, then each
// resnet(+attention) and downsample output); the up pass pops them from the back. Backward collects
// each skip's gradient from the up pass first, then adds it where the down pass produced that skip.
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

  std::vector<Tensor> skips{h};
  s.down.assign(down_.size(), {});
  for (size_t i = 0; i < down_.size(); ++i) {
    const UNetBlock& b = down_[i];
    UNetBlock::Saved& bs = s.down[i];
    bs.resnets.resize(b.resnets.size());
    bs.attentions.resize(b.attentions.size());
    bs.downsamplers.resize(b.downsamplers.size());
    for (size_t j = 0; j < b.resnets.size(); ++j) {
      h = b.resnets[j].forward(ctx, h, temb, bs.resnets[j]);
      if (!b.attentions.empty()) h = b.attentions[j].forward(ctx, h, ehs, bs.attentions[j]);
      skips.push_back(h);
    }
    for (size_t j = 0; j < b.downsamplers.size(); ++j) {
      h = b.downsamplers[j].forward(ctx, h, bs.downsamplers[j]);  // [B, h/2, w/2, C]
      skips.push_back(h);
    }
  }

  s.mid.resnets.resize(2);
  s.mid.attentions.resize(1);
  h = mid_.resnets[0].forward(ctx, h, temb, s.mid.resnets[0]);
  h = mid_.attentions[0].forward(ctx, h, ehs, s.mid.attentions[0]);
  h = mid_.resnets[1].forward(ctx, h, temb, s.mid.resnets[1]);

  s.up.assign(up_.size(), {});
  for (size_t i = 0; i < up_.size(); ++i) {
    const UNetBlock& b = up_[i];
    UNetBlock::Saved& bs = s.up[i];
    bs.resnets.resize(b.resnets.size());
    bs.attentions.resize(b.attentions.size());
    bs.upsamplers.resize(b.upsamplers.size());
    for (size_t j = 0; j < b.resnets.size(); ++j) {
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
  }
  DB_CHECK(skips.empty(), "unet: ", skips.size(), " skip connections left over");
  h = conv_norm_out_.forward(ctx, h, Activation::SiLU, s.conv_norm_out);
  return conv_out_.forward(ctx, h, s.conv_out);
}

// dout [B, h, w, Cout] -> parameter gradients (+= into grad), *d_encoder_hidden_states +=
void UNet2DConditionModel::backward(Ctx& ctx, const Saved& s, const Tensor& dout, UNet2DConditionModel* grad,
                                    Tensor* d_ehs) const {
  UNet2DConditionModel* g = grad;
  Tensor d = conv_out_.backward(ctx, s.conv_out, dout, g ? &g->conv_out_ : nullptr);
  d = conv_norm_out_.backward(ctx, s.conv_norm_out, d, g ? &g->conv_norm_out_ : nullptr);
  const int64_t B = dout.dim(0);
  Tensor dtemb = ctx.alloc({B, time_embedding_.linear_2.out_features()});  // [B, 4*C0], summed over resnets
  dtemb.fill(0.f);

  // up pass, reversed: the skips it consumed come out in down-pass order s_0, s_1, ...
  std::vector<Tensor> dskips;
  for (size_t i = up_.size(); i-- > 0;) {
    const UNetBlock& b = up_[i];
    const UNetBlock::Saved& bs = s.up[i];
    UNetBlock* gb = g ? &g->up_[i] : nullptr;
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
  }
  // dskips[k] is now the up pass's gradient of skip s_k (popped in reverse, processed in reverse)

  for (size_t r = 2; r-- > 0;) {
    d = mid_.resnets[r].backward(ctx, s.mid.resnets[r], d, g ? &g->mid_.resnets[r] : nullptr, &dtemb);
    if (r == 1)
      d = mid_.attentions[0].backward(ctx, s.mid.attentions[0], d, g ? &g->mid_.attentions[0] : nullptr,
                                      d_ehs);
  }

  // down pass, reversed: before backpropagating through the layer that produced skip s_k, add its gradient
  size_t k = dskips.size();
  auto add_skip = [&](Tensor& dh) {
    DB_CHECK(k > 0, "unet backward: skip bookkeeping out of step");
    ctx.ops.add_forward(dh, dskips[--k], dh);
  };
  for (size_t i = down_.size(); i-- > 0;) {
    const UNetBlock& b = down_[i];
    const UNetBlock::Saved& bs = s.down[i];
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
  }
  add_skip(d);  // s_0, the conv_in output
  DB_CHECK(k == 0, "unet backward: ", k, " skip gradients left over");
  conv_in_.backward(ctx, s.conv_in, d, g ? &g->conv_in_ : nullptr, /*need_dx=*/false);
  time_embedding_.backward(ctx, s.time_embedding, dtemb, g ? &g->time_embedding_ : nullptr);
}

}  // namespace db
