#pragma once
// SHA-256 (FIPS 180-4). Used for image content hashes in shards and tokenizer/VAE fingerprints.
//
//   Sha256 h; h.update(a, n); h.update(b, m); std::string hex = h.hex_digest();
//   sha256_hex(bytes, n);   sha256_file_hex(path);
#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace db {

class Sha256 {
 public:
  Sha256();
  void update(const void* data, size_t size);
  void update(const std::string& s) { update(s.data(), s.size()); }
  std::array<uint8_t, 32> digest();  // finalizes; the object must not be updated afterwards
  std::string hex_digest();          // 64 lowercase hex characters

 private:
  void block(const uint8_t* p);
  std::array<uint32_t, 8> h_;
  uint8_t buf_[64];
  size_t buf_len_ = 0;
  uint64_t total_ = 0;
  bool done_ = false;
};

std::string sha256_hex(const void* data, size_t size);
std::string sha256_file_hex(const std::string& path);  // streams the file; Error names it
// One digest over the files' bytes back to back, e.g. {vocab.json, merges.txt} for the shard's
// tokenizer_fingerprint.
std::string sha256_files_hex(const std::vector<std::string>& paths);

}  // namespace db
