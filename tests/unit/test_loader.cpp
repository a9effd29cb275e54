// Training data loader: shard sets (file/glob/folder, validation), pairing, epoch shuffles, rank
// slices, resume from a cursor, latents, prefetch timing.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <set>

#include "dreambooth/core/error.h"
#include "dreambooth/core/sha256.h"
#include "dreambooth/io/shard.h"
#include "dreambooth/io/shard_set.h"
#include "dreambooth/pipelines/data_loader.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;
using db::test::TempDir;

namespace {

std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const std::exception& e) {
    return e.what();
  }
  return "";
}

struct ShardSpec {
  int R = 4;
  bool latents = false;
  std::string tokenizer = "tok-a";
  std::string vae = "vae-a";
  int32_t prompt_token = 1000;  // ids[1]: tells instance from class
};

// Sample `id` has pixels all equal to id (mod 256) in channel 0, and ids[2] = id; latent mean = id.
// Its source path is NAME_iii.jpg, so the set order is by id whatever the shard split.
void write_shard(const std::string& path, const std::string& name, const std::vector<int>& ids,
                 const ShardSpec& sp = {}) {
  ShardMeta m;
  m.resolution = sp.R;
  m.prompt = name;
  m.tokenizer_fingerprint = sha256_hex(sp.tokenizer.data(), sp.tokenizer.size());
  if (sp.latents) {
    m.latent_height = m.latent_width = sp.R / 2;
    m.vae_fingerprint = sha256_hex(sp.vae.data(), sp.vae.size());
  }
  ShardWriter w(path, m);
  const int lat = (sp.R / 2) * (sp.R / 2) * 4;
  for (int id : ids) {
    std::vector<uint8_t> px(size_t(sp.R) * sp.R * 3, 7);
    for (size_t i = 0; i < px.size(); i += 3) px[i] = uint8_t(id);
    std::vector<int32_t> pid(77, 49407);
    pid[0] = 49406, pid[1] = sp.prompt_token, pid[2] = id;
    std::vector<float> mean(static_cast<size_t>(lat), float(id)),
        logvar(static_cast<size_t>(lat), -float(id));
    ShardSample s;
    s.pixels = px.data();
    s.prompt_ids = pid.data();
    if (sp.latents) s.latent_mean = mean.data(), s.latent_logvar = logvar.data();
    char buf[64];
    std::snprintf(buf, sizeof buf, "%s_%03d.jpg", name.c_str(), id);
    s.source_path = buf;
    s.sha256 = sha256_hex(buf, std::strlen(buf));
    w.append(s);
  }
  w.commit();
}

std::vector<int> iota(int n, int from = 0) {
  std::vector<int> v(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i) v[size_t(i)] = from + i;
  return v;
}

// The id carried by sample s of a batch (from its prompt ids) and, checked, from its pixels.
int id_of(const Batch& b, int s) {
  const int32_t id = b.prompt_ids.data<int32_t>()[size_t(s) * 77 + 2];
  if (b.latents) {
    const size_t e = size_t(b.latent_mean.numel() / b.latent_mean.dim(0));
    EXPECT_EQ(b.latent_mean.f32()[size_t(s) * e], float(id));
  } else {
    const size_t e = size_t(b.pixels.numel() / b.pixels.dim(0));
    EXPECT_FLOAT_EQ(b.pixels.f32()[size_t(s) * e], (float(id % 256) / 255.f - 0.5f) / 0.5f);
    EXPECT_FLOAT_EQ(b.pixels.f32()[size_t(s) * e + 1], (7.f / 255.f - 0.5f) / 0.5f);
  }
  return id;
}

bool is_class(const Batch& b, int s) {
  return b.prompt_ids.data<int32_t>()[size_t(s) * 77 + 1] == 2000;
}

DataLoaderOptions opts(const std::string& inst, const std::string& cls, int B, int rank = 0, int world = 1) {
  DataLoaderOptions o;
  o.instance = {inst};
  if (!cls.empty()) o.class_data = {cls};
  o.batch_size = B;
  o.rank = rank;
  o.world_size = world;
  o.seed = 42;
  return o;
}

struct Fixture {
  TempDir t{"fx"};
  Fixture(int n_inst = 5, int n_class = 12, bool latents = false) {
    ShardSpec ci, cc;
    ci.latents = cc.latents = latents;
    cc.prompt_token = 2000;
    write_shard(t / "inst.h5", "inst", iota(n_inst), ci);
    fs::create_directories(t / "class");
    // Class data as prepare -np 2 writes it: image i -> shard i mod 2.
    std::vector<int> even, odd;
    for (int i = 0; i < n_class; ++i) (i % 2 ? odd : even).push_back(100 + i);
    write_shard(t / "class/class-00000-of-00002.h5", "class", even, cc);
    write_shard(t / "class/class-00001-of-00002.h5", "class", odd, cc);
  }
};

}  // namespace

TEST(Loader, EpochPermutationIsAFisherYatesPermutation) {
  for (int64_t n : {1, 2, 7, 200}) {
    auto p = epoch_permutation(n, 5, 0);
    std::set<int64_t> s(p.begin(), p.end());
    EXPECT_EQ(int64_t(s.size()), n);
    EXPECT_EQ(*s.begin(), 0);
    EXPECT_EQ(*s.rbegin(), n - 1);
    EXPECT_EQ(p, epoch_permutation(n, 5, 0));
  }
  EXPECT_NE(epoch_permutation(200, 5, 0), epoch_permutation(200, 5, 1));
  EXPECT_NE(epoch_permutation(200, 5, 0), epoch_permutation(200, 6, 0));
  EXPECT_TRUE(epoch_permutation(0, 5, 0).empty());
}

TEST(Loader, ShardSpecsFileGlobFolder) {
  Fixture f;
  EXPECT_EQ(expand_shard_spec(f.t / "inst.h5"), std::vector<std::string>{f.t / "inst.h5"});
  const std::vector<std::string> both = {f.t / "class/class-00000-of-00002.h5",
                                         f.t / "class/class-00001-of-00002.h5"};
  EXPECT_EQ(expand_shard_spec(f.t / "class"), both);
  EXPECT_EQ(expand_shard_spec(f.t / "class/class-*-of-00002.h5"), both);
  EXPECT_NE(error_of([&] { expand_shard_spec(f.t / "nope.h5"); }).find("nope.h5"), std::string::npos);
  EXPECT_NE(error_of([&] { expand_shard_spec(f.t / "x*.h5"); }).find("matches no file"), std::string::npos);
  fs::create_directories(f.t / "empty");
  EXPECT_NE(error_of([&] { expand_shard_spec(f.t / "empty"); }).find("no *.h5"), std::string::npos);

  // Split shards read back in source order (0..11), the order a one-rank prepare would give.
  ShardSet cls = ShardSet::open({f.t / "class"}, "class data");
  ASSERT_EQ(cls.size(), 12);
  for (int64_t i = 0; i < 12; ++i) {
    int64_t local = -1;
    const ShardReader& r = cls.reader(i, &local);
    EXPECT_EQ(r.source_path(local), "class_" + std::to_string(100 + i) + ".jpg");
  }
  // The same shard twice (file + folder glob) counts once.
  EXPECT_EQ(ShardSet::open({f.t / "class", f.t / "class/class-00000-of-00002.h5"}).size(), 12);
}

TEST(Loader, PairsInstanceRepeatedToClassCount) {
  Fixture f(5, 12);
  DataLoader dl(opts(f.t / "inst.h5", f.t / "class", 1));
  EXPECT_EQ(dl.examples_per_epoch(), 12);
  EXPECT_EQ(dl.batches_per_epoch(), 12);
  EXPECT_EQ(dl.instance_count(), 5);
  EXPECT_EQ(dl.class_count(), 12);
  EXPECT_FALSE(dl.latents());
  std::set<int64_t> seen;
  for (int s = 0; s < 12; ++s) {
    Batch b = dl.next();
    ASSERT_TRUE(b.prior);
    ASSERT_EQ(b.pixels.dim(0), 2);
    EXPECT_EQ(b.pixels.dim(1), 4);
    EXPECT_FALSE(is_class(b, 0));
    EXPECT_TRUE(is_class(b, 1));
    const int64_t k = b.example[0];
    EXPECT_EQ(b.example[1], k);
    EXPECT_EQ(id_of(b, 0), int(k % 5));    // instance[k mod n_inst]
    EXPECT_EQ(id_of(b, 1), int(100 + k));  // class[k]
    EXPECT_EQ(b.slot, (std::vector<int64_t>{0, 1}));
    EXPECT_EQ(b.step, s);
    seen.insert(k);
  }
  EXPECT_EQ(seen.size(), 12u);  // one epoch visits every example once
  EXPECT_EQ(dl.cursor(), (DataCursor{1, 0}));
}

TEST(Loader, NoClassDataMeansInstancesOnly) {
  Fixture f(5, 12);
  DataLoader dl(opts(f.t / "inst.h5", "", 2));
  EXPECT_EQ(dl.examples_per_epoch(), 5);
  EXPECT_EQ(dl.batches_per_epoch(), 2);  // 5 examples, global batch 2: the 5th is dropped
  std::set<int> ids;
  for (int s = 0; s < 2; ++s) {
    Batch b = dl.next();
    EXPECT_FALSE(b.prior);
    ASSERT_EQ(b.pixels.dim(0), 2);
    for (int i = 0; i < 2; ++i) {
      ids.insert(id_of(b, i));
      EXPECT_FALSE(is_class(b, i));
    }
  }
  EXPECT_EQ(ids.size(), 4u);
  EXPECT_EQ(dl.cursor(), (DataCursor{1, 0}));
  EXPECT_EQ(dl.next().cursor, (DataCursor{1, 0}));
}

TEST(Loader, RankSlicesAreDisjointAndMatchOneRank) {
  Fixture f(5, 12);
  // 1 rank x B=4 against 2 ranks x B=2 (simulated): same content, same order, same slots.
  DataLoader one(opts(f.t / "inst.h5", f.t / "class", 4));
  DataLoader r0(opts(f.t / "inst.h5", f.t / "class", 2, 0, 2)),
      r1(opts(f.t / "inst.h5", f.t / "class", 2, 1, 2));
  EXPECT_EQ(r0.batches_per_epoch(), 3);
  for (int s = 0; s < 7; ++s) {  // crosses two epoch boundaries
    SCOPED_TRACE(s);
    Batch a = one.next(), b0 = r0.next(), b1 = r1.next();
    EXPECT_EQ(a.cursor, b0.cursor);
    EXPECT_EQ(a.step, b1.step);
    std::vector<int> want_i, want_c, got_i, got_c;
    std::vector<int64_t> want_slots = a.slot, got_slots;
    for (int i = 0; i < 4; ++i) want_i.push_back(id_of(a, i)), want_c.push_back(id_of(a, 4 + i));
    std::set<int64_t> ex0(b0.example.begin(), b0.example.end()), ex1(b1.example.begin(), b1.example.end());
    for (int64_t e : ex0) EXPECT_EQ(ex1.count(e), 0u) << "example " << e << " on both ranks";
    for (const Batch* b : {&b0, &b1})
      for (int i = 0; i < 2; ++i) got_i.push_back(id_of(*b, i));
    for (const Batch* b : {&b0, &b1})
      for (int i = 0; i < 2; ++i) got_c.push_back(id_of(*b, 2 + i));
    EXPECT_EQ(got_i, want_i);
    EXPECT_EQ(got_c, want_c);
    std::vector<int64_t> s0 = {b0.slot[0], b0.slot[1], b1.slot[0], b1.slot[1],
                               b0.slot[2], b0.slot[3], b1.slot[2], b1.slot[3]};
    EXPECT_EQ(s0, want_slots);
  }
}

TEST(Loader, ReshufflesEachEpochDeterministicallyFromSeed) {
  Fixture f(5, 12);
  auto epoch_order = [&](uint64_t seed, int epochs) {
    DataLoaderOptions o = opts(f.t / "inst.h5", f.t / "class", 3);
    o.seed = seed;
    DataLoader dl(o);
    std::vector<std::vector<int64_t>> out(static_cast<size_t>(epochs));
    for (int e = 0; e < epochs; ++e)
      for (int s = 0; s < 4; ++s) {
        Batch b = dl.next();
        EXPECT_EQ(b.cursor.epoch, e);
        for (int i = 0; i < 3; ++i) out[size_t(e)].push_back(b.example[size_t(i)]);
      }
    return out;
  };
  auto a = epoch_order(42, 3), b = epoch_order(42, 3), c = epoch_order(43, 3);
  EXPECT_EQ(a, b);
  EXPECT_NE(a[0], a[1]);
  EXPECT_NE(a[1], a[2]);
  EXPECT_NE(a, c);
  for (auto& e : a) {
    EXPECT_EQ(e, std::vector<int64_t>(epoch_permutation(12, 42, &e - &a[0])));
    std::sort(e.begin(), e.end());
    const std::vector<int> all = iota(12);
    EXPECT_EQ(e, std::vector<int64_t>(all.begin(), all.end()));
  }
}

TEST(Loader, ResumeFromCursorContinuesBitIdentically) {
  Fixture f(5, 12);
  DataLoaderOptions o = opts(f.t / "inst.h5", f.t / "class", 2);
  o.prefetch = 3;
  std::vector<Batch> ref;
  DataCursor saved;
  {
    DataLoader dl(o);
    for (int s = 0; s < 15; ++s) {
      ref.push_back(dl.next());
      if (s == 7) saved = dl.cursor();  // after 8 batches: epoch 1, position 4
    }
  }
  EXPECT_EQ(saved, (DataCursor{1, 4}));
  o.start = saved;
  DataLoader dl(o);
  for (int s = 8; s < 15; ++s) {
    Batch b = dl.next();
    EXPECT_EQ(b.cursor, ref[size_t(s)].cursor);
    EXPECT_EQ(b.step, ref[size_t(s)].step);
    EXPECT_EQ(b.example, ref[size_t(s)].example);
    EXPECT_EQ(b.slot, ref[size_t(s)].slot);
    ASSERT_EQ(b.pixels.nbytes(), ref[size_t(s)].pixels.nbytes());
    EXPECT_EQ(std::memcmp(b.pixels.raw(), ref[size_t(s)].pixels.raw(), b.pixels.nbytes()), 0);
    EXPECT_EQ(std::memcmp(b.prompt_ids.raw(), ref[size_t(s)].prompt_ids.raw(), b.prompt_ids.nbytes()), 0);
  }
  o.start = {0, 12};
  EXPECT_NE(error_of([&] { DataLoader bad(o); }).find("out of range"), std::string::npos);
}

TEST(Loader, LatentsReplacePixelsWhenEveryShardHasThem) {
  Fixture f(4, 6, /*latents=*/true);
  DataLoader dl(opts(f.t / "inst.h5", f.t / "class", 2));
  EXPECT_TRUE(dl.latents());
  EXPECT_EQ(dl.vae_fingerprint(), sha256_hex("vae-a", 5));
  Batch b = dl.next();
  EXPECT_TRUE(b.latents);
  EXPECT_FALSE(b.pixels.defined());
  ASSERT_EQ(b.latent_mean.shape(), (Shape{4, 2, 2, 4}));
  for (int i = 0; i < 4; ++i) {
    const int id = id_of(b, i);
    EXPECT_EQ(b.latent_logvar.f32()[size_t(i) * 16 + 5], -float(id));
  }
  DataLoaderOptions o = opts(f.t / "inst.h5", f.t / "class", 2);
  o.use_latents = false;
  DataLoader px(o);
  EXPECT_FALSE(px.latents());
  EXPECT_TRUE(px.next().pixels.defined());
  // Class data without latents: pixels for everyone.
  write_shard(f.t / "plain_class.h5", "class", iota(6, 100), ShardSpec{4, false, "tok-a", "", 2000});
  DataLoader mixed(opts(f.t / "inst.h5", f.t / "plain_class.h5", 2));
  EXPECT_FALSE(mixed.latents());
  EXPECT_TRUE(mixed.next().pixels.defined());
}

TEST(Loader, MismatchedShardsFailWithOneLineNamingTheFile) {
  Fixture f(5, 12);
  auto one_line = [](const std::string& e, const std::string& file, const std::string& what) {
    EXPECT_NE(e.find(file), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << e;
    EXPECT_EQ(e.find('\n'), std::string::npos) << e;
    std::printf("  %s\n", e.c_str());
  };
  // Resolution differs between instance and class data.
  write_shard(f.t / "class8.h5", "class", iota(12, 100), ShardSpec{8, false, "tok-a", "", 2000});
  one_line(error_of([&] { DataLoader dl(opts(f.t / "inst.h5", f.t / "class8.h5", 1)); }), "class8.h5",
           "resolution 8");
  // Resolution differs inside one set (a folder).
  fs::create_directories(f.t / "mixed");
  write_shard(f.t / "mixed/a.h5", "class", iota(3, 100), ShardSpec{4, false, "tok-a", "", 2000});
  write_shard(f.t / "mixed/b.h5", "class", iota(3, 103), ShardSpec{8, false, "tok-a", "", 2000});
  one_line(error_of([&] { DataLoader dl(opts(f.t / "inst.h5", f.t / "mixed", 1)); }), "mixed/b.h5",
           "resolution 8 differs from 4");
  // Tokenizer differs.
  write_shard(f.t / "classtok.h5", "class", iota(12, 100), ShardSpec{4, false, "tok-b", "", 2000});
  one_line(error_of([&] { DataLoader dl(opts(f.t / "inst.h5", f.t / "classtok.h5", 1)); }), "classtok.h5",
           "different tokenizer");
  // Schema version differs.
  write_shard(f.t / "v2.h5", "class", iota(12, 100), ShardSpec{4, false, "tok-a", "", 2000});
  {
    hid_t h = H5Fopen((f.t / "v2.h5").c_str(), H5F_ACC_RDWR, H5P_DEFAULT);
    ASSERT_GE(h, 0);
    hid_t a = H5Aopen(h, "schema_version", H5P_DEFAULT);
    int32_t two = 2;
    H5Awrite(a, H5T_NATIVE_INT32, &two);
    H5Aclose(a);
    H5Fclose(h);
  }
  one_line(error_of([&] { DataLoader dl(opts(f.t / "inst.h5", f.t / "v2.h5", 1)); }), "v2.h5", "version 2");
  // The run's resolution.
  DataLoaderOptions o = opts(f.t / "inst.h5", f.t / "class", 1);
  o.expected_resolution = 512;
  one_line(error_of([&] { DataLoader dl(o); }), "inst.h5", "512");
  // Too few examples for one global batch.
  one_line(error_of([&] { DataLoader dl(opts(f.t / "inst.h5", "", 3, 0, 2)); }), "5 examples",
           "fewer than one global batch of 6");
}

// A token id outside the text encoder's vocabulary (a damaged or foreign shard) fails naming the shard
// and the sample, not deep inside the embedding lookup (issue 16 item 7).
TEST(Loader, TokenIdsOutsideTheVocabularyNameShardAndSample) {
  Fixture f(5, 12);
  write_shard(f.t / "bad.h5", "class", iota(12, 100), ShardSpec{4, false, "tok-a", "", 49408});
  DataLoaderOptions o = opts(f.t / "inst.h5", f.t / "bad.h5", 1);
  o.vocab_size = 49408;
  DataLoader dl(o);
  const std::string e = error_of([&] { dl.next(); });
  EXPECT_NE(e.find("bad.h5: sample "), std::string::npos) << e;
  EXPECT_NE(e.find("prompt_ids[1] = 49408 is outside the text encoder's vocabulary [0, 49408)"),
            std::string::npos)
      << e;
  EXPECT_EQ(e.find('\n'), std::string::npos) << e;
  // In range: the same loader settings on good data read every batch of an epoch.
  o = opts(f.t / "inst.h5", f.t / "class", 1);
  o.vocab_size = 49408;
  DataLoader good(o);
  for (int i = 0; i < 12; ++i) EXPECT_NO_THROW(good.next());
}

TEST(Loader, ReportsTimeWaitedForData) {
  Fixture f(5, 12);
  DataLoader dl(opts(f.t / "inst.h5", f.t / "class", 1));
  double sum = 0;
  for (int s = 0; s < 5; ++s) {
    Batch b = dl.next();
    EXPECT_GE(b.wait_seconds, 0.0);
    sum += b.wait_seconds;
  }
  EXPECT_DOUBLE_EQ(dl.total_wait_seconds(), sum);
}
