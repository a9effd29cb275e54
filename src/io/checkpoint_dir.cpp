#include "dreambooth/io/checkpoint_dir.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "dreambooth/core/error.h"

namespace fs = std::filesystem;

namespace db {
namespace {

bool parse_checkpoint_name(const std::string& name, int64_t* step) {
  const std::string prefix = "checkpoint-";
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
  const std::string digits = name.substr(prefix.size());
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  if (digits.size() > 18) return false;
  *step = std::stoll(digits);
  return true;
}

bool is_stale_tmp(const std::string& name) {
  return name.rfind(".checkpoint-", 0) == 0 && name.find(".tmp-") != std::string::npos;
}

}  // namespace

void fsync_path(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error(path, ": cannot open for fsync: ", std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  if (rc != 0 && err != EINVAL) throw Error(path, ": fsync failed: ", std::strerror(err));
}

AtomicDir::AtomicDir(const std::string& final_path) : final_(final_path) {
  fs::path f(final_path);
  fs::path parent = f.parent_path().empty() ? fs::path(".") : f.parent_path();
  DB_CHECK(fs::is_directory(parent), parent.string(), ": output folder does not exist");
  tmp_ = (parent / ("." + f.filename().string() + ".tmp-" + std::to_string(::getpid()))).string();
  std::error_code ec;
  fs::remove_all(tmp_, ec);
  if (!fs::create_directory(tmp_, ec) || ec)
    throw Error(tmp_, ": cannot create folder: ", ec ? ec.message() : "already exists");
}

AtomicDir::~AtomicDir() {
  if (!committed_) {
    std::error_code ec;
    fs::remove_all(tmp_, ec);
  }
}

void AtomicDir::commit() {
  fsync_path(tmp_);
  std::error_code ec;
  if (fs::exists(final_)) {
    // Replacing an existing folder cannot be one rename; move the old one aside first so that a
    // crash in between leaves the old content under a temporary (ignored) name, never a mix.
    std::string old = tmp_ + ".old";
    fs::rename(final_, old, ec);
    if (ec) throw Error(final_, ": cannot move the previous folder aside: ", ec.message());
    fs::rename(tmp_, final_, ec);
    if (ec) throw Error(final_, ": cannot rename ", tmp_, " into place: ", ec.message());
    fs::remove_all(old, ec);
  } else {
    fs::rename(tmp_, final_, ec);
    if (ec) throw Error(final_, ": cannot rename ", tmp_, " into place: ", ec.message());
  }
  committed_ = true;
  fs::path parent = fs::path(final_).parent_path();
  fsync_path(parent.empty() ? "." : parent.string());
}

std::string checkpoint_name(int64_t step) {
  return "checkpoint-" + std::to_string(step);
}

std::vector<std::pair<std::string, uint64_t>> checkpoint_files(const std::string& dir) {
  std::vector<std::pair<std::string, uint64_t>> out;
  for (const auto& e : fs::recursive_directory_iterator(dir)) {
    if (!e.is_regular_file()) continue;
    out.emplace_back(fs::relative(e.path(), dir).generic_string(), uint64_t(e.file_size()));
  }
  std::sort(out.begin(), out.end());
  return out;
}

std::string checkpoint_incomplete_reason(const std::string& dir) {
  const fs::path root(dir);
  std::error_code ec;
  if (!fs::is_regular_file(root / "state.json", ec)) return "state.json is missing";
  nlohmann::json s;
  {
    std::ifstream f(root / "state.json");
    s = nlohmann::json::parse(f, nullptr, false);
  }
  if (s.is_discarded() || !s.is_object()) return "state.json does not parse";
  if (!s.contains("files")) {  // written before the manifest existed
    for (const char* need : {"unet", "text_encoder", "optimizer.safetensors"})
      if (!fs::exists(root / need, ec)) return str_cat(need, " is missing");
    return "";
  }
  const auto& files = s["files"];
  if (!files.is_object() || files.empty()) return "state.json has no file list";
  for (const auto& [rel, size] : files.items()) {
    if (!size.is_number_unsigned()) return str_cat("state.json: bad size of ", rel);
    const fs::path p = root / rel;
    if (!fs::is_regular_file(p, ec)) return str_cat(rel, " is missing");
    const uint64_t have = fs::file_size(p, ec);
    if (ec || have != size.get<uint64_t>())
      return str_cat(rel, " has ", have, " bytes, state.json lists ", size.get<uint64_t>());
  }
  return "";
}

std::vector<CheckpointEntry> list_checkpoints(const std::string& out_dir) {
  std::vector<CheckpointEntry> out;
  std::error_code ec;
  if (!fs::is_directory(out_dir, ec)) return out;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    int64_t step = 0;
    if (!e.is_directory() || !parse_checkpoint_name(e.path().filename().string(), &step)) continue;
    if (!checkpoint_incomplete_reason(e.path().string()).empty()) continue;
    out.push_back({step, e.path().string()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.step < b.step; });
  return out;
}

std::string resolve_resume(const std::string& out_dir, const std::string& resume) {
  if (resume == "latest" || resume == "auto") {
    auto all = list_checkpoints(out_dir);
    if (all.empty() && resume == "auto") return "";
    DB_CHECK(!all.empty(), "--resume latest: no complete checkpoint-STEP folder in ", out_dir);
    return all.back().path;
  }
  DB_CHECK(fs::is_directory(resume), "--resume ", resume, ": no such checkpoint folder");
  const std::string why = checkpoint_incomplete_reason(resume);
  DB_CHECK(why.empty(), "--resume ", resume, ": not a complete checkpoint (", why, ")");
  return resume;
}

std::vector<std::string> prune_checkpoints(const std::string& out_dir, int keep) {
  std::vector<std::string> removed;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(out_dir, ec)) {
    const std::string name = e.path().filename().string();
    // Another live process's tmp folder would have its pid; ours are gone by now. Only our own
    // naming pattern is ever removed.
    if (e.is_directory() && is_stale_tmp(name) &&
        name.find(".tmp-" + std::to_string(::getpid())) == std::string::npos) {
      fs::remove_all(e.path(), ec);
      removed.push_back(e.path().string());
    }
  }
  if (keep <= 0) return removed;
  auto all = list_checkpoints(out_dir);
  for (size_t i = 0; i + size_t(keep) < all.size(); ++i) {
    fs::remove_all(all[i].path, ec);
    if (ec) throw Error(all[i].path, ": cannot remove old checkpoint: ", ec.message());
    removed.push_back(all[i].path);
  }
  return removed;
}

}  // namespace db
