#pragma once
// DB_LAUNCH under emulation: validates the launch like the runtime does (returning its error codes),
// rejects raw pointer arguments that are not null or inside a device/managed allocation, runs every
// block of the grid to completion (synchronously, whatever the stream), then checks the guard zones of
// all allocations. A rule broken inside the kernel throws db::emu::Violation.
#include <cuda_runtime.h>

#include <cstddef>
#include <source_location>
#include <tuple>
#include <type_traits>
#include <utility>

namespace db::emu {
namespace detail {

struct LaunchSpec {
  const char* kernel_name;  // as written in DB_LAUNCH, e.g. "(gn_fwd<8, true>)"
  std::source_location site;
  const void* kernel;  // identity for cudaFuncSetAttribute
  dim3 grid;
  dim3 block;
  size_t dynamic_smem;
  cudaStream_t stream;
};

struct PointerParam {
  int index;  // parameter position, for the message
  const void* value;
};

// Type-erased "call the kernel with this thread's copy of the parameters".
struct KernelBody {
  void (*invoke)(const void* closure);
  const void* closure;
};

cudaError_t run_launch(const LaunchSpec& spec, const PointerParam* pointers, int n_pointers, KernelBody body);

template <class P>
constexpr bool is_data_pointer = std::is_pointer_v<P> && !std::is_function_v<std::remove_pointer_t<P>>;

}  // namespace detail

template <class... P, class... A>
cudaError_t launch(void (*kernel)(P...), const char* name, const std::source_location& site, dim3 grid,
                   dim3 block, size_t dynamic_smem, cudaStream_t stream, A&&... args) {
  static_assert(sizeof...(P) == sizeof...(A),
                "DB_LAUNCH: argument count differs from the kernel's parameters");
  static_assert((!std::is_reference_v<P> && ...), "kernel parameters are passed by value");
  struct Closure {
    void (*kernel)(P...);
    std::tuple<P...> params;  // converted once, as a launch converts its arguments
  };
  const Closure closure{kernel, std::tuple<P...>(std::forward<A>(args)...)};

  detail::PointerParam pointers[sizeof...(P) + 1] = {};
  int n_pointers = 0;
  [&]<size_t... I>(std::index_sequence<I...>) {
    [[maybe_unused]] auto note = [&]<size_t J>(std::integral_constant<size_t, J>) {
      using T = std::tuple_element_t<J, std::tuple<P...>>;
      if constexpr (detail::is_data_pointer<T>)
        pointers[n_pointers++] = {int(J), static_cast<const void*>(std::get<J>(closure.params))};
    };
    (note(std::integral_constant<size_t, I>{}), ...);
  }
  (std::index_sequence_for<P...>{});

  // Each CUDA thread calls the kernel with its own copies of the parameters (by-value parameters).
  const detail::KernelBody body{[](const void* c) {
                                  const auto& cl = *static_cast<const Closure*>(c);
                                  std::apply(cl.kernel, cl.params);
                                },
                                &closure};
  const detail::LaunchSpec spec{name,         site,  reinterpret_cast<const void*>(kernel), grid, block,
                                dynamic_smem, stream};
  return detail::run_launch(spec, pointers, n_pointers, body);
}

}  // namespace db::emu

// cuda_runtime.h declares this C++ overload only under nvcc; launchers pass the kernel itself.
template <class... P>
inline cudaError_t cudaFuncSetAttribute(void (*kernel)(P...), cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
