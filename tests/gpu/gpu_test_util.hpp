// Shared helpers for the GPU tests: device buffers, output poisoning, the no-GPU skip.
#pragma once
#include <cuda_runtime.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "fp4moe/device.hpp"

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

}  // namespace fp4moe::testing
