#pragma once
// Images: decode JPEG/PNG into 8-bit RGB exactly as PIL's Image.open + ImageOps.exif_transpose +
// convert("RGB") does (the reference dataset's path), and encode PNG/JPEG with atomic writes.
//
//   Image im = read_image("photo.jpg");          // [H, W, 3] uint8, EXIF orientation applied
//   write_png("out.png", im);                    // tmp + fsync + rename
//
// Colour rules (each checked against Pillow 13 by tests/reference/make_image_golden.py):
//   gray -> R=G=B; alpha (RGBA, LA, tRNS) is dropped, never composited; palette -> palette colour;
//   16-bit RGB/RGBA/LA -> high byte; 16-bit gray (PIL mode I;16) -> min(v, 255), PIL's clipping;
//   1/2/4-bit gray -> scaled to 0..255; CMYK/YCCK JPEG -> Adobe-inverted CMYK then PIL's cmyk2rgb.
// The format is sniffed from magic bytes, never from the extension.
// Damage policy, as Pillow's default (LOAD_TRUNCATED_IMAGES = False): a truncated or corrupt JPEG is an
// error even where libjpeg only warns (TJERR_WARNING, e.g. "Premature end of JPEG file"); the one
// warning tolerated is "extraneous bytes before marker", which Pillow also decodes through. A PNG
// whose pixel data is damaged is an error; damage after the pixels (trailing chunks) is ignored.
// Decoding is thread-safe; callers parallelise over images.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace db {

struct Image {
  int width = 0;
  int height = 0;
  std::vector<uint8_t> pixels;  // [height, width, 3], row-major RGB

  Image() = default;
  Image(int w, int h) : width(w), height(h), pixels(size_t(w) * size_t(h) * 3) {}
  uint8_t* row(int y) { return pixels.data() + size_t(y) * size_t(width) * 3; }
  const uint8_t* row(int y) const { return pixels.data() + size_t(y) * size_t(width) * 3; }
  bool empty() const { return width == 0 || height == 0; }
};

enum class ImageFormat { Unknown, Jpeg, Png };
ImageFormat sniff_image_format(const uint8_t* data, size_t size);
const char* image_format_name(ImageFormat f);

struct DecodeOptions {
  // Checked from the header before any pixel is decoded. Pillow's decompression-bomb limit
  // (Image.MAX_IMAGE_PIXELS); Pillow only warns between 1x and 2x of it, we refuse.
  int64_t max_pixels = 89'478'485;
  bool apply_exif_orientation = true;
};

// What the header says, without decoding pixels (size before EXIF rotation).
struct ImageInfo {
  ImageFormat format = ImageFormat::Unknown;
  int width = 0;
  int height = 0;
  int orientation = 1;  // EXIF 1..8 (JPEG only; PNG eXIf is read by decode_image)
};

// `name` is used in error messages only ("decode photo.jpg: ..."). Every failure (empty, truncated,
// corrupt, unknown format, too large) throws db::Error naming it.
Image decode_image(const uint8_t* data, size_t size, const std::string& name, const DecodeOptions& opt = {});
Image read_image(const std::string& path, const DecodeOptions& opt = {});
ImageInfo probe_image(const uint8_t* data, size_t size, const std::string& name);

// EXIF orientation from a TIFF block ("II*\0" / "MM\0*" ...), optionally prefixed by "Exif\0\0".
// Returns 1 when absent or unreadable (a broken EXIF block never fails a decode, as in PIL).
int exif_orientation(const uint8_t* tiff, size_t size);
// PIL's Image.transpose for orientation o (2 FLIP_LEFT_RIGHT, 3 ROTATE_180, 4 FLIP_TOP_BOTTOM,
// 5 TRANSPOSE, 6 ROTATE_270, 7 TRANSVERSE, 8 ROTATE_90); 1 or unknown values return a copy.
Image apply_exif_orientation(const Image& im, int orientation);

std::vector<uint8_t> encode_png(const Image& im, int compression_level = 6);
std::vector<uint8_t> encode_jpeg(const Image& im, int quality = 95);  // 4:2:0, as PIL's default
void write_png(const std::string& path, const Image& im, int compression_level = 6);
void write_jpeg(const std::string& path, const Image& im, int quality = 95);

// Writes bytes to PATH.tmp-<pid>, fsyncs, renames over PATH; removes the tmp file on any error.
void write_file_atomic(const std::string& path, const void* data, size_t size);
std::vector<uint8_t> read_file_bytes(const std::string& path);

}  // namespace db
