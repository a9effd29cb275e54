#pragma once
// Protection of a `train --out` folder (issue 16):
//
//   check_out_not_model(out, model);   // --out may not be, contain or lie inside --model
//   OutLock lock(out);                  // OUT/.dreambooth.lock, created with O_EXCL; removed by ~OutLock
//
// The lock file holds "host H", "pid P" and "slurm_job J" lines. A second run finds it and fails with
// OutLockHeld naming the holder. A lock is stale, and is taken over with a warning, when its holder ran
// on this host and that pid is gone (a run killed with SIGKILL), or when it was written by an earlier
// run of this same Slurm job (a requeued job restarts on any node). A stale lock of another host and
// job cannot be told from a live one: the message says to remove the file.
#include <stdexcept>
#include <string>

namespace db {

constexpr const char* kOutLockName = ".dreambooth.lock";

struct OutLockHolder {
  std::string host, slurm_job;
  long pid = 0;
};

class OutLockHeld : public std::runtime_error {
 public:
  OutLockHeld(const std::string& msg, OutLockHolder h) : std::runtime_error(msg), holder(std::move(h)) {}
  OutLockHolder holder;
};

class OutLock {
 public:
  OutLock() = default;
  explicit OutLock(const std::string& out_dir);  // out_dir must exist; throws OutLockHeld or Error
  ~OutLock();
  OutLock(OutLock&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  OutLock& operator=(OutLock&& o) noexcept {
    if (this != &o) release(), path_ = std::move(o.path_), o.path_.clear();
    return *this;
  }
  OutLock(const OutLock&) = delete;
  const std::string& path() const { return path_; }
  void release();  // removes the lock file if it is still ours

 private:
  std::string path_;
};

OutLockHolder read_out_lock(const std::string& lock_path);  // pid 0 when unreadable
std::string this_host();

// Throws UsageError when `out` is `model` (also through a symbolic link), lies inside it, or contains it.
void check_out_not_model(const std::string& out, const std::string& model);

}  // namespace db
