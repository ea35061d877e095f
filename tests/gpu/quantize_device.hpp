// Launchers of the test kernels in quantize_device.cu (device pointers; no synchronization).
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace fp4moe::testing {

// q[i] = cuda::div_rn_fast(x[i], d[i]), ok[i] = cuda::div_fast_ok(x[i], d[i]).
cudaError_t launch_divide_fast(const float* x, const float* d, float* q, uint8_t* ok, int64_t n);
// out = x (bf16, blocks x 16) quantized per 16-block by cuda::quantize_bf16_block16 with
// input_scale[block]: the decode kernel's Q and the prefill kernels' quantization.
cudaError_t launch_quantize_blocks(const uint16_t* x, const float* input_scale, int64_t blocks, uint16_t* out);
// The same through cuda::act_quant_values (the decode FC1 epilogue's quantization of h), 16 values
// a thread (the values are bf16, so the results are too).
cudaError_t launch_quantize_values(const uint16_t* x, const float* input_scale, int64_t blocks, uint16_t* out);

}  // namespace fp4moe::testing
