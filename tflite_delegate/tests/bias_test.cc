// Test of the dc ops' bias reading (tflite_kernels/bias.h): FLOAT32 copied, FLOAT16 widened exactly (normal,
// subnormal, signed zero, largest, infinities, NaN; every one of the 65536 halves against an independent
// decoding), from unaligned data; another type or a byte size that is not `count` values is an error naming
// the type and the counts.
// Built with -fsanitize=address,undefined by tests/test_kernels_conv.py; exits nonzero on failure.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "kernel_test_util.h"
#include "tflite_kernels/bias.h"

using dc::delegate::kernel_util::BiasValues;

namespace {

// The value of half `h` by its definition, in double: (-1)^s * 2^(e-15) * 1.m, or 2^-14 * 0.m when e = 0.
double HalfReference(uint16_t h) {
  const int sign = h >> 15, exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
  double value;
  if (exponent == 31) value = mantissa ? std::numeric_limits<double>::quiet_NaN() : std::numeric_limits<double>::infinity();
  else if (exponent == 0) value = mantissa / 1024.0 * std::pow(2.0, -14);
  else value = (1.0 + mantissa / 1024.0) * std::pow(2.0, exponent - 15);
  return sign ? -value : value;
}

std::vector<uint8_t> HalfBytes(const std::vector<uint16_t>& halves, size_t offset) {
  std::vector<uint8_t> bytes(offset + 2 * halves.size());
  for (size_t i = 0; i < halves.size(); ++i) {
    bytes[offset + 2 * i] = static_cast<uint8_t>(halves[i] & 0xFF);
    bytes[offset + 2 * i + 1] = static_cast<uint8_t>(halves[i] >> 8);
  }
  return bytes;
}

void TestFloat16() {
  std::vector<uint16_t> all(65536);
  for (uint32_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<uint8_t> bytes = HalfBytes(all, 1);  // odd offset: the reader must not assume alignment
  std::vector<float> bias;
  const dc::codec::Status st = BiasValues(kTfLiteFloat16, bytes.data() + 1, 2 * all.size(),
                                          static_cast<int>(all.size()), &bias);
  CHECK(st.ok(), "all halves: %s", st.message().c_str());
  CHECK(bias.size() == all.size(), "all halves: %zu values", bias.size());
  int wrong = 0;
  for (size_t i = 0; i < bias.size() && wrong < 5; ++i) {
    const double want = HalfReference(all[i]);
    const bool same = std::isnan(want) ? std::isnan(bias[i])
                                       : static_cast<double>(bias[i]) == want && std::signbit(bias[i]) == std::signbit(want);
    if (!same) {
      CHECK(false, "half 0x%04zx gave %.9g, want %.9g", i, bias[i], want);
      ++wrong;
    }
  }
  // Spot values, stated independently of HalfReference.
  CHECK(bias[0x3C00] == 1.f && bias[0xC000] == -2.f && bias[0x7BFF] == 65504.f, "normal halves");
  CHECK(bias[0x0001] == std::ldexp(1.f, -24) && bias[0x03FF] == std::ldexp(1023.f, -24), "subnormal halves");
  CHECK(bias[0x8000] == 0.f && std::signbit(bias[0x8000]), "negative zero");
  CHECK(std::isinf(bias[0x7C00]) && bias[0x7C00] > 0 && std::isinf(bias[0xFC00]) && bias[0xFC00] < 0, "infinities");
  CHECK(std::isnan(bias[0x7E00]) && std::isnan(bias[0x7C01]), "NaN");
}

void TestFloat32() {
  const std::vector<float> values = {0.5f, -1.25f, 3e-39f, 1e30f};
  std::vector<uint8_t> bytes(3 + sizeof(float) * values.size());
  std::memcpy(bytes.data() + 3, values.data(), sizeof(float) * values.size());
  std::vector<float> bias;
  const dc::codec::Status st = BiasValues(kTfLiteFloat32, bytes.data() + 3, sizeof(float) * values.size(), 4, &bias);
  CHECK(st.ok() && bias == values, "float32 bias not copied: %s", st.message().c_str());
}

void ExpectError(int type, size_t bytes, int count, const std::string& want) {
  std::vector<uint8_t> data(bytes + 1, 0x3C);
  std::vector<float> bias = {7.f};
  const dc::codec::Status st = BiasValues(type, data.data(), bytes, count, &bias);
  CHECK(!st.ok() && st.message() == want, "type %d, %zu bytes, count %d: got '%s', want '%s'", type, bytes, count,
        st.ok() ? "ok" : st.message().c_str(), want.c_str());
  CHECK(bias.empty(), "a refused bias left values");
}

void TestRefused() {
  ExpectError(kTfLiteInt8, 4, 4, "bias is INT8, must be FLOAT32 or FLOAT16");
  ExpectError(kTfLiteInt32, 16, 4, "bias is INT32, must be FLOAT32 or FLOAT16");
  ExpectError(kTfLiteFloat16, 6, 4, "bias has 3 values (6 bytes of FLOAT16), expected 4");
  ExpectError(kTfLiteFloat16, 16, 4, "bias has 8 values (16 bytes of FLOAT16), expected 4");  // float32-sized
  ExpectError(kTfLiteFloat32, 8, 4, "bias has 2 values (8 bytes of FLOAT32), expected 4");
  ExpectError(kTfLiteFloat32, 7, 1, "bias has 1 values (7 bytes of FLOAT32), expected 1");
  ExpectError(kTfLiteFloat16, 3, 1, "bias has 1 values (3 bytes of FLOAT16), expected 1");
}

}  // namespace

int main() {
  TestFloat16();
  TestFloat32();
  TestRefused();
  if (dc_test::Failures()) {
    std::printf("bias_test: %d failures\n", dc_test::Failures());
    return 1;
  }
  std::printf("bias_test: OK\n");
  return 0;
}
