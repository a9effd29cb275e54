#pragma once
// AddressSanitizer's fiber annotations around every stack switch of the scheduler, so that ASan knows
// which stack is live (sanitizer/common_interface_defs.h). boost::context's own annotations need its
// ucontext build, which Debian's library is not; the switches are few and all in scheduler.cpp, so
// they are annotated there. No-ops without ASan.
#include <cstddef>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/common_interface_defs.h>
#endif

namespace db::emu::detail {

// Before switching to the stack [bottom, bottom + size); `fake_stack_save` null when the current
// fiber ends with this switch.
inline void asan_start_switch(void** fake_stack_save, const void* bottom, size_t size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_start_switch_fiber(fake_stack_save, bottom, size);
#else
  (void)fake_stack_save, (void)bottom, (void)size;
#endif
}

// First thing on the stack switched to; reports the stack switched from.
inline void asan_finish_switch(void* fake_stack, const void** from_bottom, size_t* from_size) {
#if defined(__SANITIZE_ADDRESS__)
  __sanitizer_finish_switch_fiber(fake_stack, from_bottom, from_size);
#else
  (void)fake_stack, (void)from_bottom, (void)from_size;
#endif
}

}  // namespace db::emu::detail
