// JPEG (TurboJPEG 2 API) and PNG (libpng 1.6) decoding to PIL-identical RGB; EXIF orientation.
#include <png.h>
#include <turbojpeg.h>

#include <algorithm>
#include <csetjmp>
#include <cstring>
#include <memory>

#include "dreambooth/core/error.h"
#include "dreambooth/io/image.h"

namespace db {

ImageFormat sniff_image_format(const uint8_t* d, size_t n) {
  if (n >= 3 && d[0] == 0xFF && d[1] == 0xD8 && d[2] == 0xFF) return ImageFormat::Jpeg;
  static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (n >= 8 && std::memcmp(d, png_sig, 8) == 0) return ImageFormat::Png;
  return ImageFormat::Unknown;
}

const char* image_format_name(ImageFormat f) {
  switch (f) {
    case ImageFormat::Jpeg:
      return "JPEG";
    case ImageFormat::Png:
      return "PNG";
    default:
      return "unknown";
  }
}

// ---------------------------------------------------------------------------------------------
// EXIF

namespace {

struct TiffReader {
  const uint8_t* p;
  size_t n;
  bool big;
  bool ok(size_t off, size_t len) const { return off <= n && len <= n - off; }
  uint32_t u16(size_t off) const { return big ? (p[off] << 8) | p[off + 1] : p[off] | (p[off + 1] << 8); }
  uint32_t u32(size_t off) const {
    return big ? (uint32_t(p[off]) << 24) | (p[off + 1] << 16) | (p[off + 2] << 8) | p[off + 3]
               : p[off] | (p[off + 1] << 8) | (p[off + 2] << 16) | (uint32_t(p[off + 3]) << 24);
  }
};

}  // namespace

int exif_orientation(const uint8_t* p, size_t n) {
  if (n >= 6 && std::memcmp(p, "Exif\0\0", 6) == 0) p += 6, n -= 6;
  if (n < 8) return 1;
  TiffReader t{p, n, false};
  if (p[0] == 'M' && p[1] == 'M')
    t.big = true;
  else if (!(p[0] == 'I' && p[1] == 'I'))
    return 1;
  if (t.u16(2) != 42) return 1;
  size_t ifd = t.u32(4);
  if (!t.ok(ifd, 2)) return 1;
  uint32_t count = t.u16(ifd);
  for (uint32_t i = 0; i < count; ++i) {
    size_t e = ifd + 2 + size_t(i) * 12;
    if (!t.ok(e, 12)) return 1;
    if (t.u16(e) != 0x0112) continue;
    uint32_t type = t.u16(e + 2);
    uint32_t v = type == 3 ? t.u16(e + 8) : type == 4 ? t.u32(e + 8) : 1;
    return (v >= 1 && v <= 8) ? int(v) : 1;
  }
  return 1;
}

Image apply_exif_orientation(const Image& in, int o) {
  if (o < 2 || o > 8) return in;
  const int W = in.width, H = in.height;
  const bool swap = o >= 5;
  Image out(swap ? H : W, swap ? W : H);
  for (int y = 0; y < out.height; ++y) {
    uint8_t* dst = out.row(y);
    for (int x = 0; x < out.width; ++x) {
      int sx, sy;  // source pixel of out(x, y)
      switch (o) {
        case 2:
          sx = W - 1 - x, sy = y;
          break;  // FLIP_LEFT_RIGHT
        case 3:
          sx = W - 1 - x, sy = H - 1 - y;
          break;  // ROTATE_180
        case 4:
          sx = x, sy = H - 1 - y;
          break;  // FLIP_TOP_BOTTOM
        case 5:
          sx = y, sy = x;
          break;  // TRANSPOSE
        case 6:
          sx = y, sy = H - 1 - x;
          break;  // ROTATE_270 (90 clockwise)
        case 7:
          sx = W - 1 - y, sy = H - 1 - x;
          break;  // TRANSVERSE
        default:
          sx = W - 1 - y, sy = x;
          break;  // 8: ROTATE_90 (counter-clockwise)
      }
      std::memcpy(dst + size_t(x) * 3, in.row(sy) + size_t(sx) * 3, 3);
    }
  }
  return out;
}

namespace {

// The first APP1 "Exif\0\0" segment before the first scan (PIL keeps the first one too).
int jpeg_exif_orientation(const uint8_t* d, size_t n) {
  size_t i = 2;
  while (i + 4 <= n) {
    if (d[i] != 0xFF) return 1;
    uint8_t m = d[i + 1];
    if (m == 0xFF) {  // fill byte
      ++i;
      continue;
    }
    if (m == 0xD8 || m == 0x01 || (m >= 0xD0 && m <= 0xD7)) {
      i += 2;
      continue;
    }
    if (m == 0xDA || m == 0xD9) return 1;
    size_t len = (size_t(d[i + 2]) << 8) | d[i + 3];
    if (len < 2 || i + 2 + len > n) return 1;
    if (m == 0xE1 && len >= 8 && std::memcmp(d + i + 4, "Exif\0\0", 6) == 0)
      return exif_orientation(d + i + 4, len - 2);
    i += 2 + len;
  }
  return 1;
}

void check_pixels(int64_t w, int64_t h, const DecodeOptions& opt) {
  DB_CHECK(w > 0 && h > 0, "image has zero size (", w, "x", h, ")");
  DB_CHECK(w * h <= opt.max_pixels, "image too large: ", w, "x", h, " = ", w * h,
           " pixels exceeds the limit of ", opt.max_pixels, " (decompression-bomb guard)");
}

// ---------------------------------------------------------------------------------------------
// JPEG

struct TjHandle {
  tjhandle h;
  explicit TjHandle(tjhandle x) : h(x) {}
  ~TjHandle() {
    if (h) tjDestroy(h);
  }
};

// PIL's cmyk2rgb on Adobe-inverted CMYK: PIL reads CMYK JPEGs with rawmode "CMYK;I" (c = 255 - stored)
// and converts with r = clip(nk - c * nk / 255), nk = 255 - k, where a*b/255 is MULDIV255.
inline uint8_t cmyk_channel(uint8_t stored_c, uint8_t stored_k) {
  int c = 255 - stored_c, nk = stored_k;
  int tmp = c * nk + 128;
  int prod = ((tmp >> 8) + tmp) >> 8;
  return uint8_t(std::clamp(nk - prod, 0, 255));
}

Image decode_jpeg(const uint8_t* d, size_t n, const DecodeOptions& opt, int* orientation) {
  TjHandle tj(tjInitDecompress());
  DB_CHECK(tj.h, "cannot create a JPEG decoder: ", tjGetErrorStr2(nullptr));
  int w = 0, h = 0, subsamp = 0, cs = 0;
  if (tjDecompressHeader3(tj.h, d, (unsigned long)n, &w, &h, &subsamp, &cs) != 0)
    throw Error("corrupt JPEG header: ", tjGetErrorStr2(tj.h));
  DB_CHECK(w > 0 && h > 0, "corrupt JPEG header: no frame size");
  check_pixels(w, h, opt);
  *orientation = jpeg_exif_orientation(d, n);
  int pf = TJPF_RGB, ch = 3;
  if (cs == TJCS_GRAY) pf = TJPF_GRAY, ch = 1;
  if (cs == TJCS_CMYK || cs == TJCS_YCCK) pf = TJPF_CMYK, ch = 4;
  std::vector<uint8_t> buf(size_t(w) * size_t(h) * ch);
  // ISLOW IDCT and fancy upsampling: libjpeg's defaults, which Pillow uses.
  int flags = TJFLAG_ACCURATEDCT;
#ifdef TJFLAG_LIMITSCANS
  flags |= TJFLAG_LIMITSCANS;  // refuse progressive files with > 500 scans (CPU bomb)
#endif
  if (tjDecompress2(tj.h, d, (unsigned long)n, buf.data(), w, w * ch, h, pf, flags) != 0) {
    // Warnings still decode (missing data grey-filled). Pillow refuses truncated files ("image file is
    // truncated") but tolerates libjpeg's "extraneous bytes before marker"; we do the same.
    std::string msg = tjGetErrorStr2(tj.h);
    bool benign = tjGetErrorCode(tj.h) == TJERR_WARNING && msg.find("extraneous bytes") != std::string::npos;
    if (!benign)
      throw Error(tjGetErrorCode(tj.h) == TJERR_WARNING ? "truncated or corrupt JPEG: " : "corrupt JPEG: ",
                  msg);
  }
  if (ch == 3) {
    Image im;
    im.width = w, im.height = h, im.pixels = std::move(buf);
    return im;
  }
  Image im(w, h);
  uint8_t* o = im.pixels.data();
  const size_t px = size_t(w) * size_t(h);
  if (ch == 1) {
    for (size_t i = 0; i < px; ++i) o[3 * i] = o[3 * i + 1] = o[3 * i + 2] = buf[i];
  } else {
    for (size_t i = 0; i < px; ++i)
      for (int c = 0; c < 3; ++c) o[3 * i + c] = cmyk_channel(buf[4 * i + c], buf[4 * i + 3]);
  }
  return im;
}

// ---------------------------------------------------------------------------------------------
// PNG

struct PngReadState {
  const uint8_t* data = nullptr;
  size_t size = 0;
  size_t pos = 0;
  std::string error;
  bool image_done = false;  // errors after the pixels (in trailing chunks) are ignored, as in Pillow
};

void png_error_fn(png_structp png, png_const_charp msg) {
  auto* st = static_cast<PngReadState*>(png_get_error_ptr(png));
  st->error = msg;
  png_longjmp(png, 1);
}
void png_warning_fn(png_structp, png_const_charp) {}

void png_read_fn(png_structp png, png_bytep out, png_size_t len) {
  auto* st = static_cast<PngReadState*>(png_get_io_ptr(png));
  if (len > st->size - st->pos) png_error(png, "truncated PNG (unexpected end of data)");
  std::memcpy(out, st->data + st->pos, len);
  st->pos += len;
}

struct PngReader {
  png_structp png = nullptr;
  png_infop info = nullptr;
  ~PngReader() { png_destroy_read_struct(&png, info ? &info : nullptr, nullptr); }
};

Image decode_png(const uint8_t* d, size_t n, const DecodeOptions& opt, int* orientation) {
  PngReadState st;
  st.data = d, st.size = n;
  PngReader r;
  r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &st, png_error_fn, png_warning_fn);
  DB_CHECK(r.png, "cannot create a PNG decoder");
  r.info = png_create_info_struct(r.png);
  DB_CHECK(r.info, "cannot create a PNG decoder");
  png_set_read_fn(r.png, &st, png_read_fn);
  // Rows hold 8- or 16-bit samples after the transforms below: 1..4 channels.
  std::vector<uint8_t> raw;
  std::vector<png_bytep> rows;
  png_uint_32 w = 0, h = 0;
  int depth = 0, color = 0;
  volatile int channels = 0;
  *orientation = 1;
  volatile bool too_large = false;
  if (setjmp(png_jmpbuf(r.png))) {
    if (too_large) check_pixels(w, h, opt);
    if (!st.image_done) throw Error("corrupt PNG: ", st.error);
  } else {
    png_set_user_limits(r.png, 0x7fffffff, 0x7fffffff);
    png_read_info(r.png, r.info);
    int interlace = 0;
    png_get_IHDR(r.png, r.info, &w, &h, &depth, &color, &interlace, nullptr, nullptr);
    if (int64_t(w) * int64_t(h) > opt.max_pixels) {
      too_large = true;
      png_error(r.png, "too large");
    }
    if (color == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(r.png);  // tRNS becomes alpha: dropped
    if (color == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(r.png);
    png_set_interlace_handling(r.png);
    png_read_update_info(r.png, r.info);
    depth = png_get_bit_depth(r.png, r.info);
    channels = png_get_channels(r.png, r.info);
    size_t stride = png_get_rowbytes(r.png, r.info);
    raw.resize(stride * h);
    rows.resize(h);
    for (png_uint_32 y = 0; y < h; ++y) rows[y] = raw.data() + stride * y;
    png_read_image(r.png, rows.data());
    st.image_done = true;
#ifdef PNG_eXIf_SUPPORTED
    png_read_end(r.png, r.info);  // eXIf may follow IDAT; Pillow reads it there too
#endif
  }
#ifdef PNG_eXIf_SUPPORTED
  png_bytep exif = nullptr;
  png_uint_32 exif_len = 0;
  if (png_get_eXIf_1(r.png, r.info, &exif_len, &exif) != 0 && exif)
    *orientation = exif_orientation(exif, exif_len);
#endif
  Image im{int(w), int(h)};
  const bool wide = depth == 16;
  const bool gray16_clip = wide && color == PNG_COLOR_TYPE_GRAY;  // PIL: I;16 -> L clips at 255
  for (png_uint_32 y = 0; y < h; ++y) {
    const uint8_t* s = rows[y];
    uint8_t* o = im.row(int(y));
    for (png_uint_32 x = 0; x < w; ++x) {
      uint8_t v[4];
      for (int c = 0; c < channels; ++c) {
        const uint8_t* p = s + (size_t(x) * channels + c) * (wide ? 2 : 1);
        v[c] = !wide ? p[0] : gray16_clip ? uint8_t(std::min(255, (p[0] << 8) | p[1])) : p[0];
      }
      if (channels <= 2)
        o[3 * x] = o[3 * x + 1] = o[3 * x + 2] = v[0];
      else
        o[3 * x] = v[0], o[3 * x + 1] = v[1], o[3 * x + 2] = v[2];
    }
  }
  return im;
}

}  // namespace

ImageInfo probe_image(const uint8_t* d, size_t n, const std::string& name) {
  ErrorContext ctx("decode ", name);
  DB_CHECK(n > 0, "empty file (0 bytes)");
  ImageInfo info;
  info.format = sniff_image_format(d, n);
  if (info.format == ImageFormat::Jpeg) {
    TjHandle tj(tjInitDecompress());
    int subsamp = 0, cs = 0;
    if (tjDecompressHeader3(tj.h, d, (unsigned long)n, &info.width, &info.height, &subsamp, &cs) != 0)
      throw Error("corrupt JPEG header: ", tjGetErrorStr2(tj.h));
    info.orientation = jpeg_exif_orientation(d, n);
  } else if (info.format == ImageFormat::Png) {
    DB_CHECK(n >= 24 && std::memcmp(d + 12, "IHDR", 4) == 0, "corrupt PNG: no IHDR chunk");
    info.width = int((uint32_t(d[16]) << 24) | (d[17] << 16) | (d[18] << 8) | d[19]);
    info.height = int((uint32_t(d[20]) << 24) | (d[21] << 16) | (d[22] << 8) | d[23]);
  } else {
    throw Error("not a JPEG or PNG image (unrecognised leading bytes)");
  }
  return info;
}

Image decode_image(const uint8_t* d, size_t n, const std::string& name, const DecodeOptions& opt) {
  ErrorContext ctx("decode ", name);
  DB_CHECK(n > 0, "empty file (0 bytes)");
  int orientation = 1;
  Image im;
  switch (sniff_image_format(d, n)) {
    case ImageFormat::Jpeg:
      im = decode_jpeg(d, n, opt, &orientation);
      break;
    case ImageFormat::Png:
      im = decode_png(d, n, opt, &orientation);
      break;
    default:
      throw Error("not a JPEG or PNG image (unrecognised leading bytes)");
  }
  if (opt.apply_exif_orientation && orientation != 1) im = apply_exif_orientation(im, orientation);
  return im;
}

Image read_image(const std::string& path, const DecodeOptions& opt) {
  std::vector<uint8_t> bytes = read_file_bytes(path);
  return decode_image(bytes.data(), bytes.size(), path, opt);
}

}  // namespace db
