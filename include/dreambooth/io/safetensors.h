#pragma once
// safetensors: read (mmap, lazy, validated) and write (atomic).
//
// Format: 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {str: str}, NAME: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...}
// then the data section; offsets are relative to the data section.
//
// Reading validates everything before any tensor is touched: N against the file size (and the Rust
// implementation's 100 MB cap), JSON well-formed and of the right types, no key given twice (nlohmann
// would keep the last), dtype known, shape x dtype size == end - begin (overflow-checked, as Rust:
// every partial product of the shape must fit in int64), every range inside the data section, no two
// non-empty ranges overlapping. Every failure is one line, "PATH: tensor 'NAME': what is wrong".
// Valid safetensors dtypes that DType lacks (F64, BOOL, I8, ...) fail as "unsupported dtype F64".
// More lenient than Rust: gaps between ranges and trailing bytes are accepted; extra keys in an entry
// are ignored.
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "dreambooth/core/tensor.h"

namespace db {

struct SafeTensorInfo {
  std::string name;
  DType dtype = DType::F32;
  Shape shape;
  size_t begin = 0, end = 0;  // byte range within the data section
};

class SafetensorsFile {
 public:
  // mmaps the file read-only (PROT_READ) and validates its header. Throws Error("PATH: ...").
  // The mapping assumes the file is not truncated while open (that would raise SIGBUS).
  static SafetensorsFile open(const std::string& path);
  // Validates a file image held in memory (the fuzzer's entry point); `bytes` must outlive the result.
  static SafetensorsFile parse(const uint8_t* bytes, size_t size, const std::string& name);

  const std::string& path() const { return path_; }
  const std::vector<SafeTensorInfo>& tensors() const { return tensors_; }  // file order (by offset)
  const SafeTensorInfo* find(const std::string& name) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  // Zero-copy view over the mapping (keeps it alive; for parse() the caller's bytes). READ-ONLY: a
  // write through it faults. Data is at the file's alignment, which safetensors does not guarantee
  // beyond 1 byte: copy before using as float* when unaligned.
  Tensor get(const std::string& name) const;
  // Copy converted to f32 (from f32, f16, bf16), into `dst` (numel of the tensor floats); any
  // alignment. Other dtypes throw. `t` is looked up by name, so an entry of another file throws.
  void read_f32(const SafeTensorInfo& t, float* dst) const;

 private:
  static SafetensorsFile parse_impl(const uint8_t* bytes, size_t size, const std::string& name);

  std::string path_;
  std::shared_ptr<void> mapping_;  // munmap on release
  const uint8_t* data_ = nullptr;  // start of the data section
  size_t data_size_ = 0;
  std::vector<SafeTensorInfo> tensors_;
  std::map<std::string, size_t> index_;
  std::map<std::string, std::string> metadata_;
};

// A set of tensors from one file or a sharded checkpoint: `path` is a .safetensors file or a
// *.safetensors.index.json (whose weight_map names the shard of each tensor; every shard is opened
// and validated, every tensor in weight_map must exist in its shard and no tensor may be in two shards).
// Shard names are relative to the index's folder and may not leave it ('..', absolute paths). Tensors a
// shard holds that weight_map does not list are included, as diffusers loads whole shards.
class SafetensorsSet {
 public:
  static SafetensorsSet open(const std::string& path);
  std::vector<std::string> names() const;  // sorted
  // The file holding `name` and its entry; nullptr when absent.
  std::pair<const SafetensorsFile*, const SafeTensorInfo*> find(const std::string& name) const;

 private:
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::map<std::string, std::pair<size_t, const SafeTensorInfo*>> where_;
};

// Writes tensors (CPU, any dtype) as one safetensors file, atomically: PATH.tmp-PID, fsync, rename
// (the temporary is removed on any failure; an existing PATH is untouched). Tensors are written
// contiguously in the given order; names must be unique, valid UTF-8 and not "__metadata__". The
// header is padded with spaces to a multiple of 8 bytes, as Rust does. Loadable by Python safetensors.
// Not safe for two threads of one process writing the same PATH at once (same temporary name).
void write_safetensors(const std::string& path, const std::vector<std::pair<std::string, Tensor>>& tensors,
                       const std::map<std::string, std::string>& metadata = {});

}  // namespace db
