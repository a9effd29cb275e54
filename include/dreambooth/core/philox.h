#pragma once
// Philox4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11), counter-based.
//
// Keying scheme (DESIGN.md decision 5): every random draw is a pure function of
//   key     = (seed_lo, seed_hi)                    the run's 64-bit --seed
//   counter = (index, sample, step, purpose)        index = element / 4 within one stream
// where `sample` is the GLOBAL sample index (so a draw does not depend on the rank count or thread
// count), `step` the optimizer step (or image index), and `purpose` one of RngPurpose. Each counter
// yields four uint32; element e of a stream is word e % 4 of block e / 4. The same formula on the GPU
// draws the same numbers, and a resumed run draws what an uninterrupted one would.
#include <array>
#include <cstdint>

namespace db {

enum class RngPurpose : uint32_t {
  Noise = 1,         // epsilon added to latents
  Timestep = 2,      // per-sample timestep t ~ U{0..T-1}
  LatentSample = 3,  // VAE posterior sample  mean + std * eps
  Shuffle = 4,       // data order per epoch
  Init = 5,          // random model init (init-model)
  Sampler = 6,       // initial latents / ancestral noise when generating
  Crop = 7,          // random crops in prepare
  OffsetNoise = 8,   // per-channel offset noise
  LoraInit = 9,      // LoRA adapter init (nn/lora.h)
};

using PhiloxBlock = std::array<uint32_t, 4>;

inline PhiloxBlock philox4x32_10(PhiloxBlock ctr, std::array<uint32_t, 2> key) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u, W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = uint64_t(M0) * ctr[0];
    uint64_t p1 = uint64_t(M1) * ctr[2];
    PhiloxBlock next = {uint32_t(p1 >> 32) ^ ctr[1] ^ key[0], uint32_t(p1),
                        uint32_t(p0 >> 32) ^ ctr[3] ^ key[1], uint32_t(p0)};
    ctr = next;
    key[0] += W0;
    key[1] += W1;
  }
  return ctr;
}

// One stream: (seed, purpose, step, sample) fixed, elements indexed from 0.
class PhiloxStream {
 public:
  PhiloxStream(uint64_t seed, RngPurpose purpose, uint32_t step, uint32_t sample)
      : key_{uint32_t(seed), uint32_t(seed >> 32)},
        step_(step),
        sample_(sample),
        purpose_(uint32_t(purpose)) {}

  uint32_t u32(uint64_t e) const {
    PhiloxBlock b = philox4x32_10({uint32_t(e / 4), sample_, step_, purpose_}, key_);
    return b[e % 4];
  }
  // Uniform in (0, 1): (x + 0.5) / 2^32, never 0 or 1, so log() is safe.
  double uniform(uint64_t e) const { return (double(u32(e)) + 0.5) * (1.0 / 4294967296.0); }
  // Standard normal element e by Box-Muller over uniforms 2*(e/2) and 2*(e/2)+1: even e takes the
  // cosine branch, odd e the sine branch. Computed in double and rounded once to float.
  float normal(uint64_t e) const;
  // Fills out[0..n) with normal(first + i).
  void normals(float* out, uint64_t n, uint64_t first = 0) const;
  // Uniform integer in [0, n) (n > 0), by 64-bit multiply-shift of two words (bias < 2^-32).
  uint32_t below(uint64_t e, uint32_t n) const;

 private:
  std::array<uint32_t, 2> key_;
  uint32_t step_, sample_, purpose_;
};

}  // namespace db
