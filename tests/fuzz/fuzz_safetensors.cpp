// libFuzzer target for the safetensors parser: any input must either parse or throw db::Error; a
// parsed file must let every tensor be viewed and read. Build: make fuzz; see tests/fuzz/README.md.
#include <cstdint>
#include <cstring>
#include <vector>

#include "dreambooth/core/error.h"
#include "dreambooth/io/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    db::SafetensorsFile f = db::SafetensorsFile::parse(data, size, "fuzz");
    volatile uint8_t sink = 0;
    for (const auto& t : f.tensors()) {
      db::Tensor v = f.get(t.name);
      const auto* p = static_cast<const uint8_t*>(v.raw());
      for (size_t i = 0; i < v.nbytes(); ++i) sink = sink ^ p[i];  // ASan checks every byte is in range
      if (t.dtype == db::DType::F32 || t.dtype == db::DType::F16 || t.dtype == db::DType::BF16) {
        std::vector<float> out(size_t(v.numel()));
        f.read_f32(t, out.data());
      }
    }
    for (const auto& [k, val] : f.metadata()) sink = sink ^ uint8_t(k.size() + val.size());
  } catch (const db::Error&) {
    // expected for invalid input
  }
  return 0;
}
