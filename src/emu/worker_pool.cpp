#include "worker_pool.h"

namespace db::emu::detail {

WorkerPool::~WorkerPool() {
  {
    std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  for (auto& t : threads_) t.join();
}

void WorkerPool::loop(int index) {
  uint64_t seen = 0;
  for (;;) {
    const std::function<void()>* job = nullptr;
    {
      std::unique_lock lock(mutex_);
      wake_.wait(lock, [&] { return stop_ || (generation_ != seen && index < wanted_); });
      if (stop_) return;
      seen = generation_;
      job = job_;
    }
    std::exception_ptr error;
    try {
      (*job)();
    } catch (...) {
      error = std::current_exception();
    }
    std::lock_guard lock(mutex_);
    if (error && !error_) error_ = error;
    if (--remaining_ == 0) finished_.notify_all();
  }
}

void WorkerPool::run(int n, const std::function<void()>& job) {
  {
    std::lock_guard lock(mutex_);
    while (int(threads_.size()) < n - 1) threads_.emplace_back([this, i = int(threads_.size())] { loop(i); });
    job_ = &job;
    wanted_ = n - 1;
    remaining_ = n - 1;
    error_ = nullptr;
    ++generation_;
  }
  wake_.notify_all();
  std::exception_ptr mine;
  try {
    job();
  } catch (...) {
    mine = std::current_exception();
  }
  std::unique_lock lock(mutex_);
  finished_.wait(lock, [&] { return remaining_ == 0; });
  wanted_ = 0;
  if (mine) std::rethrow_exception(mine);
  if (error_) std::rethrow_exception(error_);
}

WorkerPool& worker_pool() {
  static WorkerPool pool;
  return pool;
}

}  // namespace db::emu::detail
