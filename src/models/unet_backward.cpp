// UNet2DConditionModel backward (the forward is in unet.cpp). Skip connections: the down pass pushes skips
// s_0 .. s_K (conv_in output, then each resnet(+attention) and downsample output); the up pass pops them from
// the back. Backward collects each skip's gradient from the up pass first, then adds it where the down pass
// produced that skip.
#include <cstddef>
#include <string>

#include "dreambooth/core/error.h"
#include "dreambooth/models/unet.h"

namespace db {

Tensor UNet2DConditionModel::up_block_backward(Ctx& ctx, size_t i, const UNetBlock::Saved& bs, Tensor d,
                                               UNet2DConditionModel* g, Tensor& dtemb, Tensor* d_ehs,
                                               std::vector<Tensor>& dskips) const {
  const OpsRange range(ctx.ops, "unet.up_blocks.backward.", i);
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
  const OpsRange range(ctx.ops, "unet.mid_block.backward");
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
  const OpsRange range(ctx.ops, "unet.down_blocks.backward.", i);
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
  ctx.notify_grads_ready("conv_out.");
  d = conv_norm_out_.backward(ctx, s.conv_norm_out, d, g ? &g->conv_norm_out_ : nullptr);
  ctx.notify_grads_ready("conv_norm_out.");
  const int64_t B = dout.dim(0);
  Tensor dtemb = ctx.alloc({B, time_embedding_.linear_2.out_features()});  // [B, 4*C0], summed over resnets
  ctx.ops.fill(dtemb, 0.f);

  // up pass, reversed: the skips it consumed come out in down-pass order s_0, s_1, ...
  std::vector<Tensor> dskips;
  for (size_t i = up_.size(); i-- > 0;) {
    if (ckpt) {  // rebuild this block's activations from its inputs, backward, drop them
      UNetBlock::Saved bs;
      std::vector<Tensor> skips = s.up_skips[i];
      up_block_forward(ctx, i, s.up_in[i], s.temb, s.ehs, &bs, skips);
      d = up_block_backward(ctx, i, bs, d, g, dtemb, d_ehs, dskips);
    } else {
      d = up_block_backward(ctx, i, s.up[i], d, g, dtemb, d_ehs, dskips);
    }
    ctx.notify_grads_ready("up_blocks." + std::to_string(i) + ".");
  }
  // dskips[k] is now the up pass's gradient of skip s_k (popped in reverse, processed in reverse)

  if (ckpt) {
    UNetBlock::Saved bs;
    mid_block_forward(ctx, s.mid_in, s.temb, s.ehs, &bs);
    d = mid_block_backward(ctx, bs, d, g, dtemb, d_ehs);
  } else {
    d = mid_block_backward(ctx, s.mid, d, g, dtemb, d_ehs);
  }
  ctx.notify_grads_ready("mid_block.");

  // down pass, reversed: before backpropagating through the layer that produced skip s_k, add its gradient
  size_t k = dskips.size();
  for (size_t i = down_.size(); i-- > 0;) {
    if (ckpt) {
      UNetBlock::Saved bs;
      std::vector<Tensor> skips;  // the recomputed skips are not needed (the kept ones are the same)
      down_block_forward(ctx, i, s.down_in[i], s.temb, s.ehs, &bs, skips);
      d = down_block_backward(ctx, i, bs, d, g, dtemb, d_ehs, dskips, k);
    } else {
      d = down_block_backward(ctx, i, s.down[i], d, g, dtemb, d_ehs, dskips, k);
    }
    ctx.notify_grads_ready("down_blocks." + std::to_string(i) + ".");
  }
  DB_CHECK(k > 0, "unet backward: skip bookkeeping out of step");
  ctx.ops.add_forward(d, dskips[--k], d);  // s_0, the conv_in output
  DB_CHECK(k == 0, "unet backward: ", k, " skip gradients left over");
  conv_in_.backward(ctx, s.conv_in, d, g ? &g->conv_in_ : nullptr, /*need_dx=*/false);
  ctx.notify_grads_ready("conv_in.");
  time_embedding_.backward(ctx, s.time_embedding, dtemb, g ? &g->time_embedding_ : nullptr);
  ctx.notify_grads_ready("time_embedding.");
}

}  // namespace db
