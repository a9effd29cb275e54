#pragma once
// Internal HDF5 helpers shared by the shard writer and reader.
#include <hdf5.h>

#include <mutex>
#include <string>

namespace db::h5 {

// HDF5 (serial build) is not thread-safe: hold this around every HDF5 call.
std::mutex& mutex();

// Once per process: no HDF5 shutdown at exit (H5dont_atexit: a file whose close failed on a full disk
// would crash it), silences HDF5's own error printing (errors become db::Error) and, where
// H5Pset_file_locking is missing (< 1.10.7), sets HDF5_USE_FILE_LOCKING=FALSE before H5open.
void init();

// The innermost message on HDF5's error stack ("" if none); clears the stack.
std::string last_error();

// A file access property list with file locking disabled (and the latest-format bounds unchanged,
// so h5py/HDF5 1.8+ can read what we write).
hid_t file_access_plist();

// Owns an hid_t; closes it with the right H5?close.
class Id {
 public:
  using Closer = herr_t (*)(hid_t);
  Id() = default;
  Id(hid_t id, Closer close) : id_(id), close_(close) {}
  ~Id() { reset(); }
  Id(Id&& o) noexcept : id_(o.id_), close_(o.close_) { o.id_ = H5I_INVALID_HID; }
  Id& operator=(Id&& o) noexcept {
    if (this != &o) {
      reset();
      id_ = o.id_, close_ = o.close_;
      o.id_ = H5I_INVALID_HID;
    }
    return *this;
  }
  Id(const Id&) = delete;
  Id& operator=(const Id&) = delete;
  hid_t get() const { return id_; }
  operator hid_t() const { return id_; }
  bool valid() const { return id_ >= 0; }
  hid_t release() {
    hid_t id = id_;
    id_ = H5I_INVALID_HID;
    return id;
  }
  void reset() {
    if (id_ >= 0 && close_) close_(id_);
    id_ = H5I_INVALID_HID;
  }

 private:
  hid_t id_ = H5I_INVALID_HID;
  Closer close_ = nullptr;
};

// Throws db::Error("<what>: <hdf5 message>") when id < 0 / status < 0.
hid_t check(hid_t id, const char* what);
void check_status(herr_t status, const char* what);

// Variable-length UTF-8 string type.
Id vlen_utf8_type();

}  // namespace db::h5
