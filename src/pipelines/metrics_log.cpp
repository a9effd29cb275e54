#include "dreambooth/pipelines/metrics_log.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"

namespace db {

MetricsTrim truncate_metrics(const std::string& path, int64_t step) {
  MetricsTrim t;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return t;
  std::ifstream in(path, std::ios::binary);
  DB_CHECK(in, path, ": cannot read the metrics file: ", std::strerror(errno));
  const std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  in.close();
  size_t keep = 0;  // bytes kept: whole lines only
  while (keep < all.size()) {
    const size_t nl = all.find('\n', keep);
    if (nl == std::string::npos) break;  // a torn last line
    const auto j = nlohmann::json::parse(all.begin() + long(keep), all.begin() + long(nl), nullptr, false);
    const bool has_step = j.is_object() && j.contains("step") && j["step"].is_number_integer();
    if (has_step && j["step"].get<int64_t>() > step) break;
    if (has_step)
      t.last_step = j["step"].get<int64_t>();
    else
      ++t.unparsed_kept;
    ++t.lines_kept;
    keep = nl + 1;
  }
  t.bytes_cut = int64_t(all.size() - keep);
  if (t.bytes_cut == 0) return t;
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  DB_CHECK(fd >= 0, path, ": cannot open the metrics file to truncate it: ", std::strerror(errno));
  const bool ok = ::ftruncate(fd, off_t(keep)) == 0 && ::fsync(fd) == 0;
  const int err = errno;
  ::close(fd);
  DB_CHECK(ok, path, ": cannot truncate the metrics file: ", std::strerror(err));
  return t;
}

MetricsLog::MetricsLog(const std::string& path, bool truncate) : path_(path) {
  fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0644);
  DB_CHECK(fd_ >= 0, path, ": cannot open the metrics file for writing: ", std::strerror(errno));
}

MetricsLog::~MetricsLog() {
  if (fd_ >= 0) ::close(fd_);
}

MetricsLog& MetricsLog::operator=(MetricsLog&& o) noexcept {
  if (this != &o) {
    if (fd_ >= 0) ::close(fd_);
    path_ = std::move(o.path_);
    fd_ = o.fd_;
    o.fd_ = -1;
  }
  return *this;
}

void MetricsLog::append_line(const std::string& line) {
  DB_CHECK(fd_ >= 0, "metrics file is not open");
  const std::string text = line + "\n";
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0)
      throw Error(path_, ": cannot write the metrics line (", done, " of ", text.size(),
                  " bytes written): ", n < 0 ? std::strerror(errno) : "no progress");
    done += size_t(n);
  }
}

void MetricsLog::sync() {
  if (fd_ < 0) return;
  if (::fsync(fd_) != 0 && errno != EINVAL && errno != EROFS)
    throw Error(path_, ": cannot fsync the metrics file: ", std::strerror(errno));
}

}  // namespace db
