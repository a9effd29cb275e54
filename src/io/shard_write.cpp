// Shard writer: appends samples to chunked, extendible datasets in PATH.tmp-<pid>, then commit()
// writes the string datasets and num_samples, closes, fsyncs and renames.
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/shard.h"
#include "hdf5_util.h"

namespace db {

namespace {

void write_attr_int(hid_t obj, const char* name, hid_t type, const void* v) {
  h5::Id space(h5::check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  h5::Id a(h5::check(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), name), H5Aclose);
  h5::check_status(H5Awrite(a, type, v), name);
}

void write_attr_str(hid_t obj, const char* name, const std::string& v) {
  h5::Id type = h5::vlen_utf8_type();
  h5::Id space(h5::check(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  h5::Id a(h5::check(H5Acreate2(obj, name, type, space, H5P_DEFAULT, H5P_DEFAULT), name), H5Aclose);
  const char* p = v.c_str();
  h5::check_status(H5Awrite(a, type, &p), name);
}

// An extendible dataset [0, dims...] chunked one sample per chunk.
h5::Id create_sample_dataset(hid_t file, const char* name, hid_t type, std::vector<hsize_t> sample_dims) {
  std::vector<hsize_t> dims{0}, maxdims{H5S_UNLIMITED}, chunk{1};
  for (hsize_t d : sample_dims) dims.push_back(d), maxdims.push_back(d), chunk.push_back(d);
  h5::Id space(h5::check(H5Screate_simple(int(dims.size()), dims.data(), maxdims.data()), name), H5Sclose);
  h5::Id dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), name), H5Pclose);
  h5::check_status(H5Pset_chunk(dcpl, int(chunk.size()), chunk.data()), name);
  return h5::Id(h5::check(H5Dcreate2(file, name, type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT), name),
                H5Dclose);
}

void append_row(hid_t ds, const char* name, hid_t mem_type, int64_t index, const void* data) {
  h5::Id fspace0(h5::check(H5Dget_space(ds), name), H5Sclose);
  int rank = H5Sget_simple_extent_ndims(fspace0);
  std::vector<hsize_t> dims(static_cast<size_t>(rank));
  H5Sget_simple_extent_dims(fspace0, dims.data(), nullptr);
  dims[0] = hsize_t(index + 1);
  h5::check_status(H5Dset_extent(ds, dims.data()), name);
  h5::Id fspace(h5::check(H5Dget_space(ds), name), H5Sclose);
  std::vector<hsize_t> start(size_t(rank), 0), count = dims;
  start[0] = hsize_t(index), count[0] = 1;
  h5::check_status(H5Sselect_hyperslab(fspace, H5S_SELECT_SET, start.data(), nullptr, count.data(), nullptr),
                   name);
  h5::Id mspace(h5::check(H5Screate_simple(rank, count.data(), nullptr), name), H5Sclose);
  h5::check_status(H5Dwrite(ds, mem_type, mspace, fspace, H5P_DEFAULT, data), name);
}

void fsync_path(const std::string& path, bool directory) {
  int fd = ::open(path.c_str(), (directory ? O_RDONLY | O_DIRECTORY : O_RDWR) | O_CLOEXEC);
  DB_CHECK(fd >= 0, "cannot open ", path, " to fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some filesystems refuse fsync on directories (EINVAL); the rename itself is still atomic.
  DB_CHECK(rc == 0 || (directory && err == EINVAL), "cannot fsync ", path, ": ", std::strerror(err));
}

}  // namespace

struct ShardWriter::Impl {
  std::string path, tmp;
  ShardMeta meta;
  h5::Id file, pixels, mean, logvar, ids;
  std::vector<std::string> sources, hashes;
  bool committed = false;

  void close_all() { ids.reset(), logvar.reset(), mean.reset(), pixels.reset(), file.reset(); }
};

ShardWriter::ShardWriter(const std::string& path, const ShardMeta& meta) : impl_(std::make_unique<Impl>()) {
  ErrorContext ctx("shard ", path);
  Impl& m = *impl_;
  m.path = path;
  m.meta = meta;
  m.tmp = path + ".tmp-" + std::to_string(::getpid());
  DB_CHECK(meta.resolution > 0, "resolution must be positive, got ", meta.resolution);
  DB_CHECK(meta.crop == "center" || meta.crop == "random", "crop must be \"center\" or \"random\", got \"",
           meta.crop, "\"");
  DB_CHECK(meta.has_latents() == !meta.vae_fingerprint.empty(),
           "vae_fingerprint must be set exactly when the shard holds latents");
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  std::error_code ec;
  DB_CHECK(parent.empty() || std::filesystem::is_directory(parent, ec), "folder ", parent.string(),
           " does not exist");
  h5::init();
  std::lock_guard<std::mutex> lock(h5::mutex());
  try {
    h5::Id fapl(h5::file_access_plist(), H5Pclose);
    m.file = h5::Id(H5Fcreate(m.tmp.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl), H5Fclose);
    if (!m.file.valid()) {
      std::string e = h5::last_error();
      throw Error("cannot create ", m.tmp, ": ", e);
    }
    const hsize_t R = hsize_t(meta.resolution);
    m.pixels = create_sample_dataset(m.file, "pixels", H5T_STD_U8LE, {R, R, 3});
    if (meta.has_latents()) {
      std::vector<hsize_t> ld{hsize_t(meta.latent_height), hsize_t(meta.latent_width), kShardLatentChannels};
      m.mean = create_sample_dataset(m.file, "latent_mean", H5T_IEEE_F32LE, ld);
      m.logvar = create_sample_dataset(m.file, "latent_logvar", H5T_IEEE_F32LE, ld);
    }
    m.ids = create_sample_dataset(m.file, "prompt_ids", H5T_STD_I32LE, {kShardPromptLength});
    int32_t version = kShardSchemaVersion, res = meta.resolution;
    write_attr_int(m.file, "schema_version", H5T_STD_I32LE, &version);
    write_attr_int(m.file, "resolution", H5T_STD_I32LE, &res);
    write_attr_str(m.file, "crop", meta.crop);
    write_attr_str(m.file, "prompt", meta.prompt);
    write_attr_str(m.file, "tokenizer_fingerprint", meta.tokenizer_fingerprint);
    write_attr_str(m.file, "vae_fingerprint", meta.vae_fingerprint);
    write_attr_str(m.file, "created_by", meta.created_by);
  } catch (...) {
    m.close_all();
    std::remove(m.tmp.c_str());
    throw;
  }
}

ShardWriter::~ShardWriter() {
  if (!impl_ || impl_->committed) return;
  std::lock_guard<std::mutex> lock(h5::mutex());
  impl_->close_all();
  std::remove(impl_->tmp.c_str());
}

int64_t ShardWriter::size() const {
  return int64_t(impl_->sources.size());
}
const std::string& ShardWriter::tmp_path() const {
  return impl_->tmp;
}

void ShardWriter::append(const ShardSample& s) {
  Impl& m = *impl_;
  ErrorContext ctx("shard ", m.path);
  DB_CHECK(!m.committed, "append after commit");
  DB_CHECK(s.pixels && s.prompt_ids, "sample ", m.sources.size(), ": pixels and prompt_ids are required");
  DB_CHECK(!m.meta.has_latents() || (s.latent_mean && s.latent_logvar), "sample ", m.sources.size(),
           ": this shard holds latents but the sample has none");
  DB_CHECK(s.sha256.size() == 64, "sample ", m.sources.size(), ": sha256 must be 64 hex characters");
  const int64_t i = int64_t(m.sources.size());
  std::lock_guard<std::mutex> lock(h5::mutex());
  append_row(m.pixels, "write pixels", H5T_NATIVE_UINT8, i, s.pixels);
  if (m.meta.has_latents()) {
    append_row(m.mean, "write latent_mean", H5T_NATIVE_FLOAT, i, s.latent_mean);
    append_row(m.logvar, "write latent_logvar", H5T_NATIVE_FLOAT, i, s.latent_logvar);
  }
  append_row(m.ids, "write prompt_ids", H5T_NATIVE_INT32, i, s.prompt_ids);
  m.sources.push_back(s.source_path);
  m.hashes.push_back(s.sha256);
}

void ShardWriter::commit() {
  Impl& m = *impl_;
  ErrorContext ctx("shard ", m.path);
  DB_CHECK(!m.committed, "commit called twice");
  {
    std::lock_guard<std::mutex> lock(h5::mutex());
    const hsize_t n = m.sources.size();
    hsize_t maxn = H5S_UNLIMITED;
    {
      // Variable-length UTF-8 paths.
      h5::Id type = h5::vlen_utf8_type();
      h5::Id space(h5::check(H5Screate_simple(1, &n, &maxn), "source_path"), H5Sclose);
      h5::Id dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), "source_path"), H5Pclose);
      hsize_t chunk = std::max<hsize_t>(1, std::min<hsize_t>(n, 1024));
      h5::check_status(H5Pset_chunk(dcpl, 1, &chunk), "source_path");
      h5::Id ds(h5::check(H5Dcreate2(m.file, "source_path", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                          "create source_path"),
                H5Dclose);
      std::vector<const char*> ptrs;
      for (const std::string& s : m.sources) ptrs.push_back(s.c_str());
      if (n)
        h5::check_status(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, ptrs.data()), "write source_path");
    }
    {
      // Fixed 64-byte ASCII hex digests.
      h5::Id type(h5::check(H5Tcopy(H5T_C_S1), "sha256"), H5Tclose);
      h5::check_status(H5Tset_size(type, 64), "sha256");
      h5::check_status(H5Tset_strpad(type, H5T_STR_NULLPAD), "sha256");
      h5::Id space(h5::check(H5Screate_simple(1, &n, &maxn), "sha256"), H5Sclose);
      h5::Id dcpl(h5::check(H5Pcreate(H5P_DATASET_CREATE), "sha256"), H5Pclose);
      hsize_t chunk = std::max<hsize_t>(1, std::min<hsize_t>(n, 1024));
      h5::check_status(H5Pset_chunk(dcpl, 1, &chunk), "sha256");
      h5::Id ds(h5::check(H5Dcreate2(m.file, "sha256", type, space, H5P_DEFAULT, dcpl, H5P_DEFAULT),
                          "create sha256"),
                H5Dclose);
      std::string flat;
      for (const std::string& h : m.hashes) flat += h;
      if (n) h5::check_status(H5Dwrite(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat.data()), "write sha256");
    }
    int64_t count = int64_t(n);
    write_attr_int(m.file, "num_samples", H5T_STD_I64LE, &count);
    h5::check_status(H5Fflush(m.file, H5F_SCOPE_GLOBAL), "H5Fflush");
    m.ids.reset(), m.logvar.reset(), m.mean.reset(), m.pixels.reset();
    hid_t f = m.file.release();  // closed here so that H5Fclose's own failure is reported
    h5::check_status(H5Fclose(f), "H5Fclose");
  }
  try {
    fsync_path(m.tmp, false);
    DB_CHECK(std::rename(m.tmp.c_str(), m.path.c_str()) == 0, "cannot rename ", m.tmp, " to ", m.path, ": ",
             std::strerror(errno));
    std::string dir = std::filesystem::path(m.path).parent_path().string();
    fsync_path(dir.empty() ? "." : dir, true);
  } catch (...) {
    std::remove(m.tmp.c_str());
    throw;
  }
  m.committed = true;
}

}  // namespace db
