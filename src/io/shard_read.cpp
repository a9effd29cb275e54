// Shard reader: validates schema v1 on open, then reads one sample (one chunk) per call.
#include <filesystem>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/shard.h"
#include "hdf5_util.h"

namespace db {

namespace {

bool has_attr(hid_t obj, const char* name) {
  return H5Aexists(obj, name) > 0;
}

int64_t read_attr_int(hid_t obj, const char* name) {
  DB_CHECK(has_attr(obj, name), "missing attribute '", name, "'");
  h5::Id a(h5::check(H5Aopen(obj, name, H5P_DEFAULT), name), H5Aclose);
  h5::Id t(h5::check(H5Aget_type(a), name), H5Tclose);
  DB_CHECK(H5Tget_class(t) == H5T_INTEGER, "attribute '", name, "' is not an integer");
  int64_t v = 0;
  h5::check_status(H5Aread(a, H5T_NATIVE_INT64, &v), name);
  return v;
}

std::string read_attr_str(hid_t obj, const char* name) {
  DB_CHECK(has_attr(obj, name), "missing attribute '", name, "'");
  h5::Id a(h5::check(H5Aopen(obj, name, H5P_DEFAULT), name), H5Aclose);
  h5::Id t(h5::check(H5Aget_type(a), name), H5Tclose);
  DB_CHECK(H5Tget_class(t) == H5T_STRING, "attribute '", name, "' is not a string");
  if (H5Tis_variable_str(t) > 0) {
    h5::Id mt = h5::vlen_utf8_type();
    char* p = nullptr;
    h5::check_status(H5Aread(a, mt, &p), name);
    std::string s = p ? p : "";
    H5free_memory(p);
    return s;
  }
  size_t n = H5Tget_size(t);
  std::string s(n, '\0');
  h5::check_status(H5Aread(a, t, s.data()), name);
  return s.substr(0, s.find('\0'));
}

// Shape of a dataset; checks its type class and element size.
std::vector<hsize_t> dataset_shape(hid_t ds, const char* name, H5T_class_t cls, size_t elem, bool is_signed) {
  h5::Id t(h5::check(H5Dget_type(ds), name), H5Tclose);
  DB_CHECK(H5Tget_class(t) == cls && (cls == H5T_STRING || H5Tget_size(t) == elem), "dataset '", name,
           "' has the wrong type");
  if (cls == H5T_INTEGER)
    DB_CHECK((H5Tget_sign(t) == H5T_SGN_2) == is_signed, "dataset '", name, "' has the wrong signedness");
  h5::Id s(h5::check(H5Dget_space(ds), name), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(s);
  DB_CHECK(rank > 0, "dataset '", name, "' has no shape");
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(s, dims.data(), nullptr);
  return dims;
}

std::string dims_str(const std::vector<hsize_t>& d) {
  std::string s = "[";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + "]";
}

h5::Id open_file(const std::string& path) {
  std::error_code ec;
  DB_CHECK(std::filesystem::is_regular_file(path, ec), "no such file");
  h5::Id fapl(h5::file_access_plist(), H5Pclose);
  hid_t f = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl);
  if (f < 0) {
    std::string e = h5::last_error();
    throw Error("cannot open as HDF5", e.empty() ? "" : ": ", e);
  }
  return h5::Id(f, H5Fclose);
}

int check_version(hid_t file) {
  DB_CHECK(has_attr(file, "schema_version"), "not a dreambooth shard (no 'schema_version' attribute)");
  int64_t v = read_attr_int(file, "schema_version");
  DB_CHECK(v == kShardSchemaVersion, "shard schema version ", v,
           " is not supported (this build reads version ", kShardSchemaVersion,
           "); re-run `dreambooth prepare`");
  return int(v);
}

ShardMeta read_meta(hid_t file) {
  ShardMeta m;
  m.resolution = int(read_attr_int(file, "resolution"));
  m.crop = read_attr_str(file, "crop");
  m.prompt = read_attr_str(file, "prompt");
  m.tokenizer_fingerprint = read_attr_str(file, "tokenizer_fingerprint");
  m.vae_fingerprint = read_attr_str(file, "vae_fingerprint");
  m.created_by = read_attr_str(file, "created_by");
  return m;
}

}  // namespace

struct ShardReader::Impl {
  std::string path;
  ShardMeta meta;
  int64_t n = 0;
  h5::Id file, pixels, mean, logvar, ids, sources, hashes;

  void read_row(hid_t ds, hid_t mem_type, int64_t i, const std::vector<hsize_t>& row_dims, void* out) const {
    DB_CHECK(i >= 0 && i < n, "sample index ", i, " out of range [0, ", n, ")");
    std::vector<hsize_t> start(row_dims.size() + 1, 0), count{1};
    start[0] = hsize_t(i);
    count.insert(count.end(), row_dims.begin(), row_dims.end());
    h5::Id fspace(h5::check(H5Dget_space(ds), "H5Dget_space"), H5Sclose);
    h5::check_status(
        H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
        "select sample");
    h5::Id mspace(h5::check(H5Screate_simple(int(count.size()), count.data(), nullptr), "H5Screate"),
                  H5Sclose);
    h5::check_status(H5Dread(ds, mem_type, mspace, fspace, H5P_DEFAULT, out), "read sample");
  }
};

ShardReader::ShardReader(const std::string& path, int expected_resolution) : impl_(std::make_unique<Impl>()) {
  ErrorContext ctx("shard ", path);
  h5::init();
  std::lock_guard<std::mutex> lock(h5::mutex());
  Impl& m = *impl_;
  m.path = path;
  m.file = open_file(path);
  check_version(m.file);
  m.meta = read_meta(m.file);
  m.n = read_attr_int(m.file, "num_samples");
  const int R = m.meta.resolution;
  DB_CHECK(R > 0, "resolution attribute is ", R);
  DB_CHECK(expected_resolution <= 0 || R == expected_resolution, "resolution is ", R, " but ",
           expected_resolution, " was requested; re-run `dreambooth prepare --resolution ",
           expected_resolution, "`");
  DB_CHECK(m.meta.crop == "center" || m.meta.crop == "random", "unknown crop '", m.meta.crop, "'");
  auto open_ds = [&](const char* name, bool required) {
    if (H5Lexists(m.file, name, H5P_DEFAULT) <= 0) {
      DB_CHECK(!required, "missing dataset '", name, "'");
      return h5::Id();
    }
    return h5::Id(h5::check(H5Dopen2(m.file, name, H5P_DEFAULT), name), H5Dclose);
  };
  auto expect = [&](const char* name, const std::vector<hsize_t>& got, const std::vector<hsize_t>& want) {
    DB_CHECK(got == want, "dataset '", name, "' has shape ", dims_str(got), ", expected ", dims_str(want));
  };
  const hsize_t N = hsize_t(m.n), HR = hsize_t(R);
  m.pixels = open_ds("pixels", true);
  expect("pixels", dataset_shape(m.pixels, "pixels", H5T_INTEGER, 1, false), {N, HR, HR, 3});
  m.ids = open_ds("prompt_ids", true);
  expect("prompt_ids", dataset_shape(m.ids, "prompt_ids", H5T_INTEGER, 4, true), {N, kShardPromptLength});
  m.sources = open_ds("source_path", true);
  expect("source_path", dataset_shape(m.sources, "source_path", H5T_STRING, 0, false), {N});
  m.hashes = open_ds("sha256", true);
  expect("sha256", dataset_shape(m.hashes, "sha256", H5T_STRING, 0, false), {N});
  m.mean = open_ds("latent_mean", false);
  m.logvar = open_ds("latent_logvar", false);
  DB_CHECK(m.mean.valid() == m.logvar.valid(),
           "latent_mean and latent_logvar must both be present or absent");
  if (m.mean.valid()) {
    std::vector<hsize_t> d = dataset_shape(m.mean, "latent_mean", H5T_FLOAT, 4, true);
    DB_CHECK(d.size() == 4 && d[0] == N && d[3] == kShardLatentChannels, "dataset 'latent_mean' has shape ",
             dims_str(d), ", expected [", N, ", h, w, 4]");
    expect("latent_logvar", dataset_shape(m.logvar, "latent_logvar", H5T_FLOAT, 4, true), d);
    m.meta.latent_height = int(d[1]);
    m.meta.latent_width = int(d[2]);
    DB_CHECK(!m.meta.vae_fingerprint.empty(), "holds latents but vae_fingerprint is empty");
  }
}

ShardReader::~ShardReader() {
  if (!impl_) return;
  std::lock_guard<std::mutex> lock(h5::mutex());
  impl_.reset();
}

const std::string& ShardReader::path() const {
  return impl_->path;
}
const ShardMeta& ShardReader::meta() const {
  return impl_->meta;
}
int64_t ShardReader::size() const {
  return impl_->n;
}
int64_t ShardReader::pixels_per_sample() const {
  return int64_t(impl_->meta.resolution) * impl_->meta.resolution * 3;
}
int64_t ShardReader::latent_elems_per_sample() const {
  return int64_t(impl_->meta.latent_height) * impl_->meta.latent_width * kShardLatentChannels;
}

void ShardReader::read_pixels(int64_t i, uint8_t* out) const {
  ErrorContext ctx("shard ", impl_->path);
  std::lock_guard<std::mutex> lock(h5::mutex());
  const hsize_t R = hsize_t(impl_->meta.resolution);
  impl_->read_row(impl_->pixels, H5T_NATIVE_UINT8, i, {R, R, 3}, out);
}

void ShardReader::read_latents(int64_t i, float* mean, float* logvar) const {
  ErrorContext ctx("shard ", impl_->path);
  DB_CHECK(impl_->meta.has_latents(), "holds no latents (prepared without a VAE)");
  std::lock_guard<std::mutex> lock(h5::mutex());
  std::vector<hsize_t> d{hsize_t(impl_->meta.latent_height), hsize_t(impl_->meta.latent_width),
                         kShardLatentChannels};
  impl_->read_row(impl_->mean, H5T_NATIVE_FLOAT, i, d, mean);
  impl_->read_row(impl_->logvar, H5T_NATIVE_FLOAT, i, d, logvar);
}

void ShardReader::read_prompt_ids(int64_t i, int32_t* out) const {
  ErrorContext ctx("shard ", impl_->path);
  std::lock_guard<std::mutex> lock(h5::mutex());
  impl_->read_row(impl_->ids, H5T_NATIVE_INT32, i, {kShardPromptLength}, out);
}

std::string ShardReader::source_path(int64_t i) const {
  ErrorContext ctx("shard ", impl_->path);
  std::lock_guard<std::mutex> lock(h5::mutex());
  h5::Id type = h5::vlen_utf8_type();
  char* p = nullptr;
  impl_->read_row(impl_->sources, type, i, {}, &p);
  std::string s = p ? p : "";
  H5free_memory(p);
  return s;
}

std::string ShardReader::sha256(int64_t i) const {
  ErrorContext ctx("shard ", impl_->path);
  std::lock_guard<std::mutex> lock(h5::mutex());
  h5::Id type(h5::check(H5Tcopy(H5T_C_S1), "sha256"), H5Tclose);
  h5::check_status(H5Tset_size(type, 64), "sha256");
  h5::check_status(H5Tset_strpad(type, H5T_STR_NULLPAD), "sha256");
  char buf[64];
  impl_->read_row(impl_->hashes, type, i, {}, buf);
  return std::string(buf, 64).substr(0, std::string(buf, 64).find('\0'));
}

ShardMeta read_shard_meta(const std::string& path, int* schema_version, int64_t* num_samples) {
  ErrorContext ctx("shard ", path);
  h5::init();
  std::lock_guard<std::mutex> lock(h5::mutex());
  h5::Id file = open_file(path);
  DB_CHECK(has_attr(file, "schema_version"), "not a dreambooth shard (no 'schema_version' attribute)");
  int v = int(read_attr_int(file, "schema_version"));
  if (schema_version) *schema_version = v;
  DB_CHECK(v == kShardSchemaVersion, "shard schema version ", v,
           " is not supported (this build reads version ", kShardSchemaVersion, ")");
  ShardMeta m = read_meta(file);
  if (num_samples) *num_samples = read_attr_int(file, "num_samples");
  return m;
}

}  // namespace db
