# CMake toolchain file: cross-compile libdc_delegate.so and the kernel tests for 64-bit ARM Linux with
# Debian's GNU cross compiler (apt-get install g++-aarch64-linux-gnu; run the tests with qemu-user).
#
#   cmake -S tflite_delegate -B build-aarch64 \
#         -DCMAKE_TOOLCHAIN_FILE=tflite_delegate/cmake/aarch64-linux-gnu.cmake
#   cmake --build build-aarch64 -j2
#   ctest --test-dir build-aarch64          # runs the tests through qemu-aarch64 (CMAKE_CROSSCOMPILING_EMULATOR)
#
# __ARM_NEON is predefined for aarch64, so the NEON kernels (src/kernels/neon_math.h) are the ones built.
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)

set(DC_CROSS_PREFIX aarch64-linux-gnu- CACHE STRING "prefix of the cross tools")
set(CMAKE_C_COMPILER ${DC_CROSS_PREFIX}gcc)
set(CMAKE_CXX_COMPILER ${DC_CROSS_PREFIX}g++)

# Debian's multiarch cross sysroot.
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)

# ctest runs the cross-built tests under qemu-user, with the cross libc as its sysroot.
find_program(DC_QEMU_AARCH64 qemu-aarch64)
if(DC_QEMU_AARCH64)
  set(CMAKE_CROSSCOMPILING_EMULATOR ${DC_QEMU_AARCH64};-L;/usr/aarch64-linux-gnu)
endif()
