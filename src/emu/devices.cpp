// Several emulated devices (DB_EMU_DEVICES): each host thread has a current device (cudaSetDevice, 0
// until set); streams, events and allocations remember theirs (runtime_api.cpp), and a kernel may touch
// another device's memory only once cudaDeviceEnablePeerAccess allowed it (launch.cpp checks). All
// devices share the host's memory, so a copy between them is a memmove whatever the peer state.
#include <cuda_runtime.h>

#include <mutex>
#include <set>
#include <string>
#include <utility>

#include "dreambooth/emu/options.h"
#include "runtime_state.h"

namespace db::emu::detail {
namespace {

constinit thread_local int current = 0;

struct Peers {
  std::mutex mutex;
  std::set<std::pair<int, int>> enabled;  // (from, to): kernels on `from` may access `to`
};
Peers& peers() {
  static Peers p;
  return p;
}

int device_count() {
  return options().devices;
}

bool exists(int device) {
  return device >= 0 && device < device_count();
}

}  // namespace

cudaError_t checked_device(int device, const char* tag, const char* api) {
  if (exists(device)) return cudaSuccess;
  return set_error(cudaErrorInvalidDevice,
                   std::string("[") + tag + "] " + api + ": device " + std::to_string(device) +
                       " does not exist (DB_EMU_DEVICES=" + std::to_string(device_count()) + ")");
}

int current_device() {
  return current;
}

bool peer_enabled(int from, int to) {
  if (from == to) return true;
  std::lock_guard lock(peers().mutex);
  return peers().enabled.count({from, to}) != 0;
}

}  // namespace db::emu::detail

using namespace db::emu::detail;

cudaError_t cudaGetDeviceCount(int* count) {
  if (!count) return set_error(cudaErrorInvalidValue, "[device] cudaGetDeviceCount: null result pointer");
  *count = device_count();
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int device) {
  if (cudaError_t e = checked_device(device, "device", "cudaSetDevice")) return e;
  current = device;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* device) {
  if (!device) return set_error(cudaErrorInvalidValue, "[device] cudaGetDevice: null result pointer");
  *device = current;
  return cudaSuccess;
}

cudaError_t cudaDeviceCanAccessPeer(int* canAccessPeer, int device, int peerDevice) {
  if (!canAccessPeer)
    return set_error(cudaErrorInvalidValue, "[peer] cudaDeviceCanAccessPeer: null result pointer");
  if (cudaError_t e = checked_device(device, "peer", "cudaDeviceCanAccessPeer")) return e;
  if (cudaError_t e = checked_device(peerDevice, "peer", "cudaDeviceCanAccessPeer")) return e;
  *canAccessPeer = device != peerDevice && db::emu::options().peer_access ? 1 : 0;
  return cudaSuccess;
}

cudaError_t cudaDeviceEnablePeerAccess(int peerDevice, unsigned int flags) {
  if (flags != 0)
    return set_error(cudaErrorInvalidValue, "[peer] cudaDeviceEnablePeerAccess: flags must be 0");
  if (cudaError_t e = checked_device(peerDevice, "peer", "cudaDeviceEnablePeerAccess")) return e;
  if (peerDevice == current)
    return set_error(cudaErrorInvalidDevice, "[peer] cudaDeviceEnablePeerAccess: device " +
                                                 std::to_string(current) + " cannot enable access to itself");
  if (!db::emu::options().peer_access)
    return set_error(cudaErrorPeerAccessUnsupported,
                     "[peer] cudaDeviceEnablePeerAccess: peer access is off (DB_EMU_PEER=0)");
  std::lock_guard lock(peers().mutex);
  if (!peers().enabled.insert({current, peerDevice}).second)
    return set_error(cudaErrorPeerAccessAlreadyEnabled,
                     "[peer] cudaDeviceEnablePeerAccess: device " + std::to_string(current) +
                         " already has access to device " + std::to_string(peerDevice));
  return cudaSuccess;
}

cudaError_t cudaDeviceDisablePeerAccess(int peerDevice) {
  if (cudaError_t e = checked_device(peerDevice, "peer", "cudaDeviceDisablePeerAccess")) return e;
  std::lock_guard lock(peers().mutex);
  if (peers().enabled.erase({current, peerDevice}) == 0)
    return set_error(cudaErrorPeerAccessNotEnabled,
                     "[peer] cudaDeviceDisablePeerAccess: device " + std::to_string(current) +
                         " has no access to device " + std::to_string(peerDevice));
  return cudaSuccess;
}
