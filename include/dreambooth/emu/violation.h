#pragma once
// What the emulator reports when a kernel or a runtime call breaks a CUDA rule.
//
// A violation found while a kernel runs (barrier divergence, bad warp mask, guard bytes overwritten,
// host pointer argument, ...) is thrown out of DB_LAUNCH as db::emu::Violation: a db::Error whose
// message names the check, the kernel, the launch site, the block and thread, e.g.
//   [divergent-barrier] kernel gn_fwd (kernels/group_norm.cu:120) block (3,0,0) thread (5,0,0): ...
// Errors the real runtime reports as return codes (bad launch configuration, out-of-range memcpy,
// unknown pointer to cudaFree) are returned as cudaError_t; their explanation is last_violation().
#include <string>

#include "dreambooth/core/error.h"

namespace db::emu {

class Violation : public Error {
 public:
  Violation(std::string check, const std::string& message) : Error(message), check_(std::move(check)) {}
  // Short name of the rule that failed: "divergent-barrier", "warp-mask", "smem-guard", ...
  const std::string& check() const { return check_; }

 private:
  std::string check_;
};

// The message of the most recent violation or rejected runtime call ("" if none since the last clear).
std::string last_violation();
void clear_last_violation();

namespace detail {
void set_last_violation(const std::string& message);
}

}  // namespace db::emu
