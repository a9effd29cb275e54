#pragma once
// Checkpoint folders: OUT/checkpoint-STEP/, written atomically and pruned to the last K.
//
// A checkpoint is built in a temporary sibling folder (OUT/.checkpoint-STEP.tmp-PID), every file in it
// is fsynced by its writer, then the folder is renamed into place and OUT is fsynced. A crash at any
// point leaves either the complete new checkpoint or none: temporary folders are never listed, and
// a folder counts as a checkpoint only when it is complete: its marker file `state.json` (written last)
// parses and every file its "files" manifest lists ({relative path: size in bytes}, taken after the
// other files were written and fsynced) exists with that size. (Checkpoints of builds before the
// manifest: unet/, text_encoder/ and optimizer.safetensors must exist.)
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace db {

// Owns a temporary folder until commit(); the destructor removes it when not committed.
class AtomicDir {
 public:
  explicit AtomicDir(const std::string& final_path);  // creates the temporary folder (parents must exist)
  ~AtomicDir();
  AtomicDir(const AtomicDir&) = delete;
  AtomicDir& operator=(const AtomicDir&) = delete;
  const std::string& path() const { return tmp_; }  // write files here
  const std::string& final_path() const { return final_; }
  // fsyncs the folder, renames it over final_path (an existing folder there is replaced), fsyncs the parent.
  void commit();

 private:
  std::string final_, tmp_;
  bool committed_ = false;
};

struct CheckpointEntry {
  int64_t step = 0;
  std::string path;
};

std::string checkpoint_name(int64_t step);  // "checkpoint-STEP" (no padding, as diffusers)
// Complete checkpoints under out_dir, sorted by step.
std::vector<CheckpointEntry> list_checkpoints(const std::string& out_dir);
// "" when `dir` is a complete checkpoint, else why not ("state.json is missing", "unet/... has 12 bytes,
// state.json lists 4096", ...).
std::string checkpoint_incomplete_reason(const std::string& dir);
// {relative path: size} of every regular file under `dir` (the manifest state.json records).
std::vector<std::pair<std::string, uint64_t>> checkpoint_files(const std::string& dir);
// --resume: "latest" → the newest complete checkpoint in out_dir (error when none); "auto" → the same,
// or "" (a fresh start) when there is none; otherwise PATH, which must be a complete checkpoint folder.
std::string resolve_resume(const std::string& out_dir, const std::string& resume);
// Removes all but the newest `keep` complete checkpoints (keep <= 0 keeps all), and stale temporary
// folders left by a killed process. Returns the removed paths.
std::vector<std::string> prune_checkpoints(const std::string& out_dir, int keep);

// fsync a file or folder by path (errors name the path).
void fsync_path(const std::string& path);

}  // namespace db
