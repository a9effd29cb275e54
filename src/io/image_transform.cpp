// PIL's ImagingResample (Pillow 13 src/libImaging/Resample.c) for 8-bit RGB, and torchvision's
// Resize/CenterCrop/ToTensor/Normalize arithmetic.
#include "dreambooth/io/image_transform.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "dreambooth/core/error.h"
#include "dreambooth/core/philox.h"

namespace db {

namespace {

constexpr int kPrecisionBits = 32 - 8 - 2;

double bilinear_filter(double x) {
  x = std::fabs(x);
  return x < 1.0 ? 1.0 - x : 0.0;
}

double bicubic_filter(double x) {
  constexpr double a = -0.5;
  x = std::fabs(x);
  if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1;
  if (x < 2.0) return (((x - 5) * x + 8) * x - 4) * a;
  return 0.0;
}

double sinc_filter(double x) {
  if (x == 0.0) return 1.0;
  x = x * M_PI;
  return std::sin(x) / x;
}

double lanczos_filter(double x) {
  if (-3.0 <= x && x < 3.0) return sinc_filter(x) * sinc_filter(x / 3);
  return 0.0;
}

struct Filter {
  double (*fn)(double);
  double support;
};

Filter filter_of(ResampleFilter f) {
  switch (f) {
    case ResampleFilter::Bicubic:
      return {bicubic_filter, 2.0};
    case ResampleFilter::Lanczos:
      return {lanczos_filter, 3.0};
    default:
      return {bilinear_filter, 1.0};
  }
}

// Pillow's precompute_coeffs + normalize_coeffs_8bpc: for each output index, the first input index,
// the tap count, and ksize fixed-point weights.
struct Coeffs {
  int ksize = 0;
  std::vector<int> bounds;  // [out, 2]: xmin, count
  std::vector<int32_t> k;   // [out, ksize]
};

Coeffs precompute_coeffs(int in_size, double in0, double in1, int out_size, const Filter& f) {
  Coeffs c;
  double scale = (in1 - in0) / out_size;
  double filterscale = scale < 1.0 ? 1.0 : scale;
  double support = f.support * filterscale;
  c.ksize = int(std::ceil(support)) * 2 + 1;
  c.bounds.resize(size_t(out_size) * 2);
  c.k.assign(size_t(out_size) * c.ksize, 0);
  std::vector<double> w(size_t(c.ksize));
  for (int xx = 0; xx < out_size; ++xx) {
    double center = in0 + (xx + 0.5) * scale;
    double ss = 1.0 / filterscale;
    int xmin = int(center - support + 0.5);  // C truncation toward zero, as Pillow
    if (xmin < 0) xmin = 0;
    int xmax = int(center + support + 0.5);
    if (xmax > in_size) xmax = in_size;
    xmax -= xmin;
    double ww = 0.0;
    for (int x = 0; x < xmax; ++x) {
      w[x] = f.fn((x + xmin - center + 0.5) * ss);
      ww += w[x];
    }
    int32_t* k = &c.k[size_t(xx) * c.ksize];
    for (int x = 0; x < xmax; ++x) {
      double v = ww != 0.0 ? w[x] / ww : w[x];
      k[x] = v < 0 ? int32_t(-0.5 + v * (1 << kPrecisionBits)) : int32_t(0.5 + v * (1 << kPrecisionBits));
    }
    c.bounds[2 * xx] = xmin;
    c.bounds[2 * xx + 1] = xmax;
  }
  return c;
}

inline uint8_t clip8(int32_t in) {
  if (in >= (1 << kPrecisionBits << 8)) return 255;
  if (in <= 0) return 0;
  return uint8_t(in >> kPrecisionBits);
}

// The vertical kernel: dst line j = sum_t k[j][t] * src line (bounds[j] + t), over lines of `n` bytes.
// The inner loop runs over contiguous bytes and vectorises; integer sums do not depend on the order,
// so this is bit-identical to Pillow's per-pixel loops.
void resample_lines(const uint8_t* src, size_t src_stride, uint8_t* dst, size_t dst_stride, int out_lines,
                    size_t n, const Coeffs& c) {
  std::vector<int32_t> acc(n);
  for (int j = 0; j < out_lines; ++j) {
    const int first = c.bounds[2 * j], count = c.bounds[2 * j + 1];
    const int32_t* k = &c.k[size_t(j) * c.ksize];
    std::fill(acc.begin(), acc.end(), 1 << (kPrecisionBits - 1));
    for (int t = 0; t < count; ++t) {
      const uint8_t* s = src + size_t(first + t) * src_stride;
      const int32_t kt = k[t];
      int32_t* a = acc.data();
#pragma omp simd
      for (size_t i = 0; i < n; ++i) a[i] += s[i] * kt;
    }
    uint8_t* d = dst + size_t(j) * dst_stride;
    for (size_t i = 0; i < n; ++i) d[i] = clip8(acc[i]);
  }
}

// Rows [offset, offset + out.height) of `in` resampled horizontally into `out`.
void resample_horizontal(Image& out, const Image& in, int offset, const Coeffs& c) {
  for (int yy = 0; yy < out.height; ++yy) {
    const uint8_t* src = in.row(yy + offset);
    uint8_t* dst = out.row(yy);
    for (int xx = 0; xx < out.width; ++xx) {
      const int xmin = c.bounds[2 * xx], xmax = c.bounds[2 * xx + 1];
      const int32_t* k = &c.k[size_t(xx) * c.ksize];
      int32_t s0 = 1 << (kPrecisionBits - 1), s1 = s0, s2 = s0;
      const uint8_t* p = src + size_t(xmin) * 3;
      for (int x = 0; x < xmax; ++x) {
        s0 += p[3 * x] * k[x];
        s1 += p[3 * x + 1] * k[x];
        s2 += p[3 * x + 2] * k[x];
      }
      dst[3 * xx] = clip8(s0), dst[3 * xx + 1] = clip8(s1), dst[3 * xx + 2] = clip8(s2);
    }
  }
}

void resample_vertical(Image& out, const Image& in, const Coeffs& c) {
  const size_t n = size_t(out.width) * 3;
  resample_lines(in.pixels.data(), n, out.pixels.data(), n, out.height, n, c);
}

}  // namespace

Image resize(const Image& im, int out_w, int out_h, ResampleFilter filter) {
  DB_CHECK(!im.empty(), "resize: empty image");
  DB_CHECK(out_w > 0 && out_h > 0, "resize: bad target size ", out_w, "x", out_h);
  if (out_w == im.width && out_h == im.height) return im;
  Filter f = filter_of(filter);
  Coeffs ch = precompute_coeffs(im.width, 0.0, im.width, out_w, f);
  Coeffs cv = precompute_coeffs(im.height, 0.0, im.height, out_h, f);
  const bool need_h = out_w != im.width, need_v = out_h != im.height;
  // Pillow 13: when the height shrinks by more than twice as many pixels as the width, the vertical
  // pass runs first. The order changes the uint8 rounding of the intermediate, so we follow it.
  const bool horizontal_first = !(im.height - out_h > 0 && im.height - out_h > (im.width - out_w) * 2);
  if (horizontal_first) {
    // Only the source rows the vertical pass reads go through the horizontal pass.
    const int ybox_first = cv.bounds[0];
    const int ybox_last = cv.bounds[2 * out_h - 2] + cv.bounds[2 * out_h - 1];
    if (!need_h) {
      Image out(im.width, out_h);
      resample_vertical(out, im, cv);
      return out;
    }
    for (int i = 0; i < out_h; ++i) cv.bounds[2 * i] -= ybox_first;
    Image tmp(out_w, ybox_last - ybox_first);
    resample_horizontal(tmp, im, ybox_first, ch);
    if (!need_v) return tmp;
    Image out(out_w, out_h);
    resample_vertical(out, tmp, cv);
    return out;
  }
  Image tmp(im.width, out_h);
  resample_vertical(tmp, im, cv);
  if (!need_h) return tmp;
  Image out(out_w, out_h);
  resample_horizontal(out, tmp, 0, ch);
  return out;
}

std::pair<int, int> resized_size_short_side(int w, int h, int size) {
  DB_CHECK(w > 0 && h > 0 && size > 0, "resize: bad sizes ", w, "x", h, " -> ", size);
  const int short_side = std::min(w, h), long_side = std::max(w, h);
  // Python int(size * long / short): true division in double, then truncation.
  const int new_long = int(double(size) * double(long_side) / double(short_side));
  return w <= h ? std::pair<int, int>{size, new_long} : std::pair<int, int>{new_long, size};
}

CropBox center_crop_box(int w, int h, int cw, int ch) {
  DB_CHECK(cw <= w && ch <= h, "crop ", cw, "x", ch, " does not fit in ", w, "x", h);
  // Python round() rounds half to even; nearbyint does too in the default rounding mode.
  return {int(std::nearbyint((w - cw) / 2.0)), int(std::nearbyint((h - ch) / 2.0)), cw, ch};
}

CropBox random_crop_box(int w, int h, int cw, int ch, uint64_t seed, uint32_t index) {
  DB_CHECK(cw <= w && ch <= h, "crop ", cw, "x", ch, " does not fit in ", w, "x", h);
  PhiloxStream rng(seed, RngPurpose::Crop, 0, index);
  int top = int(rng.below(0, uint32_t(h - ch + 1)));
  int left = int(rng.below(1, uint32_t(w - cw + 1)));
  return {left, top, cw, ch};
}

Image crop(const Image& im, const CropBox& b) {
  DB_CHECK(b.left >= 0 && b.top >= 0 && b.width > 0 && b.height > 0 && b.left + b.width <= im.width &&
               b.top + b.height <= im.height,
           "crop box out of range");
  Image out(b.width, b.height);
  for (int y = 0; y < b.height; ++y)
    std::memcpy(out.row(y), im.row(b.top + y) + size_t(b.left) * 3, size_t(b.width) * 3);
  return out;
}

Image resize_and_crop(const Image& im, int resolution, CropMode mode, uint64_t seed, uint32_t index,
                      ResampleFilter filter) {
  auto [w, h] = resized_size_short_side(im.width, im.height, resolution);
  Image r = resize(im, w, h, filter);
  CropBox box = mode == CropMode::Center
                    ? center_crop_box(r.width, r.height, resolution, resolution)
                    : random_crop_box(r.width, r.height, resolution, resolution, seed, index);
  return crop(r, box);
}

void normalize_to_unit_range(const Image& im, float* out) {
  float lut[256];
  for (int v = 0; v < 256; ++v) lut[v] = (float(v) / 255.0f - 0.5f) / 0.5f;
  const size_t n = im.pixels.size();
  for (size_t i = 0; i < n; ++i) out[i] = lut[im.pixels[i]];
}

Tensor image_to_tensor(const Image& im) {
  Tensor t = Tensor::empty({im.height, im.width, 3});
  normalize_to_unit_range(im, t.f32());
  return t;
}

}  // namespace db
