// Whether x86-64 builds may run their AVX2 clones: one switch for every kernel file that compiles its loops
// twice (portable and AVX2, chosen at run time). Each file still checks the CPU features its clones need.
#ifndef DC_KERNELS_CPU_DISPATCH_H_
#define DC_KERNELS_CPU_DISPATCH_H_

#include <atomic>
#include <cstdlib>

namespace dc::kernels::simd {

// Test hook: when true, x86-64 builds skip their AVX2 (and AVX-512) clones and run the portable loops (so
// that a host test exercises exactly the code an ARM build without NEON would run). On AArch64 it makes the
// block-sparse FC loops (block_fully_connected.cc) run portable instead of NEON; no effect elsewhere.
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

// Test hook: when true, kernels with an AVX-512 path take their AVX2 path instead (so that an AVX-512 host
// also tests the AVX2 loops).
inline std::atomic<bool>& Avx512Disabled() {
  static std::atomic<bool> flag{false};
  return flag;
}

// False when AVX-512 loops must not run: the AVX2 clones are not allowed at all, DC_KERAS_DISABLE_AVX512 is
// set in the environment (read once; the benchmarks time the AVX2 path on AVX-512 machines with it), or the
// Avx512Disabled() hook. Each kernel still checks the CPU features its AVX-512 loops need.
inline bool Avx512ClonesAllowed() {
  static const bool disabled_by_env = std::getenv("DC_KERAS_DISABLE_AVX512") != nullptr;
  return AvxClonesAllowed() && !disabled_by_env && !Avx512Disabled().load(std::memory_order_relaxed);
}

}  // namespace dc::kernels::simd

#endif  // DC_KERNELS_CPU_DISPATCH_H_
