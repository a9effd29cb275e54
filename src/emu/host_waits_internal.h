#pragma once
// The runtime API's hooks into host-wait accounting (host_waits.cpp; dreambooth/emu/host_waits.h).
#include <cuda_runtime.h>

namespace db::emu::detail {

void note_work(cudaStream_t s);  // a launch, async copy or memset issued on s
void note_event_record(cudaEvent_t e, cudaStream_t s);
void note_stream_sync(cudaStream_t s);
void note_device_sync(int device);
void note_event_sync(cudaEvent_t e);
void note_blocking_copy();
bool event_pending(cudaEvent_t e);  // its recorded work is not known complete (cudaEventQuery)  // a
                                    // synchronous copy touching device memory
void forget_stream(cudaStream_t s);
void forget_event(cudaEvent_t e);

}  // namespace db::emu::detail
