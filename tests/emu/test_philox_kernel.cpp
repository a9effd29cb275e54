// kernels/philox.cu run by the emulator draws exactly core/philox.h's CPU stream (DESIGN.md decision 5:
// the same seed gives the same noise on CPU and GPU). Bit-exact: the generator is integer arithmetic.
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "dreambooth/backend/cuda/philox_kernel.h"
#include "dreambooth/core/philox.h"

namespace db {
namespace {

TEST(EmuPhiloxKernel, DeviceStreamEqualsCpuStream) {
  struct Case {
    uint64_t seed;
    RngPurpose purpose;
    uint32_t step, sample;
    uint64_t n;
  };
  // n not a multiple of 4 (partial last block of 4), and more than one 256-thread block.
  const Case cases[] = {{1234, RngPurpose::Noise, 7, 3, 1},
                        {1234, RngPurpose::Noise, 7, 3, 4099},
                        {0xDEADBEEFCAFEF00Dull, RngPurpose::Timestep, 0, 0, 1026},
                        {42, RngPurpose::Init, 123456, 9, 17}};
  for (const Case& c : cases) {
    std::vector<uint32_t> got(c.n, 0);
    std::string error;
    ASSERT_TRUE(cuda_philox_u32(c.seed, uint32_t(c.purpose), c.step, c.sample, got.data(), c.n, &error))
        << error;
    const PhiloxStream cpu(c.seed, c.purpose, c.step, c.sample);
    for (uint64_t e = 0; e < c.n; ++e) ASSERT_EQ(got[e], cpu.u32(e)) << "seed " << c.seed << " element " << e;
  }
}

}  // namespace
}  // namespace db
