// SHA-256 and HDF5 shards (schema v1): round trip, validation, atomic writes.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <functional>

#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/io/image.h"
#include "dreambooth/io/image_transform.h"
#include "dreambooth/io/shard.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;
using db::test::TempDir;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

struct Samples {
  int R, h, w, n;
  std::vector<uint8_t> pixels;
  std::vector<float> mean, logvar;
  std::vector<int32_t> ids;
  Samples(int R_, int h_, int w_, int n_) : R(R_), h(h_), w(w_), n(n_) {
    pixels.resize(size_t(n) * R * R * 3);
    for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = uint8_t(i * 7 + i / 13);
    mean.resize(size_t(n) * h * w * 4);
    logvar.resize(mean.size());
    for (size_t i = 0; i < mean.size(); ++i) mean[i] = float(i) * 0.25f - 3.f, logvar[i] = -float(i) / 8.f;
    ids.resize(size_t(n) * 77);
    for (size_t i = 0; i < ids.size(); ++i) ids[i] = int32_t(i % 77 == 0 ? 49406 : (i * 31) % 49408);
  }
  ShardSample sample(int i, bool latents) const {
    ShardSample s;
    s.pixels = pixels.data() + size_t(i) * R * R * 3;
    if (latents) {
      s.latent_mean = mean.data() + size_t(i) * h * w * 4;
      s.latent_logvar = logvar.data() + size_t(i) * h * w * 4;
    }
    s.prompt_ids = ids.data() + size_t(i) * 77;
    s.source_path = "photos/dög " + std::to_string(i) + ".jpg";  // UTF-8 on purpose
    s.sha256 = sha256_hex(s.pixels, size_t(R) * R * 3);
    return s;
  }
};

ShardMeta test_meta(int R, bool latents) {
  ShardMeta m;
  m.resolution = R;
  m.crop = "center";
  m.prompt = "photo of unqtkn dog";
  m.tokenizer_fingerprint = sha256_hex("vocab+merges", 12);
  m.created_by = "dreambooth test";
  if (latents) {
    m.latent_height = R / 8, m.latent_width = R / 8;
    m.vae_fingerprint = sha256_hex("vae", 3);
  }
  return m;
}

void write_shard(const std::string& path, const Samples& s, bool latents) {
  ShardWriter w(path, test_meta(s.R, latents));
  for (int i = 0; i < s.n; ++i) w.append(s.sample(i, latents));
  EXPECT_EQ(w.size(), s.n);
  w.commit();
}

}  // namespace

TEST(Shard, Sha256NistVectors) {
  EXPECT_EQ(sha256_hex("", 0), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  // An empty file's bytes: a null pointer with size 0 (memcpy(dst, nullptr, 0) is undefined behaviour,
  // reported by UBSan in the SANITIZE=1 build; issue 16 item 10).
  Sha256 empty;
  empty.update(nullptr, 0);
  empty.update("ab", 2);
  empty.update(nullptr, 0);
  empty.update("c", 1);
  EXPECT_EQ(empty.hex_digest(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  EXPECT_EQ(sha256_hex("abc", 3), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  const std::string two_blocks = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
  EXPECT_EQ(sha256_hex(two_blocks.data(), two_blocks.size()),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
  const std::string four =
      "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrsmnopqr"
      "stnopqrstu";
  EXPECT_EQ(sha256_hex(four.data(), four.size()),
            "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
  // One million 'a', fed in uneven pieces to exercise the buffering.
  Sha256 h;
  std::string a(999, 'a');
  size_t left = 1000000;
  for (size_t k = 1; left > 0; k = k % 997 + 1) {
    size_t n = std::min(left, k);
    h.update(a.data(), n);
    left -= n;
  }
  EXPECT_EQ(h.hex_digest(), "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
  for (size_t n : {55, 56, 63, 64, 65, 119, 120}) {  // padding edges: one digest, two ways
    std::string s(n, 'x');
    Sha256 piecewise;
    piecewise.update(s.data(), 1);
    piecewise.update(s.data() + 1, n - 1);
    EXPECT_EQ(piecewise.hex_digest(), sha256_hex(s.data(), n)) << n;
  }
}

TEST(Shard, RoundTripWithLatents) {
  TempDir dir("shard");
  Samples s(16, 2, 2, 3);
  const std::string path = dir / "rank0.h5";
  write_shard(path, s, true);
  if (const char* keep = std::getenv("DREAMBOOTH_KEEP_SHARD"))
    fs::copy_file(path, keep, fs::copy_options::overwrite_existing);
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();

  ShardReader r(path, 16);
  EXPECT_EQ(r.size(), 3);
  EXPECT_EQ(r.meta().resolution, 16);
  EXPECT_EQ(r.meta().crop, "center");
  EXPECT_EQ(r.meta().prompt, "photo of unqtkn dog");
  EXPECT_EQ(r.meta().created_by, "dreambooth test");
  EXPECT_EQ(r.meta().tokenizer_fingerprint, test_meta(16, true).tokenizer_fingerprint);
  EXPECT_EQ(r.meta().vae_fingerprint, test_meta(16, true).vae_fingerprint);
  EXPECT_TRUE(r.meta().has_latents());
  EXPECT_EQ(r.meta().latent_height, 2);
  EXPECT_EQ(r.pixels_per_sample(), 16 * 16 * 3);
  EXPECT_EQ(r.latent_elems_per_sample(), 16);
  for (int i = 2; i >= 0; --i) {
    std::vector<uint8_t> px(size_t(r.pixels_per_sample()));
    r.read_pixels(i, px.data());
    EXPECT_TRUE(std::equal(px.begin(), px.end(), s.pixels.begin() + i * px.size())) << i;
    std::vector<float> mean(16), logvar(16);
    r.read_latents(i, mean.data(), logvar.data());
    EXPECT_TRUE(std::equal(mean.begin(), mean.end(), s.mean.begin() + i * 16)) << i;
    EXPECT_TRUE(std::equal(logvar.begin(), logvar.end(), s.logvar.begin() + i * 16)) << i;
    std::vector<int32_t> ids(77);
    r.read_prompt_ids(i, ids.data());
    EXPECT_TRUE(std::equal(ids.begin(), ids.end(), s.ids.begin() + i * 77)) << i;
    EXPECT_EQ(r.source_path(i), s.sample(i, true).source_path);
    EXPECT_EQ(r.sha256(i), s.sample(i, true).sha256);
  }
  std::vector<uint8_t> px(size_t(r.pixels_per_sample()));
  std::string msg = error_of([&] { r.read_pixels(3, px.data()); });
  EXPECT_NE(msg.find("out of range"), std::string::npos) << msg;
  EXPECT_NE(msg.find(path), std::string::npos) << msg;

  int version = 0;
  int64_t n = 0;
  ShardMeta m = read_shard_meta(path, &version, &n);
  EXPECT_EQ(version, 1);
  EXPECT_EQ(n, 3);
  EXPECT_EQ(m.prompt, "photo of unqtkn dog");
}

TEST(Shard, RoundTripWithoutLatentsAndEmpty) {
  TempDir dir("shard");
  Samples s(8, 1, 1, 2);
  write_shard(dir / "a.h5", s, false);
  ShardReader r(dir / "a.h5");
  EXPECT_FALSE(r.meta().has_latents());
  EXPECT_EQ(r.meta().vae_fingerprint, "");
  float mean[4], logvar[4];
  EXPECT_NE(error_of([&] { r.read_latents(0, mean, logvar); }).find("no latents"), std::string::npos);
  Samples none(8, 1, 1, 0);
  write_shard(dir / "empty.h5", none, false);
  EXPECT_EQ(ShardReader(dir / "empty.h5").size(), 0);
}

TEST(Shard, RejectsOtherSchemaVersionResolutionAndNonShards) {
  TempDir dir("shard");
  Samples s(8, 1, 1, 1);
  const std::string path = dir / "v2.h5";
  write_shard(path, s, false);
  EXPECT_NE(error_of([&] { ShardReader r(path, 16); }).find("resolution is 8 but 16"), std::string::npos);
  {
    hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(f, 0);
    hid_t a = H5Aopen(f, "schema_version", H5P_DEFAULT);
    int32_t two = 2;
    H5Awrite(a, H5T_NATIVE_INT32, &two);
    H5Aclose(a);
    H5Fclose(f);
  }
  std::string msg = error_of([&] { ShardReader r(path); });
  EXPECT_NE(msg.find(path), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 2"), std::string::npos) << msg;
  EXPECT_NE(msg.find("version 1"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  std::printf("  %s\n", msg.c_str());

  const std::string text = dir / "notes.h5";
  FILE* f = std::fopen(text.c_str(), "w");
  std::fputs("not hdf5\n", f);
  std::fclose(f);
  msg = error_of([&] { ShardReader r(text); });
  EXPECT_NE(msg.find(text), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  std::printf("  %s\n", msg.c_str());
  msg = error_of([&] { ShardReader r(dir / "missing.h5"); });
  EXPECT_NE(msg.find("missing.h5"), std::string::npos) << msg;
  std::printf("  %s\n", msg.c_str());

  // An HDF5 file that is not a shard.
  const std::string plain = dir / "plain.h5";
  hid_t pf = H5Fcreate(plain.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  H5Fclose(pf);
  msg = error_of([&] { ShardReader r(plain); });
  EXPECT_NE(msg.find("not a dreambooth shard"), std::string::npos) << msg;
}

TEST(Shard, AtomicWriteLeavesNothingOnError) {
  TempDir dir("shard");
  Samples s(8, 1, 1, 2);
  // Folder that does not exist: the constructor fails, nothing is created.
  std::string msg = error_of([&] { ShardWriter w(dir / "no/such/dir/x.h5", test_meta(8, false)); });
  EXPECT_NE(msg.find("x.h5"), std::string::npos) << msg;
  EXPECT_NE(msg.find("does not exist"), std::string::npos) << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  std::printf("  %s\n", msg.c_str());
  // Abandoned writer (an error mid-way): the tmp file goes away, the target never appears.
  {
    ShardWriter w(dir / "partial.h5", test_meta(8, false));
    w.append(s.sample(0, false));
    EXPECT_TRUE(fs::exists(w.tmp_path()));
  }
  EXPECT_TRUE(fs::is_empty(dir.path));
  // Bad sample: error names the shard, and nothing is left behind either.
  {
    ShardWriter w(dir / "bad.h5", test_meta(8, true));
    ShardSample bad = s.sample(0, false);
    msg = error_of([&] { w.append(bad); });
    EXPECT_NE(msg.find("bad.h5"), std::string::npos) << msg;
  }
  EXPECT_TRUE(fs::is_empty(dir.path));
  // Rename over an existing directory fails at commit: tmp removed, directory untouched.
  fs::create_directories(dir / "taken.h5/inside");
  {
    ShardWriter w(dir / "taken.h5", test_meta(8, false));
    w.append(s.sample(0, false));
    msg = error_of([&] { w.commit(); });
    EXPECT_NE(msg.find("rename"), std::string::npos) << msg;
  }
  for (const auto& e : fs::directory_iterator(dir.path))
    EXPECT_EQ(e.path().string().find(".tmp-"), std::string::npos) << e.path();
  // A shard overwritten in place stays readable as the old one until commit.
  write_shard(dir / "ok.h5", s, false);
  {
    Samples t(8, 1, 1, 1);
    ShardWriter w(dir / "ok.h5", test_meta(8, false));
    w.append(t.sample(0, false));
    EXPECT_EQ(ShardReader(dir / "ok.h5").size(), 2);
    w.commit();
  }
  EXPECT_EQ(ShardReader(dir / "ok.h5").size(), 1);
}

TEST(Shard, WriterValidatesMeta) {
  TempDir dir("shard");
  ShardMeta m = test_meta(8, false);
  m.crop = "middle";
  EXPECT_NE(error_of([&] { ShardWriter w(dir / "x.h5", m); }).find("crop"), std::string::npos);
  m = test_meta(8, true);
  m.vae_fingerprint = "";
  EXPECT_NE(error_of([&] { ShardWriter w(dir / "x.h5", m); }).find("vae_fingerprint"), std::string::npos);
  EXPECT_TRUE(fs::is_empty(dir.path));
}

TEST(Shard, Sha256OfFiles) {
  TempDir dir("shard");
  auto put = [&](const std::string& name, const std::string& text) {
    FILE* f = std::fopen((dir / name).c_str(), "wb");
    std::fwrite(text.data(), 1, text.size(), f);
    std::fclose(f);
    return dir / name;
  };
  std::string a = put("vocab.json", "ab"), b = put("merges.txt", "c");
  EXPECT_EQ(sha256_file_hex(a), sha256_hex("ab", 2));
  EXPECT_EQ(sha256_files_hex({a, b}), sha256_hex("abc", 3));
  std::string msg = error_of([&] { sha256_file_hex(dir / "nope.txt"); });
  EXPECT_NE(msg.find("nope.txt"), std::string::npos) << msg;
}

TEST(Shard, PreparedImagesRoundTrip) {
  // The prepare path in miniature: decode, resize+crop, hash the file, write, read back.
  TempDir dir("shard");
  const std::vector<std::string> files = {"rgb_37x91.png", "cmyk_53x41.jpg", "exif6_le_60x34.jpg"};
  ShardMeta meta = test_meta(32, false);
  std::vector<std::vector<uint8_t>> want;
  {
    ShardWriter w(dir / "prep.h5", meta);
    std::vector<int32_t> ids(77, 49407);
    for (const std::string& f : files) {
      std::vector<uint8_t> bytes = read_file_bytes("tests/fixtures/images/" + f);
      Image im = resize_and_crop(decode_image(bytes.data(), bytes.size(), f), 32, CropMode::Center);
      ShardSample s;
      s.pixels = im.pixels.data();
      s.prompt_ids = ids.data();
      s.source_path = f;
      s.sha256 = sha256_hex(bytes.data(), bytes.size());
      w.append(s);
      want.push_back(im.pixels);
    }
    w.commit();
  }
  if (const char* keep = std::getenv("DREAMBOOTH_KEEP_PREPARED_SHARD"))
    fs::copy_file(dir / "prep.h5", keep, fs::copy_options::overwrite_existing);
  ShardReader r(dir / "prep.h5", 32);
  ASSERT_EQ(r.size(), 3);
  for (int i = 0; i < 3; ++i) {
    std::vector<uint8_t> px(size_t(r.pixels_per_sample()));
    r.read_pixels(i, px.data());
    EXPECT_EQ(px, want[i]);
    EXPECT_EQ(r.source_path(i), files[i]);
    EXPECT_EQ(r.sha256(i), sha256_file_hex("tests/fixtures/images/" + files[i]));
  }
}
