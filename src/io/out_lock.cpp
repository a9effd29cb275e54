#include "dreambooth/io/out_lock.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "dreambooth/core/error.h"
#include "dreambooth/core/log.h"

namespace fs = std::filesystem;

namespace db {
namespace {

std::string slurm_job() {
  const char* j = std::getenv("SLURM_JOB_ID");
  return j ? j : "";
}

std::string lock_text() {
  return str_cat("host ", this_host(), "\npid ", long(::getpid()), "\nslurm_job ", slurm_job(), "\n");
}

bool pid_alive(long pid) {
  return pid > 0 && (::kill(pid_t(pid), 0) == 0 || errno == EPERM);
}

// Why the holder is gone, or "" when it may be alive.
std::string stale_reason(const OutLockHolder& h) {
  if (h.pid <= 0) return "";
  if (h.host == this_host() && !pid_alive(h.pid)) return str_cat("process ", h.pid, " is gone");
  if (!h.slurm_job.empty() && h.slurm_job == slurm_job() && !(h.host == this_host() && h.pid == ::getpid()))
    return str_cat("it was written by an earlier run of this Slurm job (", h.slurm_job, ")");
  return "";
}

fs::path canonical_or_lexical(const std::string& p) {
  std::error_code ec;
  fs::path c = fs::weakly_canonical(fs::absolute(p), ec);
  return ec ? fs::absolute(p).lexically_normal() : c;
}

bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i) {
    if (o->empty()) continue;  // a trailing separator
    if (i == inner.end() || *i != *o) return false;
  }
  return true;
}

}  // namespace

std::string this_host() {
  char buf[256] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "?";
  return buf;
}

OutLockHolder read_out_lock(const std::string& lock_path) {
  OutLockHolder h;
  std::ifstream f(lock_path);
  std::string line;
  while (std::getline(f, line)) {
    const size_t sp = line.find(' ');
    const std::string key = line.substr(0, sp), value = sp == std::string::npos ? "" : line.substr(sp + 1);
    if (key == "host") h.host = value;
    if (key == "pid") h.pid = std::atol(value.c_str());
    if (key == "slurm_job") h.slurm_job = value;
  }
  return h;
}

OutLock::OutLock(const std::string& out_dir) {
  const std::string path = (fs::path(out_dir) / kOutLockName).string();
  for (int attempt = 0; attempt < 3; ++attempt) {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd >= 0) {
      const std::string text = lock_text();
      const bool ok = ::write(fd, text.data(), text.size()) == ssize_t(text.size()) && ::fsync(fd) == 0;
      const int err = errno;
      ::close(fd);
      if (!ok) {
        ::unlink(path.c_str());
        throw Error(path, ": cannot write the lock file: ", std::strerror(err));
      }
      path_ = path;
      return;
    }
    if (errno != EEXIST) throw Error(path, ": cannot create the lock file: ", std::strerror(errno));
    const OutLockHolder h = read_out_lock(path);
    if (h.pid <= 0) {
      // Being written right now, or truncated by a crash: give a writer a moment.
      ::usleep(200000);
      if (read_out_lock(path).pid <= 0 && attempt == 1) {
        log_warn(path, ": taking over an unreadable lock file");
        ::unlink(path.c_str());
      }
      continue;
    }
    const std::string why = stale_reason(h);
    if (why.empty())
      throw OutLockHeld(str_cat("--out ", out_dir, " is in use by another run: host ", h.host, " pid ", h.pid,
                                h.slurm_job.empty() ? "" : " (Slurm job " + h.slurm_job + ")", "; lock file ",
                                path, " (remove it if that run is gone)"),
                        h);
    log_warn(path, ": taking over a stale lock (host ", h.host, " pid ", h.pid, "): ", why);
    ::unlink(path.c_str());
  }
  throw Error(path, ": cannot take the lock file (another run keeps creating it?)");
}

OutLock::~OutLock() {
  release();
}

void OutLock::release() {
  if (path_.empty()) return;
  const OutLockHolder h = read_out_lock(path_);
  if (h.pid == long(::getpid()) && h.host == this_host()) ::unlink(path_.c_str());
  path_.clear();
}

void check_out_not_model(const std::string& out, const std::string& model) {
  const fs::path o = canonical_or_lexical(out), m = canonical_or_lexical(model);
  std::error_code ec;
  if (o == m || fs::equivalent(out, model, ec))
    throw UsageError(str_cat("train: --out ", out, " is the base model folder --model ", model,
                             " (the base model is never written: choose another --out)"));
  if (is_within(o, m))
    throw UsageError(str_cat("train: --out ", out, " lies inside the base model folder ", model));
  if (is_within(m, o))
    throw UsageError(str_cat("train: --out ", out, " contains the base model folder ", model));
}

}  // namespace db
