// PNG/JPEG encoding and atomic file writes.
#include <fcntl.h>
#include <png.h>
#include <sys/stat.h>
#include <turbojpeg.h>
#include <unistd.h>

#include <cerrno>
#include <csetjmp>
#include <cstdio>
#include <cstring>
#include <fstream>

#include "dreambooth/core/error.h"
#include "dreambooth/io/image.h"

namespace db {

std::vector<uint8_t> read_file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary | std::ios::ate);
  DB_CHECK(f, "cannot open ", path, ": ", std::strerror(errno));
  std::streamsize n = f.tellg();
  DB_CHECK(n >= 0, "cannot read ", path);
  std::vector<uint8_t> bytes(static_cast<size_t>(n));
  f.seekg(0);
  DB_CHECK(n == 0 || f.read(reinterpret_cast<char*>(bytes.data()), n), "cannot read ", path, ": short read");
  return bytes;
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  std::string tmp = path + ".tmp-" + std::to_string(::getpid());
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  DB_CHECK(fd >= 0, "cannot create ", tmp, ": ", std::strerror(errno));
  const char* p = static_cast<const char*>(data);
  size_t left = size;
  std::string err;
  while (left > 0 && err.empty()) {
    ssize_t k = ::write(fd, p, left);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0)
      err = str_cat("cannot write ", tmp, ": ", std::strerror(errno));
    else
      p += k, left -= size_t(k);
  }
  if (err.empty() && ::fsync(fd) != 0) err = str_cat("cannot fsync ", tmp, ": ", std::strerror(errno));
  if (::close(fd) != 0 && err.empty()) err = str_cat("cannot close ", tmp, ": ", std::strerror(errno));
  if (err.empty() && std::rename(tmp.c_str(), path.c_str()) != 0)
    err = str_cat("cannot rename ", tmp, " to ", path, ": ", std::strerror(errno));
  if (!err.empty()) {
    ::unlink(tmp.c_str());
    throw Error(err);
  }
}

namespace {

void png_write_error(png_structp png, png_const_charp msg) {
  *static_cast<std::string*>(png_get_error_ptr(png)) = msg;
  png_longjmp(png, 1);
}
void png_write_warning(png_structp, png_const_charp) {}
void png_write_data(png_structp png, png_bytep d, png_size_t n) {
  auto* out = static_cast<std::vector<uint8_t>*>(png_get_io_ptr(png));
  out->insert(out->end(), d, d + n);
}
void png_flush(png_structp) {}

}  // namespace

std::vector<uint8_t> encode_png(const Image& im, int level) {
  DB_CHECK(!im.empty() && im.pixels.size() == size_t(im.width) * im.height * 3, "encode PNG: bad image ",
           im.width, "x", im.height);
  std::vector<uint8_t> out;
  std::string err;
  png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &err, png_write_error, png_write_warning);
  DB_CHECK(png, "cannot create a PNG encoder");
  png_infop info = png_create_info_struct(png);
  std::vector<png_bytep> rows(size_t(im.height));
  for (int y = 0; y < im.height; ++y) rows[y] = const_cast<uint8_t*>(im.row(y));
  if (setjmp(png_jmpbuf(png))) {
    png_destroy_write_struct(&png, &info);
    throw Error("encode PNG: ", err);
  }
  png_set_write_fn(png, &out, png_write_data, png_flush);
  png_set_compression_level(png, level);
  png_set_IHDR(png, info, im.width, im.height, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
               PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  png_write_info(png, info);
  png_write_image(png, rows.data());
  png_write_end(png, info);
  png_destroy_write_struct(&png, &info);
  return out;
}

std::vector<uint8_t> encode_jpeg(const Image& im, int quality) {
  DB_CHECK(!im.empty() && im.pixels.size() == size_t(im.width) * im.height * 3, "encode JPEG: bad image ",
           im.width, "x", im.height);
  DB_CHECK(quality >= 1 && quality <= 100, "encode JPEG: quality must be 1..100, got ", quality);
  tjhandle tj = tjInitCompress();
  DB_CHECK(tj, "cannot create a JPEG encoder");
  unsigned char* buf = nullptr;
  unsigned long size = 0;
  int rc = tjCompress2(tj, im.pixels.data(), im.width, im.width * 3, im.height, TJPF_RGB, &buf, &size,
                       TJSAMP_420, quality, TJFLAG_ACCURATEDCT);
  std::string msg = rc != 0 ? tjGetErrorStr2(tj) : "";
  std::vector<uint8_t> out;
  if (rc == 0) out.assign(buf, buf + size);
  tjFree(buf);
  tjDestroy(tj);
  DB_CHECK(rc == 0, "encode JPEG: ", msg);
  return out;
}

void write_png(const std::string& path, const Image& im, int level) {
  ErrorContext ctx("write ", path);
  std::vector<uint8_t> bytes = encode_png(im, level);
  write_file_atomic(path, bytes.data(), bytes.size());
}

void write_jpeg(const std::string& path, const Image& im, int quality) {
  ErrorContext ctx("write ", path);
  std::vector<uint8_t> bytes = encode_jpeg(im, quality);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace db
