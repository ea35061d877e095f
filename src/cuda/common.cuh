// fp4moe internal: CUDA error checking and small device helpers shared by the kernels.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "fp4moe/error.hpp"

namespace fp4moe::cuda {

[[noreturn]] inline void throw_cuda(cudaError_t e, const char* what, const char* file, int line) {
  throw Error(std::string("CUDA error in ") + what + " (" + file + ":" + std::to_string(line) +
              "): " + cudaGetErrorName(e) + ": " + cudaGetErrorString(e));
}

}  // namespace fp4moe::cuda

#define FP4MOE_CUDA_CHECK(call)                                                        \
  do {                                                                                 \
    cudaError_t e_ = (call);                                                           \
    if (e_ != cudaSuccess) ::fp4moe::cuda::throw_cuda(e_, #call, __FILE__, __LINE__); \
  } while (0)
