// fp4moe: the fused NVFP4 MoE decode kernel (sm_80 / sm_90a, mma.sync).
//
// One cooperative, persistent launch does the whole layer for 1..64 tokens:
//   prologue (every CTA, redundantly, all threads): compact the routed pairs per expert into
//            slots, in a deterministic order (expert, then pair index), so every CTA agrees;
//   Q   (W4A4 only, in the prologue) every CTA a share of the routed pairs' 16-blocks of x, a block
//       a thread, quantized with the pair's expert's FC1 input scale -> xq (a row per pair); the
//       CTA signals its share after the prologue's barrier, and FC1 waits for the grid's count;
//   FC1 one warp per (expert, token tile of up to 8 tokens, 16 or 32 intermediate rows):
//       y = W1 x, activation, bf16 (and in W4A4 the FP4 re-quantization), written to h -
//       complete sums over all of K (measured on an H200: splitting K at 1..8 tokens, the splits
//       meeting in global or in shared memory, was slower than no split in most cases), except
//       the FC1 tasks that overflow the first round of a two-round batch: up to 4 warps each,
//       over ranges of K, the last adding the others' partial sums in a fixed order;
//   FC2 one warp per (expert, token tile, 32 output rows): z = W2 h, complete sums, fp32;
//   combine one warp per (token, 256 outputs; 128 up to 4 tokens): out = bf16(sum_j w_j z_j), j in order.
// Dependencies between phases are per-expert completion counters (and Q's one count; integers,
// so their order does not matter); warps take tasks in increasing order (a static first round, then an atomic
// counter; all static when there are at most two rounds; with one round, with two whose first
// is all FC1, or with more than two, the first round goes to the CTAs by their order on their SM)
// and only ever wait on tasks with a smaller index, and the cooperative launch guarantees every
// warp is resident, so the waits cannot deadlock. No floating-point atomics: the result is
// bitwise reproducible. The counters need no memset between launches (or graph replays): a launch
// uses one of two sets and clears the other for the next (see DecodeParams::counters). Weights
// and activations reach shared memory by cp.async through L1 (see decode_kernel.cu for what that
// was measured to gain and why it is safe for h and xq).
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/backend_api.hpp"  // kDecodeWarps, kDecodeDepth, kCombine*, decode_smem_bytes()

namespace fp4moe::cuda {

struct DecodeParams {
  const uint8_t* w1;  // prepared FC1 blocks [E][expert1_bytes] (decode_layout.hpp)
  const uint8_t* w2;  // prepared FC2 blocks [E][expert2_bytes]
  const float* g1;    // [E] FC1 epilogue scale: w13_scale_2 (* a13 in W4A4) * 2^63 (the MMA sees w * 2^-63)
  const float* g2;    // [E] FC2 epilogue scale: w2_scale_2 (* a2 in W4A4) * 2^63
  const float* a13;   // [E] FC1 input scale (dequant direction), W4A4
  const float* a2;    // [E] FC2 input scale (dequant direction), W4A4
  const __nv_bfloat16* x;
  const int32_t* ids;
  const float* wts;
  __nv_bfloat16* out;
  __nv_bfloat16* xq;  // [P][H]  W4A4: x quantized per routed pair (its token's row, its expert's scale)
  __nv_bfloat16* h;   // [P][Ik]
  float* z;           // [P][H]
  // Zeroed once at construction, never between launches:
  //   [0, 1] the launch word (64 bits): low half, the CTAs of the launch arrived so far; high
  //   half, the launches so far, whose low bit picks which of the two sets below this launch
  //   uses (the grid's last CTA to arrive clears the other set for the next launch, then adds
  //   2^32 - grid: arrivals back to zero, one launch more); [2] pairs with an expert id outside
  //   [0, E) (cumulative, read and cleared by the host); [3, 3 + sm_ids) CTA arrivals at launch
  //   per SM id (each wraps to zero at ctas_per_sm); then two sets of decode_counter_set() words
  //   - q_all (W4A4: the CTAs that have stored their share of Q), fc1_done[E], fc2_done[E]
  //   (kDecodeCounterStride words apart: see decode_done_words), task claims, CTA arrivals after the prologue per SM id [sm_ids] and per
  //   tier [kDecodeMaxTiers].
  unsigned* counters;
  unsigned* invalid;   // counters + kDecodeInvalidIdCounter
  int T, k, E, H, Ik;
  int n1_tasks, n2_tasks, chunks1, chunks2;
  float* part;          // [units][kMaxFc1Splits - 1][32 lanes][8] FC1 partial sums of split tasks
  unsigned* split_ctr;  // [units] arrivals of a split task's splits but the last (reset by the last)
  long long expert1_bytes, expert2_bytes;
  int swiglu;  // (the numerics mode is the kernel's instantiation: *_decode_kernel_ptr)
  // FC1 chunks of every routed pair's expert (all its row tasks, and their first scale group) that
  // the grid requests into L2 at its start, while it builds the routing tables: 0 = none. Set
  // (to the ring's depth, at most chunks1) when every FC1 task fits the first round: those
  // chunks are then what the first round's rings load first.
  int pf_chunks;
  // The wide kernel's work assignment without integer division (set by setup_wide in decode.cu): x / d
  // as __umulhi(x, ceil(2^32 / d)) for d = its grid, n1_tasks and chunks2 (0 for d = 1: x itself;
  // exact while x * d < 2^32, which setup_wide checks), and for a CTA of nt FC1 tasks (index min(nt,
  // kWideWarps)) its K ranges s1, chunks per range cps1 and ceil(256 / s1): s1 | cps1 << 5 | m << 17;
  // for nt token tiles (index min(nt, kWideWarps)) FC2's K ranges s2, chunks per range cps2 and
  // whether the chunks are split evenly instead: s2 | cps2 << 5 | spread << 17.
  unsigned wide_grid_magic, wide_n1_magic, wide_c2_magic;
  unsigned wide_fc1_split[kWideWarps + 1], wide_fc2_split[kWideWarps + 1];
  int sm_ids;       // %nsmid: every %smid is below it (SM ids need not be contiguous)
  int ctas_per_sm;  // the grid is ctas_per_sm CTAs on each SM, all resident (cooperative launch)
};

// Where DecodeParams::counters holds the invalid-id count, and where its CTA arrivals at launch
// per SM id begin (the two counter sets follow them).
inline constexpr int kDecodeInvalidIdCounter = 2;
inline constexpr int kDecodeSmArrivalsAt = 3;

inline constexpr int kMaxFc1Splits = 4;   // K splits of an FC1 task past the first round, at most
inline constexpr int kDecodeMaxTiers = 32;  // CTAs per SM, at most (the hardware's limit)

// Words of one of the two counter sets (see DecodeParams::counters).
// Words from one expert's completion counter to the next (fc1_done, fc2_done; q_all first): each on
// its own 128-byte line, so the warps that poll one expert's counter, and the tasks that signal
// it, do not share a line (an L2 slice) with every other expert's. Measured on an H200 (one lease,
// two runs each, against adjacent counters), compiled for 4 CTAs per SM (106 registers): faster
// in 17 of 18 cells of qwen3-30b-a3b, nemotron and gpt-oss-120b at 1, 2 and 8 tokens - 0.1-0.3 us
// at 1..2 tokens, 0.5-1.2 us at 8 (nemotron 74.1 -> 73.0 us). As built, for 5 CTAs per SM (94
// registers), it measured at parity with adjacent counters (another lease, one run each: within
// +-0.5 us in those 9 cells, gpt-oss-120b at 8 tokens 103.8 -> 102.9). Polling 4x less often
// instead (back-off up to 1 us) was 0.7-2.5 us slower.
inline constexpr int kDecodeCounterStride = 32;
// Words of a set's completion counters (q_all, then fc1_done and fc2_done: E each), which begin the
// set; expert e's counter of kind k (0: fc1_done, 1: fc2_done) is at (1 + k * E + e) * kDecodeCounterStride.
__host__ __device__ inline int decode_done_words(int E) { return (1 + 2 * E) * kDecodeCounterStride; }
__host__ __device__ inline int decode_counter_set(int E, int sm_ids) {
  return decode_done_words(E) + 1 + sm_ids + kDecodeMaxTiers;
}

// An FC1 or FC2 task covers one token tile: up to 8 tokens (the MMA's N) of one expert; an
// expert with more tokens gives more tasks. (Measured on an H200: tiles of 16 or 32 tokens
// cost occupancy and were 1.3-1.6x slower at 16..64 tokens with random routing, where most
// experts get a handful of tokens.)

// CTAs per SM the register allocation must allow (kDecodeWarps warps each): 5, the grid of a
// decode kernel whose max_tokens leaves the shared memory for it (see DecodeKernel::setup in
// decode.cu); the GPU test checks that 5 fit at one token of qwen3-30b-a3b. (With 4 the compiler
// took 106 registers once the counters were kDecodeCounterStride apart; with 5 it takes 94.)
inline constexpr int kDecodeMinBlocks = 5;

// The kernel, as a pointer for cudaLaunchKernelExC (its definition stays inside decode_kernel.cu).
const void* fused_decode_kernel_ptr(bool w4a4);  // (one instantiation per mode, as the wide kernel)

// The wide kernel: the same layer for batches of at most kWideMaxPairs routed pairs, one CTA of
// kWideWarps warps per SM (cooperative launch), the weights, h and the counters as above:
//   prologue every warp computes the routing from the ids in registers (P <= 64: match masks and a
//       warp scan; token tiles in the order of each expert's first pair), requests its first FC1
//       chunks, then waits at one CTA barrier for the tables (those above, its tiles in this order)
//       that warp 0 writes meanwhile;
//   Q   (W4A4) as above, the CTA's blocks before the routing, signalled after that barrier;
//   FC1 CTA b takes an equal share of the FC1 tasks, [n1 * b / grid, n1 * (b + 1) / grid); when
//       they are fewer than its warps, each task's K is split into ranges over the warps, their
//       partial sums added in range order in shared memory, then the same epilogue -> h;
//   FC2 + combine: CTA b owns the 16-row output tiles b, b + grid, ...: for each, every token tile
//       of every active expert over the warps (fewer token tiles than warps: K ranges of each, or
//       all their chunks split evenly where that shortens the longest warp), the partial results in
//       shared memory, and the combine of those 16 rows of every token, j in order -> out (a CTA
//       with exactly two tiles streams both in one pass of two-tile chunks where its warps have at
//       most two items each). No z round trip, one hand-off (FC1 -> FC2, per expert) instead of two.
// The split points depend only on the batch and the grid: bitwise reproducible on one GPU. Its
// warps stream through rings of kWideDepth chunks in FC1 and kWideFc2Depth in FC2 (backend_api.hpp
// says why; kWideFc2NarrowDepth where a one-tile CTA requests its FC2 weights before the wait).
// (One instantiation per numerics mode: the W4A16 one carries none of W4A4's code - the
// quantization of x and h - so W4A4's code does not move W4A16's registers and layout.)
const void* wide_decode_kernel_ptr(bool w4a4);

#ifdef FP4MOE_DECODE_TRACE
// Profiling build only: clears the timeline, and prints a per-phase summary of the last
// launch (start / dependency ready / end of every task, relative to the first CTA's start).
void decode_trace_reset();
void decode_trace_print();
#endif

}  // namespace fp4moe::cuda
