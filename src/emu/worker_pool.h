#pragma once
// OS threads that run whole blocks in parallel (DB_EMU_WORKERS > 1). Created on first use, kept for
// the process: a training step launches thousands of kernels.
#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace db::emu::detail {

class WorkerPool {
 public:
  ~WorkerPool();
  // Runs `job` on the calling thread and on n - 1 pool threads, returns when all have finished;
  // rethrows the first exception any of them threw.
  void run(int n, const std::function<void()>& job);

 private:
  void loop(int index);
  std::mutex mutex_;
  std::condition_variable wake_, finished_;
  std::vector<std::thread> threads_;
  const std::function<void()>* job_ = nullptr;
  uint64_t generation_ = 0;
  int wanted_ = 0;     // pool threads taking part in the current generation
  int remaining_ = 0;  // of those, not finished yet
  bool stop_ = false;
  std::exception_ptr error_;
};

WorkerPool& worker_pool();

}  // namespace db::emu::detail
