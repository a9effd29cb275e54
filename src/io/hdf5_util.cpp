#include "hdf5_util.h"

#include <cstdlib>

#include "dreambooth/core/error.h"

// H5Pset_file_locking arrived in 1.10.7 and 1.12.1 (not 1.12.0).
#if (H5_VERSION_GE(1, 10, 7) && !H5_VERSION_GE(1, 11, 0)) || H5_VERSION_GE(1, 12, 1)
#define DB_H5_HAVE_FILE_LOCKING 1
#else
#define DB_H5_HAVE_FILE_LOCKING 0
#endif

namespace db::h5 {

std::mutex& mutex() {
  static std::mutex m;
  return m;
}

void init() {
  static std::once_flag once;
  std::call_once(once, [] {
#if !DB_H5_HAVE_FILE_LOCKING
    ::setenv("HDF5_USE_FILE_LOCKING", "FALSE", 0);
#endif
    // No library shutdown at exit: after a failed write (a full disk) H5Fclose fails and leaves the
    // file half-closed, and HDF5's atexit handler then dereferences it (SIGSEGV instead of exit 1).
    // Every file is closed (or removed) by its owner; the OS reclaims the rest.
    H5dont_atexit();
    H5open();
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  });
}

namespace {
herr_t innermost(unsigned n, const H5E_error2_t* e, void* out) {
  if (n == 0 && e->desc) *static_cast<std::string*>(out) = e->desc;
  return 0;
}
}  // namespace

std::string last_error() {
  std::string msg;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, innermost, &msg);
  H5Eclear2(H5E_DEFAULT);
  // The POSIX driver's message spans lines ("file write failed: time = ...\n, filename = ..., errno =
  // 27, error message = 'File too large', buf = 0x..."): keep the head and the errno text, one line.
  const std::string key = "error message = '";
  if (const size_t at = msg.find(key); at != std::string::npos) {
    const size_t end = msg.find('\'', at + key.size());
    const std::string head = msg.substr(0, msg.find(':'));
    msg = head + ": " + msg.substr(at + key.size(), end == std::string::npos ? end : end - at - key.size());
  }
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  return msg;
}

hid_t check(hid_t id, const char* what) {
  if (id < 0) {
    std::string m = last_error();
    throw Error(what, m.empty() ? "" : ": ", m);
  }
  return id;
}

void check_status(herr_t status, const char* what) {
  if (status < 0) {
    std::string m = last_error();
    throw Error(what, m.empty() ? "" : ": ", m);
  }
}

hid_t file_access_plist() {
  hid_t fapl = check(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate");
#if DB_H5_HAVE_FILE_LOCKING
  check_status(H5Pset_file_locking(fapl, false, true), "H5Pset_file_locking");
#endif
  return fapl;
}

Id vlen_utf8_type() {
  Id t(check(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  check_status(H5Tset_size(t, H5T_VARIABLE), "H5Tset_size");
  check_status(H5Tset_cset(t, H5T_CSET_UTF8), "H5Tset_cset");
  return t;
}

}  // namespace db::h5
