// safetensors writer: atomic (PATH.tmp-PID, fsync, rename), header padded to 8 bytes as in Rust.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"
#include "safetensors_internal.h"

namespace db {

namespace {

// Owns the temporary file until commit(): on any exit before that it is closed and removed.
class TempFile {
 public:
  explicit TempFile(std::string final_path)
      : final_(std::move(final_path)), tmp_(final_ + ".tmp-" + std::to_string(::getpid())) {
    fd_ = ::open(tmp_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd_ < 0) throw Error("cannot create ", tmp_, ": ", std::strerror(errno));
  }
  ~TempFile() {
    if (fd_ >= 0) ::close(fd_);
    if (!committed_) ::unlink(tmp_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  void write(const void* p, size_t n) {
    const char* c = static_cast<const char*>(p);
    while (n > 0) {
      ssize_t w = ::write(fd_, c, n);
      if (w < 0) {
        if (errno == EINTR) continue;
        throw Error("writing ", tmp_, ": ", std::strerror(errno));
      }
      c += w;
      n -= size_t(w);
    }
  }

  void commit() {
    if (::fsync(fd_) != 0) throw Error("fsync ", tmp_, ": ", std::strerror(errno));
    int fd = fd_;
    fd_ = -1;
    if (::close(fd) != 0) throw Error("closing ", tmp_, ": ", std::strerror(errno));
    if (::rename(tmp_.c_str(), final_.c_str()) != 0)
      throw Error("renaming ", tmp_, " to ", final_, ": ", std::strerror(errno));
    committed_ = true;
    // Make the rename itself durable; a failure here leaves a complete file, so it is not an error.
    std::string dir = std::filesystem::path(final_).parent_path().string();
    int dfd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      ::fsync(dfd);
      ::close(dfd);
    }
  }

 private:
  std::string final_, tmp_;
  int fd_ = -1;
  bool committed_ = false;
};

}  // namespace

void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  using st_detail::qname;
  ErrorContext ctx(path);
  // ordered_json keeps __metadata__ first and tensors in the given (= data) order.
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    auto& m = h["__metadata__"] = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) m[k] = v;
  }
  std::set<std::string> seen;
  uint64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    DB_CHECK(name != "__metadata__", "tensor name '__metadata__' is reserved");
    DB_CHECK(seen.insert(name).second, "tensor ", qname(name), ": name given twice");
    DB_CHECK(t.defined(), "tensor ", qname(name), ": undefined tensor");
    DB_CHECK(t.device() == Device::CPU, "tensor ", qname(name), ": not a CPU tensor");
    const uint64_t n = t.nbytes();
    h[name] = {{"dtype", dtype_safetensors_name(t.dtype())},
               {"shape", t.shape()},
               {"data_offsets", {offset, offset + n}}};
    offset += n;
  }
  std::string header;
  try {
    header = h.dump();
  } catch (const nlohmann::json::exception& e) {  // names and metadata must be valid UTF-8
    throw Error("cannot encode header: ", st_detail::one_line(e.what()));
  }
  header.append((8 - header.size() % 8) % 8, ' ');

  uint8_t len[8];
  for (int i = 0; i < 8; ++i) len[i] = uint8_t(uint64_t(header.size()) >> (8 * i));  // little-endian
  TempFile f(path);
  f.write(len, 8);
  f.write(header.data(), header.size());
  for (const auto& [name, t] : tensors)
    if (t.nbytes()) f.write(t.raw(), t.nbytes());
  f.commit();
}

}  // namespace db
