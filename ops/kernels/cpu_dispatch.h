// Whether x86-64 builds may run their AVX2 clones: one switch for every kernel file that compiles its loops
// twice (portable and AVX2, chosen at run time). Each file still checks the CPU features its clones need.
#ifndef DC_KERNELS_CPU_DISPATCH_H_
#define DC_KERNELS_CPU_DISPATCH_H_

#include <atomic>
#include <cstdlib>

namespace dc::kernels::simd {

// Test hook: when true, x86-64 builds skip their AVX2 clones and run the portable loops (so that a host
// test exercises exactly the code an ARM build without NEON would run). No effect elsewhere.
inline std::atomic<bool>& PortableOnly() {
  static std::atomic<bool> flag{false};
  return flag;
}

// False when the portable loops must run: DC_KERAS_DISABLE_AVX2 set in the environment (read once; it
// forces them for a whole process, e.g. the TF op's test in a subprocess) or the PortableOnly() hook.
inline bool AvxClonesAllowed() {
  static const bool disabled_by_env = std::getenv("DC_KERAS_DISABLE_AVX2") != nullptr;
  return !disabled_by_env && !PortableOnly().load(std::memory_order_relaxed);
}

}  // namespace dc::kernels::simd

#endif  // DC_KERNELS_CPU_DISPATCH_H_
