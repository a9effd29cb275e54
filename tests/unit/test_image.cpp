// Image decoding and transforms against Pillow's results (tests/reference/make_image_golden.py).
// docs/ARCHITECTURE.md claims bit-identity with Pillow 13 + torchvision, and that is what is asserted:
// max |difference| = 0 for every decode (JPEG and PNG), every resize/crop and the real photos. Measured
// so: 0 on the 25 fixtures (13 JPEGs, odd formats and EXIF cases; 100 resize/crop cases) and on the 5 dog
// photos of ../shared; an outside check on 48 images found 0/255 too. A bound of one level on the MEAN
// difference, as these tests once had, lets a +1 shift of every pixel through.
#include <gtest/gtest.h>
#include <zlib.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <set>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/image_transform.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;

namespace {

const std::string kFixtures = "tests/fixtures/images/";

nlohmann::json golden_index() {
  return db::test::golden_json("images/index.json");
}

// A golden array: zlib over per-channel byte deltas (see make_image_golden.py).
std::vector<uint8_t> load_golden(const std::string& name, size_t n) {
  std::vector<uint8_t> z = read_file_bytes(db::test::golden_path("images/" + name));
  std::vector<uint8_t> out(n);
  uLongf len = n;
  EXPECT_EQ(uncompress(out.data(), &len, z.data(), z.size()), Z_OK) << name;
  EXPECT_EQ(len, n) << name;
  for (size_t i = 3; i < n; ++i) out[i] = uint8_t(out[i] + out[i - 3]);
  return out;
}

struct Diff {
  double mean = 0;
  int max = 0;
};
Diff diff(const uint8_t* a, const uint8_t* b, size_t n) {
  Diff d;
  double sum = 0;
  for (size_t i = 0; i < n; ++i) {
    int e = std::abs(int(a[i]) - int(b[i]));
    sum += e;
    d.max = std::max(d.max, e);
  }
  d.mean = n ? sum / double(n) : 0;
  return d;
}

}  // namespace

TEST(Image, SniffsFormatFromMagicBytes) {
  const uint8_t jpg[] = {0xFF, 0xD8, 0xFF, 0xE0};
  const uint8_t png[] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  const uint8_t txt[] = {'h', 'e', 'l', 'l', 'o'};
  EXPECT_EQ(sniff_image_format(jpg, 4), ImageFormat::Jpeg);
  EXPECT_EQ(sniff_image_format(png, 8), ImageFormat::Png);
  EXPECT_EQ(sniff_image_format(txt, 5), ImageFormat::Unknown);
  EXPECT_EQ(sniff_image_format(png, 7), ImageFormat::Unknown);
}

TEST(Image, DecodesEveryFixtureLikePillow) {
  nlohmann::json idx = golden_index();
  ASSERT_GT(idx["fixtures"].size(), 20u);
  int worst_max = 0, jpegs = 0;
  for (const auto& e : idx["fixtures"]) {
    const std::string file = e["file"];
    SCOPED_TRACE(file);
    Image im = read_image(kFixtures + file);
    ASSERT_EQ(im.width, e["width"].get<int>());
    ASSERT_EQ(im.height, e["height"].get<int>());
    std::vector<uint8_t> ref = load_golden(e["decoded"], im.pixels.size());
    Diff d = diff(im.pixels.data(), ref.data(), ref.size());
    EXPECT_EQ(d.max, 0) << e["kind"] << " decode differs from Pillow's (mean " << d.mean << ")";
    worst_max = std::max(worst_max, d.max);
    jpegs += e["kind"] != "png";
    std::printf("  decode %-26s %4dx%-4d mean|diff| %.4f max %d\n", file.c_str(), im.width, im.height, d.mean,
                d.max);
  }
  EXPECT_GT(jpegs, 10);  // JPEGs are checked, not only PNGs
  std::printf("  decode vs Pillow: worst max %d levels\n", worst_max);
}

TEST(Transform, ResizeAndCenterCropMatchPillow) {
  nlohmann::json idx = golden_index();
  double worst_mean = 0;
  int worst_max = 0;
  for (const auto& e : idx["fixtures"]) {
    const std::string file = e["file"];
    // Start from Pillow's own decode so only the transform is compared.
    Image src(e["width"].get<int>(), e["height"].get<int>());
    src.pixels = load_golden(e["decoded"], src.pixels.size());
    for (const auto& t : e["transforms"]) {
      const int res = t["resolution"];
      const std::string fname = t["filter"];
      SCOPED_TRACE(file + " " + fname + std::to_string(res));
      ResampleFilter f = fname == "bicubic"   ? ResampleFilter::Bicubic
                         : fname == "lanczos" ? ResampleFilter::Lanczos
                                              : ResampleFilter::Bilinear;
      auto [rw, rh] = resized_size_short_side(src.width, src.height, res);
      EXPECT_EQ(rw, t["resized_width"].get<int>());
      EXPECT_EQ(rh, t["resized_height"].get<int>());
      Image out = resize_and_crop(src, res, CropMode::Center, 0, 0, f);
      ASSERT_EQ(out.width, res);
      ASSERT_EQ(out.height, res);
      std::vector<uint8_t> ref = load_golden(t["data"], out.pixels.size());
      Diff d = diff(out.pixels.data(), ref.data(), ref.size());
      EXPECT_EQ(d.max, 0) << "mean " << d.mean;
      if (d.max)
        std::printf("  %s %s%d: mean %.5f max %d\n", file.c_str(), fname.c_str(), res, d.mean, d.max);
      worst_mean = std::max(worst_mean, d.mean);
      worst_max = std::max(worst_max, d.max);
    }
  }
  std::printf("  resize+crop vs Pillow (from Pillow's decode): worst mean %.5f/255, worst max %d levels\n",
              worst_mean, worst_max);
}

TEST(Transform, DecodeResizeCropMatchPillowEndToEnd) {
  nlohmann::json idx = golden_index();
  double worst_mean = 0;
  int worst_max = 0, checked = 0;
  for (const auto& e : idx["fixtures"]) {
    const std::string file = e["file"];
    Image src = read_image(kFixtures + file);
    for (const auto& t : e["transforms"]) {
      if (t["filter"] != "bilinear") continue;
      Image out = resize_and_crop(src, t["resolution"], CropMode::Center);
      std::vector<uint8_t> ref = load_golden(t["data"], out.pixels.size());
      Diff d = diff(out.pixels.data(), ref.data(), ref.size());
      EXPECT_EQ(d.max, 0) << file << " at " << t["resolution"] << ": mean " << d.mean;
      worst_mean = std::max(worst_mean, d.mean);
      worst_max = std::max(worst_max, d.max);
      ++checked;
    }
  }
  EXPECT_GT(checked, 20);
  std::printf("  decode+resize+crop vs Pillow: %d cases, worst mean %.5f/255, worst max %d levels\n", checked,
              worst_mean, worst_max);
}

TEST(Transform, PhotosMatchPillow) {
  const std::string dir = db::test::shared_data_dir();
  if (!fs::is_directory(dir + "/dog")) GTEST_SKIP() << db::test::needs_shared_data(dir + "/dog");
  nlohmann::json idx = golden_index();
  ASSERT_FALSE(idx["photos"].empty());
  for (const auto& e : idx["photos"]) {
    const std::string file = e["file"];
    SCOPED_TRACE(file);
    Image im = read_image(dir + "/" + file);
    ASSERT_EQ(im.width, e["width"].get<int>());
    ASSERT_EQ(im.height, e["height"].get<int>());
    const int s = e["stride"];
    auto subsample = [s](const Image& a) {
      std::vector<uint8_t> v;
      for (int y = 0; y < a.height; y += s)
        for (int x = 0; x < a.width; x += s) v.insert(v.end(), a.row(y) + 3 * x, a.row(y) + 3 * x + 3);
      return v;
    };
    std::vector<uint8_t> dec = subsample(im);
    Diff dd = diff(dec.data(), load_golden(e["decoded_sub"], dec.size()).data(), dec.size());
    Image r512 = resize_and_crop(im, 512, CropMode::Center);
    std::vector<uint8_t> s512 = subsample(r512);
    Diff d512 = diff(s512.data(), load_golden(e["r512_sub"], s512.size()).data(), s512.size());
    Image r64 = resize_and_crop(im, 64, CropMode::Center);
    Diff d64 = diff(r64.pixels.data(), load_golden(e["r64"], r64.pixels.size()).data(), r64.pixels.size());
    double mean512 = 0;
    for (uint8_t v : r512.pixels) mean512 += v;
    mean512 /= double(r512.pixels.size());
    EXPECT_EQ(dd.max, 0) << "decode, mean " << dd.mean;
    EXPECT_EQ(d512.max, 0) << "512 crop, mean " << d512.mean;
    EXPECT_EQ(d64.max, 0) << "64 crop, mean " << d64.mean;
    EXPECT_NEAR(mean512, e["r512_mean"].get<double>(), 0.05);
    std::printf("  %s %dx%d  decode mean %.4f max %d | 512 mean %.4f max %d | 64 mean %.4f max %d\n",
                file.c_str(), im.width, im.height, dd.mean, dd.max, d512.mean, d512.max, d64.mean, d64.max);
  }
}

TEST(Transform, ResizedSizeTruncatesLikeTorchvision) {
  EXPECT_EQ(resized_size_short_side(37, 91, 32), (std::pair<int, int>{32, 78}));  // 78.70 -> 78
  EXPECT_EQ(resized_size_short_side(1000, 17, 64), (std::pair<int, int>{3764, 64}));
  EXPECT_EQ(resized_size_short_side(513, 512, 512), (std::pair<int, int>{513, 512}));
  EXPECT_EQ(resized_size_short_side(300, 300, 64), (std::pair<int, int>{64, 64}));
}

TEST(Transform, CenterCropRoundsHalfToEven) {
  EXPECT_EQ(center_crop_box(513, 512, 512, 512).left, 0);  // round(0.5) = 0
  EXPECT_EQ(center_crop_box(515, 512, 512, 512).left, 2);  // round(1.5) = 2
  EXPECT_EQ(center_crop_box(517, 512, 512, 512).left, 2);  // round(2.5) = 2
  EXPECT_EQ(center_crop_box(512, 519, 512, 512).top, 4);   // round(3.5) = 4
}

TEST(Transform, RandomCropIsSeededAndInRange) {
  std::set<std::pair<int, int>> seen;
  for (uint32_t i = 0; i < 50; ++i) {
    CropBox a = random_crop_box(700, 512, 512, 512, 42, i);
    CropBox b = random_crop_box(700, 512, 512, 512, 42, i);
    EXPECT_EQ(a.left, b.left);
    EXPECT_EQ(a.top, 0);
    EXPECT_GE(a.left, 0);
    EXPECT_LE(a.left, 188);
    seen.insert({a.left, a.top});
  }
  EXPECT_GT(seen.size(), 20u);
  EXPECT_NE(
      random_crop_box(700, 900, 512, 512, 1, 0).left + 1000 * random_crop_box(700, 900, 512, 512, 1, 0).top,
      random_crop_box(700, 900, 512, 512, 2, 0).left + 1000 * random_crop_box(700, 900, 512, 512, 2, 0).top);
}

TEST(Transform, NormalizeMatchesTorchArithmetic) {
  Image im(3, 1);
  im.pixels = {0, 128, 255, 1, 127, 254, 64, 191, 200};
  Tensor t = image_to_tensor(im);
  EXPECT_EQ(t.shape(), (Shape{1, 3, 3}));
  EXPECT_EQ(t.f32()[0], -1.0f);
  EXPECT_EQ(t.f32()[2], 1.0f);
  EXPECT_EQ(t.f32()[1], (128.0f / 255.0f - 0.5f) / 0.5f);
}

TEST(Transform, UpscalesSmallImages) {
  Image im = read_image(kFixtures + "gray1_29x13.png");
  Image out = resize_and_crop(im, 64, CropMode::Center);
  EXPECT_EQ(out.width, 64);
  EXPECT_EQ(out.height, 64);
}

// ---------------------------------------------------------------------------------------------

namespace {
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(Image, BadInputsThrowErrorsNamingTheFile) {
  const db::test::TempDir tmp("image_bad");
  const std::string dir = tmp.str();
  auto write = [&](const std::string& name, const std::vector<uint8_t>& b) {
    std::string p = dir + "/" + name;
    FILE* f = std::fopen(p.c_str(), "wb");
    if (!b.empty()) std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
    return p;
  };
  std::vector<uint8_t> jpg = read_file_bytes(kFixtures + "progressive_161x120.jpg");
  std::vector<uint8_t> base = read_file_bytes(kFixtures + "rgb_1000x17.jpg");
  std::vector<uint8_t> png = read_file_bytes(kFixtures + "rgb_37x91.png");
  struct Case {
    std::string name;
    std::vector<uint8_t> bytes;
    std::string expect;
  };
  std::vector<Case> cases = {
      {"zero.jpg", {}, "empty file"},
      {"text.png", {'h', 'e', 'l', 'l', 'o', '\n'}, "not a JPEG or PNG"},
      {"trunc_prog.jpg", std::vector<uint8_t>(jpg.begin(), jpg.begin() + jpg.size() / 2), "JPEG"},
      {"trunc_base.jpg", std::vector<uint8_t>(base.begin(), base.begin() + base.size() / 2), "JPEG"},
      {"header_only.jpg", std::vector<uint8_t>(base.begin(), base.begin() + 40), "JPEG"},
      {"trunc.png", std::vector<uint8_t>(png.begin(), png.begin() + png.size() / 2), "PNG"},
      {"sig_only.png", std::vector<uint8_t>(png.begin(), png.begin() + 8), "PNG"},
  };
  std::vector<uint8_t> bad_crc = png;
  bad_crc[bad_crc.size() / 2] ^= 0x5A;  // inside IDAT
  cases.push_back({"corrupt.png", bad_crc, "PNG"});
  std::vector<uint8_t> garbage = base;
  for (size_t i = 700; i < garbage.size() - 2; i += 7) garbage[i] = uint8_t(i * 131);
  cases.push_back({"garbage.jpg", garbage, "JPEG"});
  for (const Case& c : cases) {
    std::string path = write(c.name, c.bytes);
    std::string msg = error_of([&] { read_image(path); });
    EXPECT_NE(msg.find(path), std::string::npos) << c.name << ": " << msg;
    EXPECT_NE(msg.find(c.expect), std::string::npos) << c.name << ": " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
    std::printf("  %-16s -> %s\n", c.name.c_str(), msg.c_str());
  }
  std::string missing = error_of([&] { read_image(dir + "/nope.jpg"); });
  EXPECT_NE(missing.find("nope.jpg"), std::string::npos);
}

TEST(Image, RefusesImagesOverThePixelLimitBeforeDecoding) {
  DecodeOptions opt;
  opt.max_pixels = 1000;
  for (const char* f : {"rgb_1000x17.jpg", "rgba_300x200.png"}) {
    std::string msg = error_of([&] { read_image(kFixtures + f, opt); });
    EXPECT_NE(msg.find("too large"), std::string::npos) << msg;
    EXPECT_NE(msg.find(f), std::string::npos) << msg;
  }
  opt.max_pixels = 17000;
  EXPECT_NO_THROW(read_image(kFixtures + "rgb_1000x17.jpg", opt));
  // A forged PNG header claiming 100000 x 100000 fails from the header alone.
  std::vector<uint8_t> png = read_file_bytes(kFixtures + "rgb_37x91.png");
  png[16] = 0, png[17] = 1, png[18] = 0x86, png[19] = 0xA0;
  png[20] = 0, png[21] = 1, png[22] = 0x86, png[23] = 0xA0;
  std::string msg = error_of([&] { decode_image(png.data(), png.size(), "forged.png"); });
  EXPECT_NE(msg.find("forged.png"), std::string::npos) << msg;
}

TEST(Image, ExifOrientationParsesBothByteOrders) {
  EXPECT_EQ(probe_image(read_file_bytes(kFixtures + "exif6_le_60x34.jpg").data(),
                        read_file_bytes(kFixtures + "exif6_le_60x34.jpg").size(), "x")
                .orientation,
            6);
  std::vector<uint8_t> be = read_file_bytes(kFixtures + "exif8_be_60x34.jpg");
  EXPECT_EQ(probe_image(be.data(), be.size(), "x").orientation, 8);
  const uint8_t junk[] = {'M', 'M', 0, 42, 0xFF, 0xFF, 0xFF, 0xFF};
  EXPECT_EQ(exif_orientation(junk, sizeof junk), 1);
  Image im = read_image(kFixtures + "exif6_le_60x34.jpg");
  EXPECT_EQ(im.width, 34);
  EXPECT_EQ(im.height, 60);
  DecodeOptions raw;
  raw.apply_exif_orientation = false;
  EXPECT_EQ(read_image(kFixtures + "exif6_le_60x34.jpg", raw).width, 60);
}

TEST(Image, PngAndJpegEncodeRoundTrip) {
  const db::test::TempDir tmp("image_encode");
  const std::string dir = tmp.str();
  Image im = read_image(kFixtures + "rgb_37x91.png");
  write_png(dir + "/a.png", im);
  Image back = read_image(dir + "/a.png");
  EXPECT_EQ(back.pixels, im.pixels);
  write_jpeg(dir + "/a.jpg", im, 95);
  Image j = read_image(dir + "/a.jpg");
  ASSERT_EQ(j.width, im.width);
  double q95 = diff(j.pixels.data(), im.pixels.data(), im.pixels.size()).mean;
  write_jpeg(dir + "/b.jpg", im, 100);
  Image j100 = read_image(dir + "/b.jpg");
  double q100 = diff(j100.pixels.data(), im.pixels.data(), im.pixels.size()).mean;
  EXPECT_LT(q95, 10.0);  // noisy 37x91 fixture, 4:2:0 chroma
  EXPECT_LT(q100, q95);
  for (const auto& p : fs::directory_iterator(dir))
    EXPECT_EQ(p.path().string().find(".tmp-"), std::string::npos) << p.path();
  std::string msg = error_of([&] { write_png(dir + "/no/such/dir/x.png", im); });
  EXPECT_NE(msg.find("x.png"), std::string::npos) << msg;
  EXPECT_FALSE(fs::exists(dir + "/no/such/dir"));
}

TEST(Image, ToleratesExtraneousBytesLikePillow) {
  // libjpeg warns "Corrupt JPEG data: 8 extraneous bytes before marker 0xd9"; Pillow decodes anyway.
  std::vector<uint8_t> b = read_file_bytes(kFixtures + "rgb444_96x64.jpg");
  Image clean = decode_image(b.data(), b.size(), "clean.jpg");
  ASSERT_EQ(b[b.size() - 2], 0xFF);
  b.insert(b.end() - 2, {'j', 'u', 'n', 'k', 'j', 'u', 'n', 'k'});
  Image junk = decode_image(b.data(), b.size(), "junk.jpg");
  EXPECT_EQ(junk.pixels, clean.pixels);
}

TEST(Image, RandomCorruptionsFailCleanly) {
  // Truncations and byte flips of every fixture: each decode either succeeds or throws db::Error naming
  // the input; never crashes (run under ASan to mean it).
  nlohmann::json idx = golden_index();
  uint64_t state = 0x9E3779B97F4A7C15ull;
  auto next = [&] {
    state ^= state << 13, state ^= state >> 7, state ^= state << 17;
    return state;
  };
  int failures = 0, successes = 0;
  for (const auto& e : idx["fixtures"]) {
    const std::vector<uint8_t> orig = read_file_bytes(kFixtures + e["file"].get<std::string>());
    for (int trial = 0; trial < 12; ++trial) {
      std::vector<uint8_t> b = orig;
      if (trial % 3 == 0) {
        b.resize(next() % b.size());
      } else {
        for (int k = 0; k < 1 + trial; ++k) b[next() % b.size()] ^= uint8_t(1 + next() % 255);
      }
      try {
        Image im = decode_image(b.data(), b.size(), "fuzz.bin");
        EXPECT_EQ(im.pixels.size(), size_t(im.width) * im.height * 3);
        ++successes;
      } catch (const Error& err) {
        EXPECT_NE(std::string(err.what()).find("fuzz.bin"), std::string::npos) << err.what();
        ++failures;
      }
    }
  }
  std::printf("  %d corrupt variants rejected, %d still decodable\n", failures, successes);
}
