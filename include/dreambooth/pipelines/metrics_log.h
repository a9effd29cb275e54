#pragma once
// metrics.jsonl of `train`: one JSON line per optimizer step, written by rank 0 (issue 16 item 5).
//
// Every write is checked: a failed or short write(2) (a full disk, /dev/full, a quota) throws an Error
// naming the file, so a run never continues with lines silently missing or torn. sync() fsyncs; train
// calls it before every checkpoint, so the lines on disk always reach at least the newest checkpoint.
//
// On resume, truncate_metrics() cuts the file just before its first line whose step is past the
// checkpoint's (the steps the interrupted run logged after it, which the resumed run logs again) and
// drops an unterminated last line (a torn write of a killed run). Every line before that point is
// kept byte for byte, in place (no rewrite): a resumed run loses no logged step.
#include <cstdint>
#include <string>

namespace db {

struct MetricsTrim {
  int64_t lines_kept = 0;
  int64_t last_step = -1;     // step of the last kept line that has one, -1 when none
  int64_t bytes_cut = 0;      // bytes removed from the end
  int64_t unparsed_kept = 0;  // terminated lines without a readable "step", kept as they are
};

// Truncates `path` for a resume from checkpoint step `step` (see above). A missing file is fine (an
// empty trim); a file that is not a regular file (e.g. /dev/null) is left alone.
MetricsTrim truncate_metrics(const std::string& path, int64_t step);

class MetricsLog {
 public:
  MetricsLog() = default;
  // Opens for appending; `truncate` empties the file first (a fresh run).
  MetricsLog(const std::string& path, bool truncate);
  ~MetricsLog();
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;
  MetricsLog(MetricsLog&& o) noexcept : path_(std::move(o.path_)), fd_(o.fd_) { o.fd_ = -1; }
  MetricsLog& operator=(MetricsLog&& o) noexcept;

  bool is_open() const { return fd_ >= 0; }
  void append_line(const std::string& line);  // line + '\n' in one write(2); throws on failure
  void sync();                                // fsync (EINVAL from a device is fine); throws on failure

 private:
  std::string path_;
  int fd_ = -1;
};

}  // namespace db
