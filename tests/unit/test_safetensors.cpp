#include <gtest/gtest.h>
#include <sys/resource.h>
#include <unistd.h>

#include <csignal>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>
#include <string>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"
#include "test_helpers.h"

using namespace db;
namespace fs = std::filesystem;

namespace {

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((n >> (8 * i)) & 0xff);
  return s;
}

// A file image: length field, header text as given (not padded), then `data_bytes` zero bytes.
std::string image(const std::string& header, size_t data_bytes = 0) {
  return le64(header.size()) + header + std::string(data_bytes, '\0');
}

// Expects opening `path` to throw an Error of one line naming the file and containing `what`.
void expect_open_error(const std::string& path, const std::string& what) {
  try {
    SafetensorsSet::open(path);
    ADD_FAILURE() << "no error for " << path << " (expected '" << what << "')";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_NE(msg.find(what), std::string::npos) << "expected '" << what << "' in: " << msg;
    EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
  }
}

std::vector<std::pair<std::string, Tensor>> every_dtype() {
  std::vector<std::pair<std::string, Tensor>> ts;
  Tensor f32 = Tensor::from_vector({1.5f, -2.f, 3.25f, 1e-30f, -0.f, 7.f}, {2, 3});
  ts.emplace_back("w.f32", f32);
  ts.emplace_back("w.bf16", f32.to(DType::BF16));  // 3 x 2-byte elements leave later data unaligned
  ts.emplace_back("w.f16", Tensor::from_vector({0.5f, -1.f, 65504.f}, {3}).to(DType::F16));
  Tensor i32 = Tensor::empty({2, 2}, DType::I32);
  int32_t i32v[] = {-1, 0, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()};
  std::memcpy(i32.raw(), i32v, sizeof i32v);
  ts.emplace_back("w.i32", i32);
  Tensor i64 = Tensor::empty({3}, DType::I64);
  int64_t i64v[] = {-3, int64_t(1) << 40, std::numeric_limits<int64_t>::max()};
  std::memcpy(i64.raw(), i64v, sizeof i64v);
  ts.emplace_back("w.i64", i64);
  Tensor u8 = Tensor::empty({5}, DType::U8);
  uint8_t u8v[] = {0, 1, 127, 128, 255};
  std::memcpy(u8.raw(), u8v, sizeof u8v);
  ts.emplace_back("w.u8", u8);
  ts.emplace_back("w.empty", Tensor::zeros({0, 4}, DType::F32));
  ts.emplace_back("w.scalar", Tensor::from_vector({9.f}, {}));
  return ts;
}

}  // namespace

TEST(Safetensors, RoundTripEveryDtype) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str(), path = dir + "/all.safetensors";
  auto ts = every_dtype();
  write_safetensors(path, ts, {{"format", "pt"}, {"note", "é ü"}});

  const std::string bytes = read_bytes(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  EXPECT_EQ(n % 8, 0u) << "header is padded to 8 bytes";
  EXPECT_EQ(bytes[8], '{');

  SafetensorsFile f = SafetensorsFile::open(path);
  EXPECT_EQ(f.metadata(), (std::map<std::string, std::string>{{"format", "pt"}, {"note", "é ü"}}));
  ASSERT_EQ(f.tensors().size(), ts.size());
  size_t offset = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    const auto& [name, t] = ts[i];
    SCOPED_TRACE(name);
    const SafeTensorInfo& info = f.tensors()[i];  // file order == given order, contiguous
    EXPECT_EQ(info.name, name);
    EXPECT_EQ(info.begin, offset);
    EXPECT_EQ(info.end, offset + t.nbytes());
    offset = info.end;
    ASSERT_EQ(f.find(name), &info);
    EXPECT_EQ(info.dtype, t.dtype());
    EXPECT_EQ(info.shape, t.shape());
    Tensor g = f.get(name);
    EXPECT_EQ(g.dtype(), t.dtype());
    EXPECT_EQ(g.shape(), t.shape());
    EXPECT_EQ(std::memcmp(g.raw(), t.raw(), t.nbytes()), 0);
    if (t.dtype() == DType::F32 || t.dtype() == DType::F16 || t.dtype() == DType::BF16) {
      std::vector<float> got(size_t(t.numel()) + 1, -123.f);
      f.read_f32(info, got.data());
      Tensor want = t.to(DType::F32);
      for (int64_t k = 0; k < t.numel(); ++k) EXPECT_EQ(got[size_t(k)], want.f32()[k]) << k;
      EXPECT_EQ(got.back(), -123.f) << "read_f32 wrote past numel";
    } else {
      std::vector<float> got(size_t(t.numel()));
      EXPECT_THROW(f.read_f32(info, got.data()), Error);
    }
  }
  EXPECT_EQ(bytes.size(), 8 + n + offset) << "data section holds exactly the tensors";
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_THROW(f.get("nope"), Error);
}

TEST(Safetensors, ViewsOutliveTheFileObject) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str(), path = dir + "/v.safetensors";
  write_safetensors(path, {{"x", Tensor::from_vector({1.f, 2.f, 3.f}, {3})}});
  Tensor x;
  {
    SafetensorsFile f = SafetensorsFile::open(path);
    x = f.get("x");
  }
  fs::remove(path);  // the mapping stays valid after unlink
  float v[3];
  std::memcpy(v, x.raw(), sizeof v);
  EXPECT_EQ(v[0], 1.f);
  EXPECT_EQ(v[2], 3.f);
}

TEST(Safetensors, ReadsPythonWrittenFile) {
  // Written by tests/fixtures/safetensors/make_fixtures.py with Python safetensors 0.8 (torch).
  const std::string path =
      (fs::path(__FILE__).parent_path().parent_path() / "fixtures/safetensors/python_mixed.safetensors")
          .string();
  ASSERT_TRUE(fs::exists(path)) << path << " (run the tests from the repository root)";
  SafetensorsSet set = SafetensorsSet::open(path);
  EXPECT_EQ(set.names(), (std::vector<std::string>{"bf16", "empty", "f16", "f32", "i32", "i64", "scalar",
                                                   "u8", "unet.down_blocks.0.attentions.0.proj_in.weight"}));
  const SafetensorsFile* f = set.find("f32").first;
  ASSERT_NE(f, nullptr);
  EXPECT_EQ(f->metadata(),
            (std::map<std::string, std::string>{{"format", "pt"}, {"made_by", "make_fixtures.py"}}));
  for (size_t i = 1; i < f->tensors().size(); ++i)
    EXPECT_LE(f->tensors()[i - 1].begin, f->tensors()[i].begin) << "tensors() is in file order";

  auto floats = [&](const std::string& name, const Shape& shape, DType dt) {
    const SafeTensorInfo* t = f->find(name);
    EXPECT_NE(t, nullptr) << name;
    if (!t) return std::vector<float>{};
    EXPECT_EQ(t->shape, shape) << name;
    EXPECT_EQ(t->dtype, dt) << name;
    std::vector<float> v(size_t(shape_numel(shape)));
    f->read_f32(*t, v.data());
    return v;
  };
  std::vector<float> f32 = floats("f32", {3, 4}, DType::F32);
  for (int i = 0; i < 12; ++i) EXPECT_EQ(f32[size_t(i)], i * 0.5f - 1.f) << i;
  std::vector<float> f16 = floats("f16", {6}, DType::F16);
  EXPECT_EQ(f16, (std::vector<float>{1.f, -2.5f, 0.25f, 65504.f, std::ldexp(1.f, -24), -0.f}));
  EXPECT_TRUE(std::signbit(f16[5]));
  std::vector<float> bf16 = floats("bf16", {3, 2}, DType::BF16);
  EXPECT_EQ(bf16, (std::vector<float>{1.f, -3.f, 0.5f, std::ldexp(1.f, 100), 3.140625f, -0.f}));
  EXPECT_EQ(floats("scalar", {}, DType::F32), (std::vector<float>{42.f}));
  EXPECT_EQ(floats("empty", {0, 3}, DType::F32), (std::vector<float>{}));
  EXPECT_EQ(floats("unet.down_blocks.0.attentions.0.proj_in.weight", {2, 2, 1, 1}, DType::F32),
            (std::vector<float>(4, 0.125f)));

  Tensor i64 = f->get("i64");
  ASSERT_EQ(i64.dtype(), DType::I64);
  int64_t iv[4];
  std::memcpy(iv, i64.raw(), sizeof iv);
  EXPECT_EQ(iv[0], -5);
  EXPECT_EQ(iv[1], 0);
  EXPECT_EQ(iv[2], int64_t(1) << 40);
  EXPECT_EQ(iv[3], std::numeric_limits<int64_t>::max());
  Tensor i32 = f->get("i32");
  int32_t i32v[2];
  std::memcpy(i32v, i32.raw(), sizeof i32v);
  EXPECT_EQ(i32.shape(), (Shape{2, 1}));
  EXPECT_EQ(i32v[0], -7);
  EXPECT_EQ(i32v[1], std::numeric_limits<int32_t>::max());
  Tensor u8 = f->get("u8");
  EXPECT_EQ(std::string(static_cast<const char*>(u8.raw()), 3), std::string("\x00\x01\xff", 3));
}

TEST(Safetensors, ParsesFromMemory) {
  const std::string img = image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})", 8);
  SafetensorsFile f = SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(img.data()), img.size(), "mem");
  EXPECT_EQ(f.path(), "mem");
  ASSERT_EQ(f.tensors().size(), 1u);
  try {
    SafetensorsFile::parse(reinterpret_cast<const uint8_t*>(img.data()), 7, "mem");
    ADD_FAILURE() << "7 bytes parsed";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()).rfind("mem: ", 0), 0u) << e.what();
  }
}

TEST(Safetensors, EmptyTensorsAndEmptyHeaderAreLegal) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str();
  write_bytes(dir + "/e.safetensors", image(R"({"e":{"dtype":"BF16","shape":[0,5],"data_offsets":[0,0]},)"
                                            R"("f":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                                            R"("g":{"dtype":"F32","shape":[3,0],"data_offsets":[1,1]}})",
                                            2));
  SafetensorsFile f = SafetensorsFile::open(dir + "/e.safetensors");
  EXPECT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.get("g").numel(), 0);
  write_bytes(dir + "/none.safetensors", image("{}"));
  EXPECT_TRUE(SafetensorsFile::open(dir + "/none.safetensors").tensors().empty());
}

TEST(Safetensors, RejectsTruncatedAndOversizedFiles) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str();
  const std::string good = image(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})", 16);
  struct Case {
    const char* file;
    std::string bytes, what;
  } cases[] = {
      {"empty", "", "too short"},
      {"five_bytes", std::string("\x10\0\0\0\0", 5), "too short"},
      {"header_cut", good.substr(0, 20), "truncated file: header length"},
      {"data_cut", good.substr(0, good.size() - 1), "outside the data section"},
      {"len_gt_file", le64(100) + "{}", "truncated file: header length 100"},
      {"oversized", le64(200'000'000) + "{}", "oversized header"},
      {"len_max", le64(~uint64_t(0)) + "{}", "oversized header"},
      {"len_zero", le64(0), "malformed header JSON"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    std::string path = dir + "/" + c.file + ".safetensors";
    write_bytes(path, c.bytes);
    expect_open_error(path, c.what);
  }
  expect_open_error(dir + "/does_not_exist.safetensors", "cannot open");
  expect_open_error(dir, "not a regular file");
}

TEST(Safetensors, RejectsBadHeaders) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str();
  auto entry = [](const std::string& dtype, const std::string& shape, const std::string& offsets) {
    return R"({"t":{"dtype":)" + dtype + R"(,"shape":)" + shape + R"(,"data_offsets":)" + offsets + "}}";
  };
  struct Case {
    const char* file;
    std::string header;
    size_t data;
    std::string what;
  } cases[] = {
      {"malformed", R"({"t": {"dtype": "F32", )", 0, "malformed header JSON: [json.exception.parse_error"},
      {"bad_utf8", "{\"t\xff\": 1}", 0, "malformed header JSON"},
      {"trailing", "{} x", 0, "malformed header JSON"},
      {"array_top", "[1, 2]", 0, "header is a JSON array, expected an object"},
      {"deep", "{\"t\":" + std::string(17, '[') + std::string(17, ']') + "}", 0,
       "nested deeper than 16 levels"},
      {"deep_unclosed", std::string(1 << 20, '['), 0, "nested deeper than 16 levels"},
      {"entry_number", R"({"t": 3})", 0, "tensor 't': entry is a JSON number"},
      {"no_dtype", R"({"t":{"shape":[1],"data_offsets":[0,4]}})", 4, "tensor 't': missing \"dtype\""},
      {"no_shape", R"({"t":{"dtype":"F32","data_offsets":[0,4]}})", 4, "tensor 't': missing \"shape\""},
      {"no_offsets", R"({"t":{"dtype":"F32","shape":[1]}})", 4, "tensor 't': missing \"data_offsets\""},
      {"dtype_number", entry("5", "[1]", "[0,4]"), 4, "\"dtype\" is a JSON number"},
      {"shape_string", entry("\"F32\"", "\"1\"", "[0,4]"), 4, "\"shape\" is a JSON string"},
      {"dim_negative", entry("\"F32\"", "[-1]", "[0,4]"), 4, "shape[0] = -1 is not a non-negative integer"},
      {"dim_float", entry("\"F32\"", "[1, 2.5]", "[0,4]"), 4, "shape[1] = 2.5 is not a non-negative integer"},
      {"dim_string", entry("\"F32\"", "[\"1\"]", "[0,4]"), 4, "shape[0] = \"1\" is not a non-negative"},
      {"dim_huge_literal", entry("\"F32\"", "[1e30]", "[0,4]"), 4, "is not a non-negative integer"},
      {"dim_above_i64", entry("\"F32\"", "[9223372036854775808]", "[0,4]"), 4, "is too large"},
      {"offsets_short", entry("\"F32\"", "[1]", "[4]"), 4, "expected [begin, end]"},
      {"offsets_object", entry("\"F32\"", "[1]", "{}"), 4, "expected [begin, end]"},
      {"offset_negative", entry("\"F32\"", "[1]", "[-4,0]"), 4, "data_offsets[0] = -4"},
      {"unknown_dtype", entry("\"F33\"", "[1]", "[0,4]"), 4, "tensor 't': unknown dtype 'F33'"},
      {"unsupported_f64", entry("\"F64\"", "[1]", "[0,8]"), 8, "tensor 't': unsupported dtype F64"},
      {"unsupported_bool", entry("\"BOOL\"", "[1]", "[0,1]"), 1, "tensor 't': unsupported dtype BOOL"},
      {"size_mismatch", entry("\"F32\"", "[3]", "[0,8]"), 8, "is 12 bytes but data_offsets [0, 8] span 8"},
      {"begin_gt_end", entry("\"U8\"", "[0]", "[8,4]"), 8, "has begin > end"},
      {"out_of_range", entry("\"F32\"", "[2]", "[4,12]"), 8, "outside the data section (8 bytes)"},
      {"offset_u64_max", entry("\"U8\"", "[1]", "[18446744073709551614,18446744073709551615]"), 8,
       "outside the data section"},
      {"overflow_numel", entry("\"F32\"", "[4611686018427387904, 4]", "[0,16]"), 16, "overflows"},
      {"overflow_i64", entry("\"U8\"", "[4611686018427387904, 2]", "[0,16]"), 16, "overflows"},
      {"overflow_bytes", entry("\"F32\"", "[2305843009213693952, 2]", "[0,16]"), 16, "overflows 64-bit byte"},
      {"overflow_before_zero", entry("\"F32\"", "[4294967296, 4294967296, 0]", "[0,0]"), 0, "overflows"},
      {"overlap",
       R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
       12, "tensor 'b': bytes [4, 12) overlap tensor 'a' [0, 8)"},
      {"overlap_nested",  // b starts inside a, which reaches past c
       R"({"a":{"dtype":"U8","shape":[10],"data_offsets":[0,10]},"c":{"dtype":"U8","shape":[1],"data_offsets":[2,3]},)"
       R"("b":{"dtype":"U8","shape":[2],"data_offsets":[8,10]}})",
       10, "overlap tensor 'a'"},
      {"duplicate_name",
       R"({"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
       2, "tensor 'a': listed twice"},
      {"duplicate_key", R"({"a":{"dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1]}})", 1,
       "tensor 'a': duplicate key 'dtype'"},
      {"metadata_dup", R"({"__metadata__":{"k":"1","k":"2"}})", 0, "__metadata__: duplicate key 'k'"},
      {"metadata_array", R"({"__metadata__":[1]})", 0, "__metadata__ is a JSON array"},
      {"metadata_value", R"({"__metadata__":{"k":1}})", 0,
       "__metadata__ 'k' is a JSON number, expected a string"},
      {"newline_name", entry("\"X\"", "[1]", "[0,1]").replace(2, 1, "t\\n"), 1,
       "tensor 't\\x0a': unknown dtype"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.file);
    std::string path = dir + "/" + c.file + ".safetensors";
    write_bytes(path, image(c.header, c.data));
    expect_open_error(path, c.what);
  }
}

TEST(Safetensors, WriteRejectsBadInput) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str(), path = dir + "/w.safetensors";
  Tensor x = Tensor::from_vector({1.f}, {1});
  EXPECT_THROW(write_safetensors(path, {{"a", x}, {"a", x}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"__metadata__", x}}), Error);
  EXPECT_THROW(write_safetensors(path, {{"a", Tensor()}}), Error);
  EXPECT_THROW(write_safetensors(path, {{std::string("bad\xff"), x}}), Error);
  EXPECT_FALSE(fs::exists(path));
  EXPECT_TRUE(fs::is_empty(dir)) << "no temporary file left behind";
}

TEST(Safetensors, WriteFailuresNameThePathAndLeaveNothing) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str();
  Tensor x = Tensor::from_vector(std::vector<float>(1 << 16, 1.f), {1 << 16});
  try {
    write_safetensors(dir + "/no/such/dir/x.safetensors", {{"x", x}});
    ADD_FAILURE() << "wrote into a missing folder";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir + "/no/such/dir/x.safetensors"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("No such file or directory"), std::string::npos) << e.what();
  }

  // A full disk, simulated with a file size limit: write() fails with EFBIG once past 4 KiB.
  const std::string path = dir + "/full.safetensors";
  write_safetensors(path, {{"old", Tensor::from_vector({5.f}, {1})}});
  const std::string before = read_bytes(path);
  struct rlimit old_limit;
  ASSERT_EQ(::getrlimit(RLIMIT_FSIZE, &old_limit), 0);
  auto old_handler = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old_limit;
  small.rlim_cur = 4096;
  ASSERT_EQ(::setrlimit(RLIMIT_FSIZE, &small), 0);
  std::string msg;
  try {
    write_safetensors(path, {{"x", x}});
  } catch (const Error& e) {
    msg = e.what();
  }
  ::setrlimit(RLIMIT_FSIZE, &old_limit);
  std::signal(SIGXFSZ, old_handler);
  EXPECT_NE(msg.find(path + ": writing " + path + ".tmp-"), std::string::npos) << msg;
  EXPECT_NE(msg.find(std::strerror(EFBIG)), std::string::npos) << msg;
  EXPECT_EQ(read_bytes(path), before) << "the old file is untouched";
  size_t entries = 0;
  for (const auto& e : fs::directory_iterator(dir)) entries += e.exists();
  EXPECT_EQ(entries, 1u) << "the temporary file was removed";
}

namespace {

void write_index(const std::string& path, const std::string& weight_map) {
  write_bytes(path, R"({"metadata": {"total_size": 24}, "weight_map": )" + weight_map + "}");
}

}  // namespace

TEST(Safetensors, ShardedIndex) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str();
  write_safetensors(dir + "/m-1.safetensors",
                    {{"b", Tensor::from_vector({1.f, 2.f}, {2})}, {"a", Tensor::from_vector({3.f}, {1})}});
  write_safetensors(dir + "/m-2.safetensors", {{"c", Tensor::from_vector({4.f, 5.f, 6.f}, {3})}});
  const std::string index = dir + "/model.safetensors.index.json";
  write_index(index, R"({"a": "m-1.safetensors", "b": "./m-1.safetensors", "c": "m-2.safetensors"})");
  SafetensorsSet set = SafetensorsSet::open(index);
  EXPECT_EQ(set.names(), (std::vector<std::string>{"a", "b", "c"}));
  auto [fa, ta] = set.find("a");
  auto [fc, tc] = set.find("c");
  ASSERT_TRUE(fa && ta && fc && tc);
  EXPECT_EQ(fa->path(), dir + "/m-1.safetensors");
  EXPECT_EQ(fc->path(), dir + "/m-2.safetensors");
  float c[3];
  fc->read_f32(*tc, c);
  EXPECT_EQ(c[2], 6.f);
  EXPECT_EQ(set.find("d").first, nullptr);
  EXPECT_EQ(set.find("d").second, nullptr);

  // A single file is a set of one.
  SafetensorsSet one = SafetensorsSet::open(dir + "/m-2.safetensors");
  EXPECT_EQ(one.names(), (std::vector<std::string>{"c"}));
}

TEST(Safetensors, ShardedIndexRejectsInconsistencies) {
  const db::test::TempDir tmp("safetensors");
  const std::string dir = tmp.str();
  write_safetensors(dir + "/m-1.safetensors", {{"a", Tensor::from_vector({1.f}, {1})}});
  write_safetensors(dir + "/m-2.safetensors",
                    {{"b", Tensor::from_vector({2.f}, {1})}, {"a", Tensor::from_vector({3.f}, {1})}});
  write_bytes(dir + "/bad.safetensors", le64(3) + "{}");
  const std::string index = dir + "/model.safetensors.index.json";
  struct Case {
    std::string weight_map, what;
  } cases[] = {
      {R"({"a": "m-1.safetensors", "x": "m-3.safetensors"})", "m-3.safetensors: cannot open"},
      {R"({"a": "m-1.safetensors", "b": "m-1.safetensors"})",
       "tensor 'b' is not in its shard 'm-1.safetensors'"},
      {R"({"a": "m-1.safetensors", "b": "m-2.safetensors"})",
       "tensor 'a' is in two shards: 'm-1.safetensors' and 'm-2.safetensors'"},
      {R"({"a": "m-1.safetensors", "a": "m-1.safetensors"})", "weight_map lists tensor 'a' twice"},
      {R"({"a": "../m-1.safetensors"})", "escapes the index's folder"},
      {R"({"a": "sub/../../m-1.safetensors"})", "escapes the index's folder"},
      {R"({"a": "/etc/passwd"})", "is an absolute path"},
      {R"({"a": ""})", "empty shard name"},
      {R"({"a": 1})", "shard is a JSON number"},
      {R"({"a": "bad.safetensors"})", "bad.safetensors: truncated file"},
      {R"(["a"])", "\"weight_map\" is a JSON array"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.weight_map);
    write_index(index, c.weight_map);
    expect_open_error(index, c.what);
  }
  write_bytes(index, R"({"metadata": {}})");
  expect_open_error(index, "missing \"weight_map\"");
  write_bytes(index, R"({"weight_map": {"a": "m-1.safetensors"})");
  expect_open_error(index, "malformed index JSON");
}
