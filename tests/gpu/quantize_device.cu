// Kernels for the GPU tests of the device-side NVFP4 activation quantization
// (src/cuda/nvfp4_device.cuh): its division without the slow-path call, and whole 16-blocks.
#include <cuda_runtime.h>

#include "cuda/nvfp4_device.cuh"
#include "quantize_device.hpp"

namespace fp4moe::testing {
namespace {

__global__ void divide_kernel(const float* x, const float* d, float* q, uint8_t* ok, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= n) return;
  q[i] = cuda::div_rn_fast(x[i], d[i]);
  ok[i] = cuda::div_fast_ok(x[i], d[i]) ? 1 : 0;
}

__global__ void quantize_kernel(const uint16_t* x, const float* input_scale, int64_t blocks, uint16_t* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= blocks) return;
  uint4 u[2];
  u[0] = reinterpret_cast<const uint4*>(x + b * 16)[0];
  u[1] = reinterpret_cast<const uint4*>(x + b * 16)[1];
  cuda::quantize_bf16_block16(u, input_scale[b]);
  reinterpret_cast<uint4*>(out + b * 16)[0] = u[0];
  reinterpret_cast<uint4*>(out + b * 16)[1] = u[1];
}

// The same blocks through the other entry, act_quant_values (the decode FC1 epilogue's h): 16
// values a thread, in two blocks of 8 with the same amax and input scale (so the results are the
// block's), as that epilogue batches them.
__global__ void quantize_values_kernel(const uint16_t* x, const float* input_scale, int64_t blocks, uint16_t* out) {
  const int64_t b = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (b >= blocks) return;
  float v[16], amax[2] = {0.0f, 0.0f};
  for (int i = 0; i < 16; ++i) {
    v[i] = __uint_as_float(static_cast<uint32_t>(x[b * 16 + i]) << 16);
    amax[0] = fmaxf(amax[0], fabsf(v[i]));
  }
  amax[1] = amax[0];
  cuda::act_quant_values<16, 8>(v, amax, input_scale[b]);
  for (int i = 0; i < 16; ++i) out[b * 16 + i] = static_cast<uint16_t>(__float_as_uint(v[i]) >> 16);
}

}  // namespace

cudaError_t launch_divide_fast(const float* x, const float* d, float* q, uint8_t* ok, int64_t n) {
  if (n > 0) divide_kernel<<<static_cast<unsigned>((n + 255) / 256), 256>>>(x, d, q, ok, n);
  return cudaGetLastError();
}

cudaError_t launch_quantize_blocks(const uint16_t* x, const float* input_scale, int64_t blocks, uint16_t* out) {
  if (blocks > 0) quantize_kernel<<<static_cast<unsigned>((blocks + 127) / 128), 128>>>(x, input_scale, blocks, out);
  return cudaGetLastError();
}

cudaError_t launch_quantize_values(const uint16_t* x, const float* input_scale, int64_t blocks, uint16_t* out) {
  if (blocks > 0) quantize_values_kernel<<<static_cast<unsigned>((blocks + 127) / 128), 128>>>(x, input_scale, blocks, out);
  return cudaGetLastError();
}

}  // namespace fp4moe::testing
