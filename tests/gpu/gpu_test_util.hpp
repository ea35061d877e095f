// Shared helpers for the GPU tests: device buffers, output poisoning, the no-GPU skip.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fp4moe/bf16.hpp"
#include "fp4moe/device.hpp"
#include "fp4moe/metrics.hpp"

namespace fp4moe::testing {

#define FP4MOE_TEST_CUDA(call)                                                                   \
  do {                                                                                           \
    cudaError_t e_ = (call);                                                                     \
    if (e_ != cudaSuccess) throw std::runtime_error(std::string(#call) + ": " + cudaGetErrorString(e_)); \
  } while (0)

// Skips the current test, printing why, when no usable GPU is present.
#define FP4MOE_SKIP_WITHOUT_GPU()                                                   \
  do {                                                                              \
    const auto& info_ = ::fp4moe::probe_devices();                                  \
    if (!info_.has_gpu()) GTEST_SKIP() << "no GPU: " << info_.cuda_status;         \
  } while (0)

// An owning device allocation of n elements of T.
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t n) : n_(n) {
    if (n) FP4MOE_TEST_CUDA(cudaMalloc(&p_, n * sizeof(T)));
  }
  explicit DeviceBuffer(const std::vector<T>& host) : DeviceBuffer(host.size()) { upload(host); }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  DeviceBuffer(DeviceBuffer&& o) noexcept : p_(o.p_), n_(o.n_) { o.p_ = nullptr; o.n_ = 0; }
  ~DeviceBuffer() {
    if (p_) cudaFree(p_);
  }
  T* get() const { return p_; }
  size_t size() const { return n_; }
  void upload(const std::vector<T>& host) {
    FP4MOE_TEST_CUDA(cudaMemcpy(p_, host.data(), host.size() * sizeof(T), cudaMemcpyHostToDevice));
  }
  std::vector<T> download() const {
    std::vector<T> h(n_);
    FP4MOE_TEST_CUDA(cudaMemcpy(h.data(), p_, n_ * sizeof(T), cudaMemcpyDeviceToHost));
    return h;
  }
  // Fills every byte with 0xFF: a NaN bit pattern for bf16, f32 and f16, -1 for integers.
  void poison() {
    FP4MOE_TEST_CUDA(cudaMemset(p_, 0xFF, n_ * sizeof(T)));
  }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

// Rewrites e4m3 block scales with cases the synthetic layers never have. Variant 0: zero and
// negative zero, negative values and the largest value, 448, among the layer's own scales.
// Variant 1: every scale a subnormal (2^-9 .. 7 * 2^-9), a third of them negative - alone, so
// that their products are not drowned by normal ones.
inline void set_edge_block_scales(std::vector<uint8_t>& sc, int variant) {
  for (size_t i = 0; i < sc.size(); ++i) {
    uint8_t& b = sc[i];
    if (variant == 1) {
      b = static_cast<uint8_t>((i % 3 == 0 ? 0x80 : 0) | (1 + (i / 3) % 7));
      continue;
    }
    switch (i % 11) {
      case 0: b = 0x00; break;
      case 1: b = 0x80; break;
      case 2: case 3: case 4: b |= 0x80; break;
      case 5: b = 0x7E; break;
      default: break;
    }
  }
}

// bf16 outputs against a reference that has NaNs: where they are must agree; the rest is
// compared as usual.
struct NanAwareStats {
  int64_t nan_ref = 0, nan_mismatch = 0;
  ErrorStats finite;
};
inline NanAwareStats compare_with_nans(const std::vector<uint16_t>& got, const std::vector<double>& ref) {
  NanAwareStats r;
  std::vector<uint16_t> got_f;
  std::vector<double> ref_f;
  for (size_t i = 0; i < ref.size(); ++i) {
    const bool got_nan = std::isnan(bf16_to_float(got[i]));
    if (std::isnan(ref[i])) {
      ++r.nan_ref;
      r.nan_mismatch += got_nan ? 0 : 1;
    } else {
      r.nan_mismatch += got_nan ? 1 : 0;
      got_f.push_back(got[i]);
      ref_f.push_back(ref[i]);
    }
  }
  r.finite = compare_bf16(got_f, ref_f);
  return r;
}

}  // namespace fp4moe::testing
