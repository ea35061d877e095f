// fp4moe internal: the host-side interface every CUDA MoE backend implements. No CUDA headers
// here (streams are passed as void*), so the selection layer and the public APIs compile
// without nvcc. Implementations live in src/cuda/*.cu.
#pragma once
#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "fp4moe/moe.hpp"

namespace fp4moe::cuda {

// One prepared MoE layer on one GPU for one backend. Construction prepares the weights once
// (from the on-disk linear NVFP4 layout, host or device pointers) and sizes the workspace
// from max_tokens; forward() then allocates nothing, never synchronizes the host, and is
// safe to capture in a CUDA graph. One instance must not run forward() concurrently on two
// streams (it owns one workspace); distinct instances are independent.
class MoeKernel {
 public:
  virtual ~MoeKernel() = default;
  virtual const char* name() const = 0;
  // x [T, H] bf16, topk_ids [T, k] int32, topk_weights [T, k] f32, out [T, H] bf16: device
  // pointers. T <= max_tokens. Pairs whose expert id lies outside [0, E) contribute nothing
  // (they are skipped, never read out of bounds) and raise the error flag below.
  virtual void forward(const void* x, const int32_t* topk_ids, const float* topk_weights, int64_t tokens, void* out,
                       void* stream) = 0;
  virtual int64_t max_tokens() const = 0;
  virtual size_t weight_bytes() const = 0;     // prepared weights on the device
  virtual size_t workspace_bytes() const = 0;  // per-call scratch, sized at construction
  // Device flag set by forward() when a routed expert id was out of range (read it after a
  // synchronization; reading resets it). Returns the number of such pairs seen.
  virtual int64_t take_invalid_id_count() = 0;
};

// Where the weights given to a factory live.
enum class WeightsOn : uint8_t { Host, Device };

// The fused single-launch decode backend (1..64 tokens).
std::unique_ptr<MoeKernel> make_decode_kernel(const MoeSpec& spec, const MoeWeights& weights, WeightsOn where,
                                              int64_t max_tokens, int device);
inline constexpr int64_t kDecodeMaxTokens = 64;

// The decode kernel's CTA shape, here (no CUDA) so that selection sizes its shared memory with
// the same function the backend uses.
inline constexpr int kDecodeWarps = 4;  // warps per CTA
// Chunks (weights and activations) in flight per warp. (Measured on an H200: 8 was slower at
// most batch sizes, by 3-15% and, with the L1 copies, by 4-24%; so was an additional L2
// prefetch 8 or 16 chunks ahead of the ring, by 5-15%.)
inline constexpr int kDecodeDepth = 4;
// 512-byte staging pieces per warp for a ring of `depth` chunks of `tiles` 16-row tiles: weights
// depth x tiles, scales 2 groups x tiles, activations depth x 2 halves.
// (blanes: the lanes whose activation slices are staged - 32, or 8 where a token tile has at most
// two tokens, the other lanes' columns being zero: depth x 2 halves x blanes x 16 bytes.)
constexpr int decode_staging_pieces(int depth, int tiles = 2, int blanes = 32) {
  return depth * tiles + 2 * tiles + depth * 2 * blanes / 32;
}
inline constexpr int kDecodeStagingPieces = decode_staging_pieces(kDecodeDepth);

// Outputs per combine task (8 per lane), and (4 per lane, so that 8 pairs' z rows fit in
// registers at once) for batches of up to kCombineNarrowTokens tokens.
inline constexpr int kCombineCols = 256, kCombineColsNarrow = 128, kCombineNarrowTokens = 4;

// Shared memory of the routing tables for P = T * k pairs, E experts and a CTA of nwarps warps.
inline size_t decode_routing_bytes(int P, int E, int nwarps) {
  // per pair 4 shorts; per expert a token mask and 4 ints; the scan's warp sums; 4 scalars
  const size_t routing = static_cast<size_t>(P) * (2 + 2 + 2 + 2) + static_cast<size_t>(E) * (8 + 4 * 4) +
                         static_cast<size_t>(nwarps) * 8 + 16;
  return ((routing + 15) / 16) * 16;
}

// At least the static shared memory of either decode kernel (as built for sm_90a the fused kernel
// has 16 bytes, the wide one 784; the GPU test DecodeKernelResources checks the bound), which
// selection counts beside the fused kernel's dynamic shared memory below, as the backend's
// constructor does with the kernel's own figure (the wide kernel is used only where it fits).
inline constexpr size_t kDecodeStaticSmemBound = 1024;

// Dynamic shared memory of one CTA for P = T * k pairs and E experts.
inline size_t decode_smem_bytes(int P, int E) {
  const size_t staging = static_cast<size_t>(kDecodeWarps) * kDecodeStagingPieces * 512;
  return staging + decode_routing_bytes(P, E, kDecodeWarps);
}

// The wide decode kernel (small batches: decode_kernel.cuh): one CTA of kWideWarps warps per SM,
// for batches of at most kWideMaxPairs routed pairs.
inline constexpr int kWideWarps = 16;
inline constexpr int kWideMaxPairs = 64;
// Chunks in flight per warp of the wide kernel's FC1: 2, so that its shared memory (about 150 KB: a
// 164 KB carve-out) leaves the SM's L1 about 90 KB, which the weights' cp.async.ca copies pass
// through. With 4 (about 215 KB, L1 about 28 KB) a warp's first copies stall at issue until earlier
// ones have landed. Measured on an H200 (profiling build, one token of qwen3-30b-a3b, in-graph):
// with 4, the FC1 warps took 2.0 us to issue their first four chunks and saw their first data 2.1 us
// after their pass began; with 2, 0.4 and 1.25 us (a CTA of 8 warps with 4 chunks each, 123 KB:
// 0.36 and 0.9 us). In-graph time, one lease, two runs each: qwen3-30b-a3b at one token 16.6 ->
// 15.9-16.0 us; at two tokens 21.3-21.4 -> 21.5 and gpt-oss-120b at one 30.3-30.5 -> 30.5-30.7, whose
// longer passes (16-23 chunks a warp, against 7) lose more to the shallower ring than they gain.
inline constexpr int kWideDepth = 2;
// The wide kernel's FC2 streams one 16-row tile (512 bytes a chunk) through a ring of 4 chunks:
// the same weight bytes in flight as FC1's 2 chunks of two tiles, in the same shared memory (the
// FC1 partial sums moved beside FC2's results to make room). Measured on an H200, one lease each,
// two runs, 2 against 4 chunks: nemotron at one token 25.0 against 24.6 us, at two 37.4 against
// 36.6, gpt-oss-120b 29.7 against 29.1-29.2 and 42.9-43.0 against 41.6-41.8, qwen3-30b-a3b 15.8
// against 15.7 and 21.8-21.9 against 21.4-21.5 (with an FC1 variant since dropped); 2 for the first
// output tile and 4 for the second against 4 for both (three runs): slower in every cell (nemotron
// one token 24.2-24.5 against 23.8-24.1, qwen3 15.2-15.3 against 15.1-15.2). (A CTA with exactly two
// output tiles streams both at once through FC1's ring of two-tile chunks since: decode_kernel.cu.)
inline constexpr int kWideFc2Depth = 4;
// The wide kernel's FC2 ring in the CTAs that request their weights before the wait (batches of at
// most two tokens, where other CTAs own two output tiles: decode_kernel.cu): 8 chunks, only token
// columns 0 and 1 of h staged - the same pieces as the 4-chunk ring.
inline constexpr int kWideFc2NarrowDepth = 8;
inline constexpr int kWideStagingPieces = std::max(decode_staging_pieces(kWideDepth), decode_staging_pieces(kWideFc2Depth, 1));
// The fused decode kernel's grid (but for the batches decode_launch_shapes gives a larger one) has the
// shared memory of a routing table for at least kDecodeTableTokens tokens, whatever max_tokens, where
// that fits and leaves kDecodeTableCtas CTAs per SM (else max_tokens' own table): with max_tokens 8
// the table of 8 tokens left 5 CTAs per SM instead of the 4 that the benchmarks (max_tokens 64)
// measure, and was slower in most cells (a shape whose 64-token table leaves 3 keeps its own: not
// measured). Measured on an H200 (session 32,
// one lease, two runs each, us, max_tokens 64 -> 8): qwen3-30b-a3b 4 tokens 29.3-29.4 -> 33.8, 8
// tokens 50.7 -> 48.3; nemotron 2 tokens 31.7-31.8 -> 32.2, 4 tokens 42.0-42.1 -> 42.7-42.8, 8 tokens
// 72.3-72.5 -> 77.3-77.4; gpt-oss-120b 2 tokens 39.5-39.7 -> 40.2, 4 tokens 65.6-65.8 -> 65.5-65.7, 8
// tokens 103.6-103.8 -> 120.7-121.4.
inline constexpr int64_t kDecodeTableTokens = 64;
inline constexpr int kDecodeTableCtas = 4;
// The largest batch the decode backend gives the wide kernel by default (see setup_wide in
// decode.cu for the rule and what it was measured against).
inline constexpr int64_t kDecodeWideTokens = 2;
// 512-byte items of partial results a CTA holds at once: FC2's (one per warp with K ranges per token
// tile, two per warp with an even split, one per token tile with kWideWarps or more of them), the FC1
// partial sums (one per warp, of two tiles: two items) after the first kWideSpreadItems of them (the
// space FC2 reaches only with more token tiles).
inline constexpr int kWideSpreadItems = 2 * kWideWarps;
inline constexpr int kWideZItems = std::max(kWideMaxPairs, kWideSpreadItems + 2 * kWideWarps);
// Its dynamic shared memory: staging per warp, the partial results, the routing tables.
inline size_t decode_wide_smem_bytes(int P, int E) {
  return static_cast<size_t>(kWideWarps) * kWideStagingPieces * 512 + static_cast<size_t>(kWideZItems) * 512 +
         decode_routing_bytes(P, E, kWideWarps);
}

// The prefill backend (hundreds to tens of thousands of tokens): routed pairs grouped by
// expert on the GPU, FC1 and FC2 as grouped GEMMs over all experts with the NVFP4 weights
// dequantized exactly to bf16 in the kernel, fixed-order combine. Workspace is sized from
// max_tokens (it holds an fp32 term per routed pair: max_tokens * topk * H * 4 bytes).
std::unique_ptr<MoeKernel> make_prefill_kernel(const MoeSpec& spec, const MoeWeights& weights, WeightsOn where,
                                               int64_t max_tokens, int device);

}  // namespace fp4moe::cuda
