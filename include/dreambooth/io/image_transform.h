#pragma once
// The DreamBooth dataset transform (diffusers train_dreambooth.py), bit-exact with torchvision on a
// PIL image:
//   Resize(size, BILINEAR)   short side -> size, long side -> int(size * long / short); PIL's
//                            ImagingResample (antialiased: filter support scales with the downscale
//                            factor; two separable passes with uint8 rounding between them, in
//                            Pillow 13's order; 22-bit fixed-point weights)
//   CenterCrop(size)         top = round_half_even((h - size) / 2), likewise left
//   RandomCrop(size)         offsets from Philox (RngPurpose::Crop, keyed by seed and image index);
//                            not torch's generator, so random crops differ from torchvision's
//   ToTensor + Normalize([0.5], [0.5])  float (v / 255 - 0.5) / 0.5 in fp32, as torch computes it
// Images smaller than `size` are upscaled by the same resize (the caller decides whether to warn).
#include <cstdint>
#include <utility>

#include "dreambooth/core/tensor.h"
#include "dreambooth/io/image.h"

namespace db {

enum class ResampleFilter { Bilinear, Bicubic, Lanczos };  // PIL's BILINEAR, BICUBIC, LANCZOS
enum class CropMode { Center, Random };

// PIL's Image.resize(size, filter) for an RGB image (no reducing_gap).
Image resize(const Image& im, int out_width, int out_height,
             ResampleFilter filter = ResampleFilter::Bilinear);

// torchvision's _compute_resized_output_size for an int size: {width, height}.
std::pair<int, int> resized_size_short_side(int width, int height, int size);

struct CropBox {
  int left = 0, top = 0, width = 0, height = 0;
};
CropBox center_crop_box(int width, int height, int crop_width, int crop_height);
CropBox random_crop_box(int width, int height, int crop_width, int crop_height, uint64_t seed,
                        uint32_t index);
Image crop(const Image& im, const CropBox& box);

// Resize (short side -> resolution) then crop to resolution x resolution.
Image resize_and_crop(const Image& im, int resolution, CropMode mode, uint64_t seed = 0, uint32_t index = 0,
                      ResampleFilter filter = ResampleFilter::Bilinear);

// (v / 255 - 0.5) / 0.5 for each byte: out has im.pixels.size() floats, NHWC order.
void normalize_to_unit_range(const Image& im, float* out);
Tensor image_to_tensor(const Image& im);  // f32 [H, W, 3] in [-1, 1]

}  // namespace db
