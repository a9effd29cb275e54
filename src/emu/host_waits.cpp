// Host-wait accounting by stream order (include/dreambooth/emu/host_waits.h).
#include "dreambooth/emu/host_waits.h"

#include <atomic>
#include <map>
#include <mutex>
#include <utility>

#include "host_waits_internal.h"
#include "runtime_state.h"

namespace db::emu {
namespace {

// A stream by handle and device: the special handles (0, legacy, per-thread) mean the current device's.
using StreamKey = std::pair<const void*, int>;
struct StreamWork {
  uint64_t issued = 0, known_done = 0;
};
struct EventMark {
  StreamKey stream{};
  uint64_t issued = 0;  // the stream's work count when recorded
};

struct Table {
  std::mutex mutex;
  std::map<StreamKey, StreamWork> streams;
  std::map<const void*, EventMark> events;
};
Table& table() {
  static Table t;
  return t;
}
std::atomic<uint64_t> waits{0};
thread_local int uncounted = 0;

StreamKey key(cudaStream_t s) {
  return {static_cast<const void*>(s), detail::stream_device(s)};
}
void count() {
  if (uncounted == 0) waits.fetch_add(1, std::memory_order_relaxed);
}

}  // namespace

uint64_t host_waits() {
  return waits.load(std::memory_order_relaxed);
}
ScopedUncountedWaits::ScopedUncountedWaits() {
  ++uncounted;
}
ScopedUncountedWaits::~ScopedUncountedWaits() {
  --uncounted;
}

namespace detail {

void note_work(cudaStream_t s) {
  std::lock_guard lock(table().mutex);
  ++table().streams[key(s)].issued;
}

void note_event_record(cudaEvent_t e, cudaStream_t s) {
  std::lock_guard lock(table().mutex);
  const StreamKey k = key(s);
  table().events[e] = {k, table().streams[k].issued};
}

void note_stream_sync(cudaStream_t s) {
  if (uncounted > 0) return;  // a stand-in's wait: neither counted nor teaching the host anything
  std::lock_guard lock(table().mutex);
  StreamWork& w = table().streams[key(s)];
  if (w.known_done < w.issued) count();
  w.known_done = w.issued;
}

void note_device_sync(int device) {
  if (uncounted > 0) return;  // a stand-in's wait: neither counted nor teaching the host anything
  std::lock_guard lock(table().mutex);
  bool pending = false;
  for (auto& [k, w] : table().streams)
    if (k.second == device) {
      pending = pending || w.known_done < w.issued;
      w.known_done = w.issued;
    }
  if (pending) count();
}

void note_event_sync(cudaEvent_t e) {
  if (uncounted > 0) return;  // a stand-in's wait: neither counted nor teaching the host anything
  std::lock_guard lock(table().mutex);
  const auto it = table().events.find(e);
  if (it == table().events.end()) return;  // never recorded: returns at once
  StreamWork& w = table().streams[it->second.stream];
  if (w.known_done < it->second.issued) {
    count();
    w.known_done = it->second.issued;
  }
}

bool event_pending(cudaEvent_t e) {
  std::lock_guard lock(table().mutex);
  const auto it = table().events.find(e);
  if (it == table().events.end()) return false;
  return table().streams[it->second.stream].known_done < it->second.issued;
}

void note_blocking_copy() {
  count();
}

void forget_stream(cudaStream_t s) {
  std::lock_guard lock(table().mutex);
  table().streams.erase(key(s));
}

void forget_event(cudaEvent_t e) {
  std::lock_guard lock(table().mutex);
  table().events.erase(e);
}

}  // namespace detail
}  // namespace db::emu
