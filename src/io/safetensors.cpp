// safetensors reader: header validation, mmap, sharded sets. The writer is in safetensors_write.cpp.
#include "dreambooth/io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>
#include <tuple>

#include "dreambooth/core/error.h"
#include "safetensors_internal.h"

namespace db {

using nlohmann::json;

namespace st_detail {

namespace {
std::string escaped(std::string_view s, bool escape_non_ascii) {
  constexpr size_t kMax = 200;  // hostile names can be megabytes long
  size_t cut = s.size();
  if (cut > kMax)
    for (cut = kMax; cut > 0 && (static_cast<unsigned char>(s[cut]) & 0xc0) == 0x80;) --cut;  // whole chars
  std::string out;
  for (size_t i = 0; i < cut; ++i) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    if (c < 0x20 || c == 0x7f || c == '\\' || (escape_non_ascii && c >= 0x80)) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\x%02x", c);
      out += buf;
    } else {
      out += char(c);
    }
  }
  if (cut < s.size()) out += "...";
  return out;
}
}  // namespace

// Names come from validated JSON (UTF-8), so only control characters need escaping; foreign
// messages may quote raw bytes.
std::string qname(std::string_view s) {
  return "'" + escaped(s, false) + "'";
}
std::string one_line(std::string_view s) {
  return escaped(s, true);
}

namespace {

constexpr size_t kMaxJsonDepth = 16;  // valid files nest 3 deep

// First pass, without building a DOM: finds duplicate keys (nlohmann's DOM keeps the last of two)
// and caps nesting (100 MB of '[' would cost gigabytes of DOM nodes). nlohmann's parser callbacks
// could do this in one pass, but they rescan the parent object at every object end: quadratic.
class KeyChecker : public nlohmann::json_sax<json> {
 public:
  DuplicateKey dup;
  std::string error;  // set when parsing stopped

  bool null() override { return true; }
  bool boolean(bool) override { return true; }
  bool number_integer(number_integer_t) override { return true; }
  bool number_unsigned(number_unsigned_t) override { return true; }
  bool number_float(number_float_t, const string_t&) override { return true; }
  bool string(string_t&) override { return true; }
  bool binary(binary_t&) override { return true; }
  bool start_object(std::size_t) override {
    keys_.emplace_back();
    return deeper();
  }
  bool key(string_t& k) override {
    if (keys_.size() == 1) top_ = k;
    if (!keys_.back().insert(k).second && dup.level == 0) dup = DuplicateKey{keys_.size(), k, top_};
    return true;
  }
  bool end_object() override {
    keys_.pop_back();
    --depth_;
    return true;
  }
  bool start_array(std::size_t) override { return deeper(); }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) override {
    error = one_line(e.what());
    return false;
  }

 private:
  bool deeper() {
    if (++depth_ <= kMaxJsonDepth) return true;
    error = str_cat("nested deeper than ", kMaxJsonDepth, " levels");
    return false;
  }
  std::vector<std::set<std::string>> keys_;  // per open object, innermost last
  std::string top_;                          // the current top-level key
  size_t depth_ = 0;
};

}  // namespace

json parse_json_unique_keys(const char* begin, const char* end, const char* what, DuplicateKey* dup) {
  KeyChecker checker;
  if (!json::sax_parse(begin, end, &checker) || !checker.error.empty())
    throw Error("malformed ", what, ": ", checker.error.empty() ? "invalid JSON" : checker.error);
  *dup = checker.dup;
  try {
    return json::parse(begin, end);
  } catch (const json::exception& e) {  // not expected after the first pass
    throw Error("malformed ", what, ": ", one_line(e.what()));
  }
}

}  // namespace st_detail

using st_detail::qname;

namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the Rust implementation's cap

// Valid safetensors dtypes that DType cannot hold: reported as unsupported, not as malformed.
bool is_other_safetensors_dtype(const std::string& s) {
  static const char* names[] = {"BOOL",    "I8",      "I16",     "U16",     "U32", "U64", "F64", "F8_E5M2",
                                "F8_E4M3", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4",  "C64", "I4"};
  for (const char* n : names)
    if (s == n) return true;
  return false;
}

std::string short_dump(const json& v) {
  std::string s = v.dump(-1, ' ', false, json::error_handler_t::replace);
  return s.size() > 40 ? s.substr(0, 40) + "..." : s;
}

// A non-negative JSON integer that fits in `limit`, or throws naming `what`.
uint64_t to_uint(const json& v, uint64_t limit, const std::string& name, const char* what) {
  if (!v.is_number_unsigned())
    throw Error("tensor ", qname(name), ": ", what, " = ", short_dump(v), " is not a non-negative integer");
  uint64_t u = v.get<uint64_t>();
  if (u > limit) throw Error("tensor ", qname(name), ": ", what, " = ", u, " is too large");
  return u;
}

const json& member(const json& entry, const char* key, const std::string& name) {
  auto it = entry.find(key);
  if (it == entry.end()) throw Error("tensor ", qname(name), ": missing \"", key, "\"");
  return *it;
}

SafeTensorInfo parse_entry(const std::string& name, const json& v, uint64_t data_size) {
  const std::string q = qname(name);
  if (!v.is_object()) throw Error("tensor ", q, ": entry is a JSON ", v.type_name(), ", expected an object");
  SafeTensorInfo t;
  t.name = name;

  const json& dt = member(v, "dtype", name);
  if (!dt.is_string())
    throw Error("tensor ", q, ": \"dtype\" is a JSON ", dt.type_name(), ", expected a string");
  const auto& dts = dt.get_ref<const std::string&>();
  if (!dtype_from_safetensors(dts, &t.dtype)) {
    if (is_other_safetensors_dtype(dts))
      throw Error("tensor ", q, ": unsupported dtype ", dts,
                  " (this build reads F32, BF16, F16, I32, I64, U8)");
    throw Error("tensor ", q, ": unknown dtype ", qname(dts));
  }

  const json& sh = member(v, "shape", name);
  if (!sh.is_array())
    throw Error("tensor ", q, ": \"shape\" is a JSON ", sh.type_name(), ", expected an array");
  // Left fold with overflow checks, as the Rust implementation: every partial product must fit in
  // int64 (so shape_numel never overflows either), and numel x dtype size must fit in uint64.
  uint64_t numel = 1;
  const uint64_t kI64Max = uint64_t(std::numeric_limits<int64_t>::max());
  for (size_t i = 0; i < sh.size(); ++i) {
    uint64_t d = to_uint(sh[i], kI64Max, name, str_cat("shape[", i, "]").c_str());
    if (__builtin_mul_overflow(numel, d, &numel) || numel > kI64Max)
      throw Error("tensor ", q, ": shape ", short_dump(sh), " overflows 64-bit element counts");
    t.shape.push_back(int64_t(d));
  }
  uint64_t nbytes = 0;
  if (__builtin_mul_overflow(numel, uint64_t(dtype_size(t.dtype)), &nbytes))
    throw Error("tensor ", q, ": shape ", short_dump(sh), " x ", dts, " overflows 64-bit byte counts");

  const json& off = member(v, "data_offsets", name);
  if (!off.is_array() || off.size() != 2)
    throw Error("tensor ", q, ": \"data_offsets\" = ", short_dump(off), ", expected [begin, end]");
  uint64_t begin = to_uint(off[0], std::numeric_limits<uint64_t>::max(), name, "data_offsets[0]");
  uint64_t end = to_uint(off[1], std::numeric_limits<uint64_t>::max(), name, "data_offsets[1]");
  if (begin > end) throw Error("tensor ", q, ": data_offsets [", begin, ", ", end, "] has begin > end");
  if (end > data_size)
    throw Error("tensor ", q, ": data_offsets [", begin, ", ", end, "] outside the data section (", data_size,
                " bytes)");
  if (end - begin != nbytes)
    throw Error("tensor ", q, ": shape ", shape_str(t.shape), " x ", dts, " is ", nbytes,
                " bytes but data_offsets [", begin, ", ", end, "] span ", end - begin);
  t.begin = size_t(begin);
  t.end = size_t(end);
  return t;
}

}  // namespace

SafetensorsFile SafetensorsFile::parse_impl(const uint8_t* bytes, size_t size, const std::string& name) {
  if (size < 8) throw Error("file too short for safetensors (", size, " bytes, need at least 8)");
  uint64_t n = 0;
  for (int i = 7; i >= 0; --i) n = (n << 8) | bytes[i];  // little-endian
  if (n > kMaxHeaderBytes)
    throw Error("oversized header: length ", n, " exceeds the ", kMaxHeaderBytes, "-byte cap");
  if (n > size - 8)
    throw Error("truncated file: header length ", n, " but only ", size - 8,
                " bytes follow the length field");
  const uint64_t data_size = size - 8 - n;

  st_detail::DuplicateKey dup;
  const char* hb = reinterpret_cast<const char*>(bytes + 8);
  json h = st_detail::parse_json_unique_keys(hb, hb + n, "header JSON", &dup);
  if (!h.is_object()) throw Error("header is a JSON ", h.type_name(), ", expected an object");
  if (dup.level == 1) throw Error("tensor ", qname(dup.key), ": listed twice in the header");
  if (dup.level > 1 && dup.top == "__metadata__") throw Error("__metadata__: duplicate key ", qname(dup.key));
  if (dup.level > 1) throw Error("tensor ", qname(dup.top), ": duplicate key ", qname(dup.key));

  SafetensorsFile f;
  f.path_ = name;
  f.data_ = bytes + 8 + n;
  f.data_size_ = size_t(data_size);
  for (const auto& [key, v] : h.items()) {
    if (key == "__metadata__") {
      if (!v.is_object()) throw Error("__metadata__ is a JSON ", v.type_name(), ", expected an object");
      for (const auto& [mk, mv] : v.items()) {
        if (!mv.is_string())
          throw Error("__metadata__ ", qname(mk), " is a JSON ", mv.type_name(), ", expected a string");
        f.metadata_[mk] = mv.get<std::string>();
      }
      continue;
    }
    f.tensors_.push_back(parse_entry(key, v, data_size));
  }

  // File order; then no two non-empty ranges may share a byte. Empty tensors occupy nothing.
  std::sort(f.tensors_.begin(), f.tensors_.end(), [](const SafeTensorInfo& a, const SafeTensorInfo& b) {
    return std::tie(a.begin, a.end, a.name) < std::tie(b.begin, b.end, b.name);
  });
  const SafeTensorInfo* last = nullptr;  // the non-empty tensor reaching furthest so far
  for (const auto& t : f.tensors_) {
    if (t.begin == t.end) continue;
    if (last && t.begin < last->end)
      throw Error("tensor ", qname(t.name), ": bytes [", t.begin, ", ", t.end, ") overlap tensor ",
                  qname(last->name), " [", last->begin, ", ", last->end, ")");
    if (!last || t.end > last->end) last = &t;
  }
  for (size_t i = 0; i < f.tensors_.size(); ++i) f.index_[f.tensors_[i].name] = i;
  return f;
}

SafetensorsFile SafetensorsFile::parse(const uint8_t* bytes, size_t size, const std::string& name) {
  ErrorContext ctx(name);
  return parse_impl(bytes, size, name);
}

SafetensorsFile SafetensorsFile::open(const std::string& path) {
  ErrorContext ctx(path);
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open: ", std::strerror(errno));
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    throw Error("cannot stat: ", std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    throw Error("not a regular file");
  }
  const size_t size = size_t(st.st_size);
  if (size < 8) {
    ::close(fd);
    return parse_impl(nullptr, size, path);  // throws "file too short"
  }
  void* p = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  int e = errno;
  ::close(fd);
  if (p == MAP_FAILED) throw Error("cannot mmap ", size, " bytes: ", std::strerror(e));
  std::shared_ptr<void> mapping(p, [size](void* q) { ::munmap(q, size); });
  SafetensorsFile f = parse_impl(static_cast<const uint8_t*>(p), size, path);
  f.mapping_ = std::move(mapping);
  return f;
}

const SafeTensorInfo* SafetensorsFile::find(const std::string& name) const {
  auto it = index_.find(name);
  return it == index_.end() ? nullptr : &tensors_[it->second];
}

Tensor SafetensorsFile::get(const std::string& name) const {
  const SafeTensorInfo* t = find(name);
  if (!t) throw Error(path_, ": no tensor ", qname(name));
  return Tensor::wrap(const_cast<uint8_t*>(data_ + t->begin), t->shape, t->dtype, Device::CPU, mapping_);
}

void SafetensorsFile::read_f32(const SafeTensorInfo& info, float* dst) const {
  // Use our own entry: `info` may come from another file.
  const SafeTensorInfo* t = find(info.name);
  if (!t || t->begin != info.begin || t->end != info.end)
    throw Error(path_, ": tensor ", qname(info.name), ": not an entry of this file");
  const uint8_t* src = data_ + t->begin;
  const size_t n = (t->end - t->begin) / dtype_size(t->dtype);
  switch (t->dtype) {
    case DType::F32:
      if (n) std::memcpy(dst, src, n * 4);
      return;
    case DType::F16:
    case DType::BF16: {
      const bool bf = t->dtype == DType::BF16;
      for (size_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, src + 2 * i, 2);  // data may be unaligned
        dst[i] = bf ? bf16_to_f32(h) : f16_to_f32(h);
      }
      return;
    }
    default:
      throw Error(path_, ": tensor ", qname(t->name), ": read_f32 needs F32, F16 or BF16, not ",
                  dtype_safetensors_name(t->dtype));
  }
}

// ---------------------------------------------------------------------------------------------------
// Sharded sets

namespace {

bool ends_with(const std::string& s, const std::string& suffix) {
  return s.size() >= suffix.size() && s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}

// A shard name from weight_map, relative to the index folder and not leaving it.
std::filesystem::path shard_relpath(const std::string& tensor, const std::string& shard) {
  namespace fs = std::filesystem;
  if (shard.empty()) throw Error("weight_map: tensor ", qname(tensor), ": empty shard name");
  fs::path p(shard);
  if (p.is_absolute() || p.has_root_name() || p.has_root_directory())
    throw Error("weight_map: tensor ", qname(tensor), ": shard ", qname(shard),
                " is an absolute path (shards must lie in the index's folder)");
  for (const auto& part : p)
    if (part == "..")
      throw Error("weight_map: tensor ", qname(tensor), ": shard ", qname(shard),
                  " escapes the index's folder");
  return p.lexically_normal();
}

}  // namespace

SafetensorsSet SafetensorsSet::open(const std::string& path) {
  SafetensorsSet set;
  if (!ends_with(path, ".index.json")) {
    set.files_.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open(path)));
    for (const auto& t : set.files_[0]->tensors()) set.where_[t.name] = {0, &t};
    return set;
  }

  ErrorContext ctx(path);
  std::ifstream in(path, std::ios::binary);
  if (!in) throw Error("cannot open: ", std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw Error("read failed");
  const std::string text = ss.str();

  st_detail::DuplicateKey dup;
  json idx = st_detail::parse_json_unique_keys(text.data(), text.data() + text.size(), "index JSON", &dup);
  if (!idx.is_object()) throw Error("index is a JSON ", idx.type_name(), ", expected an object");
  if (dup.level == 2 && dup.top == "weight_map")
    throw Error("weight_map lists tensor ", qname(dup.key), " twice");
  if (dup.level == 1) throw Error("key ", qname(dup.key), " appears twice");
  if (dup.level > 1) throw Error("key ", qname(dup.key), " appears twice in ", qname(dup.top));
  auto wm = idx.find("weight_map");
  if (wm == idx.end()) throw Error("missing \"weight_map\"");
  if (!wm->is_object()) throw Error("\"weight_map\" is a JSON ", wm->type_name(), ", expected an object");
  auto md = idx.find("metadata");
  if (md != idx.end() && !md->is_object() && !md->is_null())
    throw Error("\"metadata\" is a JSON ", md->type_name(), ", expected an object");

  const std::filesystem::path dir = std::filesystem::path(path).parent_path();
  std::map<std::string, size_t> shard_of;  // normalized shard name -> files_ index
  std::vector<std::string> shard_names;
  for (const auto& [tensor, shard] : wm->items()) {
    if (!shard.is_string())
      throw Error("weight_map: tensor ", qname(tensor), ": shard is a JSON ", shard.type_name(),
                  ", expected a file name");
    const std::string rel = shard_relpath(tensor, shard.get<std::string>()).string();
    auto it = shard_of.find(rel);
    if (it == shard_of.end()) {
      set.files_.push_back(std::make_unique<SafetensorsFile>(SafetensorsFile::open((dir / rel).string())));
      shard_names.push_back(rel);
      it = shard_of.emplace(rel, set.files_.size() - 1).first;
    }
    if (!set.files_[it->second]->find(tensor))
      throw Error("weight_map: tensor ", qname(tensor), " is not in its shard ", qname(rel));
  }
  // Tensors a shard holds but weight_map does not list are kept, as diffusers loads whole shards.
  for (size_t i = 0; i < set.files_.size(); ++i)
    for (const auto& t : set.files_[i]->tensors()) {
      auto [it, fresh] = set.where_.emplace(t.name, std::make_pair(i, &t));
      if (!fresh)
        throw Error("tensor ", qname(t.name), " is in two shards: ", qname(shard_names[it->second.first]),
                    " and ", qname(shard_names[i]));
    }
  return set;
}

std::vector<std::string> SafetensorsSet::names() const {
  std::vector<std::string> out;
  out.reserve(where_.size());
  for (const auto& kv : where_) out.push_back(kv.first);
  return out;
}

std::pair<const SafetensorsFile*, const SafeTensorInfo*> SafetensorsSet::find(const std::string& name) const {
  auto it = where_.find(name);
  if (it == where_.end()) return {nullptr, nullptr};
  return {files_[it->second.first].get(), it->second.second};
}

}  // namespace db
