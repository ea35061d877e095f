// fp4moe: the fused NVFP4 MoE decode kernel. See decode_kernel.cuh for the design and
// decode_layout.hpp for the prepared weight layout it streams.
#include "cuda/backend_api.hpp"
#include "cuda/common.cuh"
#include "cuda/decode_kernel.cuh"
#include "cuda/decode_layout.hpp"
#include "cuda/nvfp4_device.cuh"

#ifdef FP4MOE_DECODE_TRACE
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <vector>
#endif

namespace fp4moe::cuda {

#ifdef FP4MOE_DECODE_TRACE
// Profiling build (FP4MOE_DECODE_TRACE): globaltimer stamps per task and per CTA of the last launch.
constexpr int kTraceTasks = 1 << 16, kTraceCtas = 4096;
__device__ unsigned long long g_trace_task[kTraceTasks][4];  // kind | warp << 4, start, ready, end
__device__ unsigned long long g_trace_cta[kTraceCtas][4];    // start, after the prologue, end, SM
__device__ int g_trace_meta[5];                              // total, (unused), n1, n2, grid
// Per warp (its last task's chunks): when chunk c's data was there, and when its MMAs had finished
// (the stamp waits for the accumulators, so it includes draining the MMAs).
constexpr int kTraceWarpsC = 4096, kTraceChunks = 64;
__device__ unsigned long long g_trace_chunk[kTraceWarpsC][kTraceChunks][2];
// Per CTA, thread 0's prologue steps; per FC1 or FC2 task, its epilogue (pass end, activation
// done, stores done, signalled)
constexpr int kTraceMarks = 5;
__device__ unsigned long long g_trace_mark[kTraceCtas][kTraceMarks];
__device__ unsigned long long g_trace_epi[kTraceTasks][4];
// The wide kernel, per CTA and warp: when it reached each of kWideSteps steps (decode_trace_print;
// a step not reached in the last launch keeps an earlier launch's stamp, before that launch's start)
constexpr int kWideSteps = 17;
__device__ unsigned long long g_trace_wide[kTraceCtas][kWideWarps][kWideSteps];
__device__ __forceinline__ unsigned long long trace_now() {
  unsigned long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}
#define FP4MOE_TRACE(...) __VA_ARGS__
#else
#define FP4MOE_TRACE(...)
#endif

namespace {


// The dequantized MMA operand is the weight times 2^-63 (see dequant_word).
constexpr float kWeightShift = 9223372036854775808.0f;  // 2^63

// ---- PTX wrappers (the shared ones are in nvfp4_device.cuh) ----
// acquire load: a counter that says "this data is complete" must be read this way before the data.
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ __nv_bfloat162 bits_bf2(uint32_t v) { return *reinterpret_cast<__nv_bfloat162*>(&v); }

// One prepared word (8 e2m1 codes) -> the four bf16x2 A registers of one MMA. The bit trick:
// sign -> bit 15 and the 3 magnitude bits -> bits 8..6 make a bf16 equal to the e2m1 value
// times 2^-126 (the two smallest codes are bf16 subnormals); the prepared layout scatters each
// code's bits so that one rotate and one mask put them there (fp4_bits.hpp).
// One multiply by the row's block scale times 2^63 then gives the weight times 2^-63 exactly,
// in the normal range. The MMA is scale-invariant in fp32, and the epilogue scale carries the
// 2^63 back (decode.cu), so the result is bitwise what the unscaled weights would give.
__device__ __forceinline__ void dequant_word(uint32_t w, __nv_bfloat162 s_lo, __nv_bfloat162 s_hi, uint32_t (&a)[4]) {
  a[0] = bf2_bits(__hmul2(bits_bf2(word_reg_bits(w, 0)), s_lo));
  a[1] = bf2_bits(__hmul2(bits_bf2(word_reg_bits(w, 1)), s_hi));
  a[2] = bf2_bits(__hmul2(bits_bf2(word_reg_bits(w, 2)), s_lo));
  a[3] = bf2_bits(__hmul2(bits_bf2(word_reg_bits(w, 3)), s_hi));
}

// Weights are read once per call: they are copied with an evict-first L2 policy
// (l2_evict_first_policy), so they do not push out the small reused data (x, h, z); measured on
// an H200: 5% faster at 8..64 tokens. They are copied through L1 (cp.async.ca), not around it
// (.cg), although nothing reuses them there: measured on an H200, one lease, 2-15% faster at
// 2..64 tokens for all four bench presets (qwen3 M = 64 117.5 -> 103.1 us, deepseek-v3 M = 16
// 689.7 -> 636.3), -1..8% at one token. Why is not established: it acts like more bytes in
// flight per SM (a guess: the L1 path keeps more requests outstanding than the bypass).
__device__ __forceinline__ void cp_async16_weights(void* dst, const void* src, uint64_t pol) {
  asm volatile("cp.async.ca.shared.global.L2::cache_hint [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst)), "l"(src), "l"(pol));
}

// The SM this thread runs on (%smid: below %nsmid, not necessarily contiguous).
__device__ __forceinline__ unsigned sm_id() {
  unsigned sm;
  asm volatile("mov.u32 %0, %%smid;" : "=r"(sm));
  return sm;
}

// Expert e's completion counter among those of one kind (fc1_done or fc2_done).
__device__ __forceinline__ unsigned* done_ctr(unsigned* kind, int e) { return kind + e * kDecodeCounterStride; }
__device__ __forceinline__ const unsigned* done_ctr(const unsigned* kind, int e) { return kind + e * kDecodeCounterStride; }
__device__ __forceinline__ unsigned ld_relaxed(const unsigned* p) {
  unsigned v;
  asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];\n" : "=r"(v) : "l"(p) : "memory");
  return v;
}
// Waits until every lane's *ctr >= target (lanes with ctr == nullptr do not wait): the lanes
// poll in parallel with a growing back-off from kFirstSleep ns, each acquires its counter, and the
// warp barrier then orders the data reads of every lane after all of them. The polls are relaxed
// loads then one acquire, or - kAcquirePoll, where no other warp of the SM reads through L1
// meanwhile (the wide kernel's FC2) - acquire loads: a round trip less once the count is there.
template <bool kAcquirePoll = false, unsigned kFirstSleep = 32>
__device__ __forceinline__ void wait_counts(const unsigned* ctr, unsigned target) {
  if (ctr != nullptr) {
    unsigned ns = kFirstSleep;
    while ((kAcquirePoll ? ld_acquire(ctr) : ld_relaxed(ctr)) < target) {
      __nanosleep(ns);
      ns = ns < 256 ? ns * 2 : ns;
    }
    if (!kAcquirePoll) (void)ld_acquire(ctr);
  }
  __syncwarp();
}
// Waits until *ctr >= target. One lane polls with relaxed loads and a growing back-off (an acquire
// per poll would invalidate L1 and load L2 for every waiting warp), then every lane acquires
// before reading the data the counter covers.
__device__ __forceinline__ void wait_count(const unsigned* ctr, unsigned target, int lane) {
  if (lane == 0) {
    unsigned ns = 64;
    while (ld_relaxed(ctr) < target) {
      __nanosleep(ns);
      ns = ns < 256 ? ns * 2 : ns;  // __nanosleep may sleep up to twice this: keep wake-ups prompt
    }
  }
  __syncwarp();
  (void)ld_acquire(ctr);
}
// Signals one more completion of *ctr after this warp's writes (the h rows of an FC1 task, or a
// Q slot): the warp barrier orders every lane's writes before lane 0's release add, which makes
// them visible to whoever acquires the counter. (A release add instead of __threadfence() and a
// relaxed add: MEMBAR.ALL.GPU in place of MEMBAR.SC.GPU and an L1 invalidation. Measured on an
// H200, one lease, two runs: the wide kernel at one token of qwen3-30b-a3b 18.1 -> 17.6 us, two
// tokens 22.2 -> 21.8; the fused kernel within +-0.2 us.)
__device__ __forceinline__ void signal_count(unsigned* ctr, int lane) {
  __syncwarp();
  if (lane == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(ctr) : "memory");
}

// A routed pair's activation row (Routing::row_of_slot): its token's x row in W4A16, its own xq
// row in W4A4 (xq is quantized per pair: quantize_x_share).
__device__ __forceinline__ int act_row(int pair, int k, bool w4a4) { return w4a4 ? pair : pair / k; }

struct Routing {
  short* slot_of_pair;  // [P] -1 when the id is invalid (the id itself while ranking)
  short* row_of_slot;   // [P] its activation row: its token's x row (W4A16), its pair's xq row (W4A4)
  short* exp_of_slot;   // [P]
  int* count;           // [E]
  int* off;             // [E]
  int* active;          // [E] active experts, ascending
  int* base;            // [E] the first token tile of active expert a
  int* scalars;         // [0] = active experts, [1] = valid pairs, [2] = token tiles
  unsigned long long* tokens;  // [E] bit t: token t routes to the expert (then: ranking scratch)
  unsigned long long* warp_sums;  // [kDecodeWarps] block-scan scratch
  short* tile_act;      // [P] the active expert of each token tile (up to 8 tokens of one expert)
};

// Where one task's pieces are: chunk c's weights at w + c * stride, group g's scales at
// s + g * stride (stride = the expert's tasks x 1 KB: chunk-major, see decode_layout.hpp); a
// two-tile pass's second tile t1 bytes after the first (512: the task's own second tile; the wide
// kernel's FC2 also pairs output tiles ot and ot + grid, whose pieces are grid x 512 bytes apart:
// tile ot's are at ot x 512 within a chunk).
struct TaskStream {
  const uint8_t* w;
  const uint8_t* s;
  long long stride;
  int t1;
};
__device__ __forceinline__ TaskStream task_stream(const uint8_t* base, long long expert_bytes, int e, int tasks, int w,
                                                  int chunks) {
  const uint8_t* blk = base + static_cast<long long>(e) * expert_bytes;
  const long long stride = static_cast<long long>(tasks) * 1024;
  return {blk + static_cast<long long>(w) * 1024, blk + chunks * stride + static_cast<long long>(w) * 1024, stride, 512};
}
// The same task from chunk c0 on: its weights at chunk c0, its scales at c0's group (a pass that
// starts inside the group is given c0 % 8 as its phase: task_pass).
__device__ __forceinline__ TaskStream from_chunk(TaskStream ts, int c0) {
  ts.w += c0 * ts.stride, ts.s += c0 / 8 * ts.stride;
  return ts;
}

// Per-warp staging (lane-private 16-byte slices, so no barrier is needed): weight slots
// [D][tiles][32 lanes], scale slots [2 groups][tiles][32 lanes], activation slots
// [D][2 halves][32 lanes].
struct Staging {
  uint4* w;
  uint4* s;
  uint4* b;
};
// Warp warp's staging for a ring of kDepth chunks of kTiles tiles (decode_staging_pieces(kDepth,
// kTiles) pieces), its warp's pieces kPieces x 512 bytes apart from the start of a CTA's shared memory.
template <int kDepth, int kTiles, int kPieces, int kBLanes = 32>
__device__ __forceinline__ Staging warp_staging(unsigned char* smem, int warp) {
  static_assert(decode_staging_pieces(kDepth, kTiles, kBLanes) <= kPieces, "a warp's staging within its pieces");
  Staging st;
  st.w = reinterpret_cast<uint4*>(smem) + warp * kPieces * 32;
  st.s = st.w + kDepth * kTiles * 32;
  st.b = st.s + 2 * kTiles * 32;
  return st;
}

// One task over its chunks [0, nch): acc[t] = tile t's 16 rows x the token tile's 8 columns
// (the mma.sync accumulator layout). Weights and activations stream through one cp.async ring,
// D chunks deep, a lane copying exactly the 16-byte slices it reads (its 16 K-values of token
// column r). The first D chunks' weights are issued before before_b() (a dependency wait), their
// activations after it - or, interleaved, both after it - and from then on every chunk is one
// group of both. (Measured on an H200:
// activations loaded into registers one or two chunks ahead left each chunk waiting a full L2
// round trip; a pure cp.async stream of 1 KB pieces, 4 deep, reads 4.2-4.5 TB/s when every warp
// streams.)
// The activations are copied through L1 (cp.async.ca), where the warps of an SM that read the
// same token rows share them. x is read-only; xq and h are written by other warps of this launch,
// but only before the counter that before_b() acquires is complete, and the acquire (ld.acquire.gpu)
// orders this lane's later reads after those writes - it invalidates the SM's L1, and no warp
// writes those rows again in this launch (the combine reads z the same way). Measured on an H200:
// x from L2 only was 10-40% slower; h and xq from L2 only, 2-21% slower in W4A16 and 2-29% in
// W4A4 (qwen3, nemotron, gpt-oss-120b at 1..64 tokens, one lease; the most at 64 tokens).
//
// kTiles = 1 streams one 16-row tile of the task (ts then points at that tile's pieces; the wide
// kernel's FC2). phase (0..7) is the first chunk's place in its scale group when the pass starts
// inside a group (ts.s then points at that group): its scales are loaded with the first chunk.
struct NoHook {
  __device__ void operator()() const {}
};
template <int kTiles, int kDepth = kDecodeDepth, int kBLanes = 32, typename BeforeB, typename AfterIssue = NoHook>
__device__ __forceinline__ void task_pass(const TaskStream& ts, int nch, const Staging& st, int lane,
                                          const __nv_bfloat16* bbase, int brow, int kvalid, float (&acc)[kTiles][4],
                                          BeforeB before_b, unsigned long long& t_ready, int phase = 0,
                                          bool interleave = false, AfterIssue after_issue = {}) {
  constexpr int D = kDepth;
  static_assert(D == 2 || D == 4 || D == 8, "the ring of D slots must divide a scale group of 8 chunks");
  static_assert(kTiles == 1 || kTiles == 2, "a task has two tiles");
  static_assert(kBLanes == 32 || kBLanes == 8, "activation slices of every lane, or of token columns 0 and 1");
  (void)t_ready;  // stamped in the profiling build only
  const int q = lane & 3;
#pragma unroll
  for (int t = 0; t < kTiles; ++t)
#pragma unroll
    for (int i = 0; i < 4; ++i) acc[t][i] = 0.0f;

  // Where the next chunk's weights (and, at a group start, its group's scales) are: the
  // pointers advance by the stride, so the loop does no 64-bit index math.
  const uint8_t* wsrc = ts.w + lane * 16;
  const uint8_t* ssrc = ts.s + lane * 16;
  const uint64_t pol = l2_evict_first_policy();
  auto issue_w = [&](int slot, int c) {  // chunk c's weights (issued in order)
    if (c < nch) {
      if (((phase + c) & 7) == 0 || (phase != 0 && c == 0)) {
        const int gs = ((phase + c) >> 3) & 1;
        cp_async16_weights(&st.s[(gs * kTiles + 0) * 32 + lane], ssrc, pol);
        if (kTiles == 2) cp_async16_weights(&st.s[(gs * kTiles + 1) * 32 + lane], ssrc + ts.t1, pol);
        ssrc += ts.stride;
      }
      cp_async16_weights(&st.w[(slot * kTiles + 0) * 32 + lane], wsrc, pol);
      if (kTiles == 2) cp_async16_weights(&st.w[(slot * kTiles + 1) * 32 + lane], wsrc + ts.t1, pol);
      wsrc += ts.stride;
    }
  };
  // chunk c's activations: this lane's 16 K-values of its token column, K-values 64c + 16q ..
  // + 15 of the row at element offset brow of bbase (-1: no such column). As element offsets,
  // valid while boff < bend (unsigned: an absent column has boff = ~0); an invalid slice is
  // zero-filled, read from bbase itself.
  unsigned boff = brow >= 0 ? static_cast<unsigned>(brow + q * 16) : ~0u;
  const unsigned bend = brow >= 0 ? static_cast<unsigned>(brow + kvalid) : 0u;
  auto issue_b = [&](int slot, int c) {
    if (c < nch) {
      const bool valid = boff < bend;
      const __nv_bfloat16* src = bbase + (valid ? boff : 0u);
      if (kBLanes == 32 || lane < kBLanes) {
        cp_async16<true>(&st.b[(slot * 2 + 0) * kBLanes + lane], src, valid ? 16 : 0);
        cp_async16<true>(&st.b[(slot * 2 + 1) * kBLanes + lane], src + 8, valid ? 16 : 0);
      }
      boff += 64;
    }
  };
  // groups: W[0] .. W[D - 1], then B[0] .. B[D - 1], then (W + B)[c] for each later chunk c;
  // interleaved, before_b() first and (W + B)[c] from the first chunk on: chunk c's data is
  // complete once at most D - 1 groups are pending, in every case. Interleaved, chunk 0 waits
  // for its own data only, not for the first D chunks' weights: used where before_b() waits for
  // nothing (FC1 in W4A16; measured on an H200, one lease: the wide kernel's FC1 reached its
  // first data 0.9 us sooner at one token of qwen3-30b-a3b, in-graph time 0.2-0.6 us less at 1..2
  // tokens of qwen3-30b-a3b and nemotron for both kernels), and by the wide kernel's FC2, whose
  // weights gain nothing from being requested before the wait (measured: 0.1-0.8 us faster at 1..2
  // tokens; requesting 8 chunks ahead instead of 4 was 0.3-1.6 us slower) - but in the CTAs that
  // are not what the launch waits for (`early` in the wide kernel). after_issue() runs once
  // the first D groups are issued (the wide kernel's routing barrier, in its first FC1 pass).
  if (interleave) {
    before_b();
#pragma unroll
    for (int i = 0; i < D; ++i) {
      issue_w(i, i);
      issue_b(i, i);
      cp_async_commit();
    }
  } else {
#pragma unroll
    for (int i = 0; i < D; ++i) {
      issue_w(i, i);
      cp_async_commit();  // one group per chunk (empty past the end), so wait_group counts chunks
    }
    before_b();
#pragma unroll
    for (int i = 0; i < D; ++i) {
      issue_b(i, i);
      cp_async_commit();
    }
  }
  after_issue();
  FP4MOE_TRACE(if (lane == 0 && blockDim.x == kWideWarps * 32 && blockIdx.x < kTraceCtas)
                 g_trace_wide[blockIdx.x][threadIdx.x >> 5][kTiles == 2 ? 14 : 15] = trace_now();)
  // One chunk per iteration, its ring slot and scale bytes indexed at run time, unrolled by 4.
  // (Measured on an H200 against unrolling by a whole scale group of 8 chunks with compile-time
  // slots: as fast or 1-3% faster, in 16% less code. Not unrolled at all: up to 17% slower.)
#pragma unroll 4
  for (int c = 0; c < nch; ++c) {
    cp_async_wait<D - 1>();
    FP4MOE_TRACE(if (c == 0) t_ready = trace_now();)
    FP4MOE_TRACE(const int twarp = blockIdx.x * kDecodeWarps + (threadIdx.x >> 5);
                 if (lane == 0 && twarp < kTraceWarpsC && c < kTraceChunks) g_trace_chunk[twarp][c][0] = trace_now();)
    const int slot = c & (D - 1), u = (phase + c) & 7;
    const uint4 w0 = st.w[(slot * kTiles + 0) * 32 + lane];
    const uint4 w1 = kTiles == 2 ? st.w[(slot * kTiles + 1) * 32 + lane] : w0;
    const bool bstaged = kBLanes == 32 || lane < kBLanes;  // (the other lanes' columns are zero)
    const uint4 zero4 = make_uint4(0u, 0u, 0u, 0u);
    const uint4 bv[2] = {bstaged ? st.b[(slot * 2 + 0) * kBLanes + lane] : zero4,
                         bstaged ? st.b[(slot * 2 + 1) * kBLanes + lane] : zero4};
    const uint32_t* bw = reinterpret_cast<const uint32_t*>(&bv[0]);
    __nv_bfloat162 s_lo[kTiles], s_hi[kTiles];
#pragma unroll
    for (int t = 0; t < kTiles; ++t) {
      // this chunk's two scale bytes (rows r, r + 8) of the group's 16-byte lane slice
      const uint32_t sw =
          reinterpret_cast<const uint32_t*>(&st.s[((((phase + c) >> 3) & 1) * kTiles + t) * 32 + lane])[u >> 1];
      const uint32_t pair = (u & 1) ? (sw >> 16) : (sw & 0xFFFF);
      // e4m3x2 -> f16x2 -> f32 x 2^63 -> bf16x2 (all exact), then (s_r, s_r) and (s_r8, s_r8)
      const float2 sf = __half22float2(__half2(__nv_cvt_fp8x2_to_halfraw2(static_cast<__nv_fp8x2_storage_t>(pair), __NV_E4M3)));
      const __nv_bfloat162 sb = __floats2bfloat162_rn(sf.x * kWeightShift, sf.y * kWeightShift);
      s_lo[t] = __lows2bfloat162(sb, sb);
      s_hi[t] = __highs2bfloat162(sb, sb);
    }
    // the slot's data is in registers: refill it with chunk c + D
    issue_w(slot, c + D);
    issue_b(slot, c + D);
    cp_async_commit();
    const uint32_t wv[2][4] = {{w0.x, w0.y, w0.z, w0.w}, {w1.x, w1.y, w1.z, w1.w}};
#pragma unroll
    for (int m = 0; m < 4; ++m) {
      uint32_t a[kTiles][4];
#pragma unroll
      for (int t = 0; t < kTiles; ++t) dequant_word(wv[t][m], s_lo[t], s_hi[t], a[t]);
#pragma unroll
      for (int t = 0; t < kTiles; ++t) mma_bf16(acc[t], a[t], bw[2 * m], bw[2 * m + 1]);
    }
    FP4MOE_TRACE(if (lane == 0 && twarp < kTraceWarpsC && c < kTraceChunks) {
      const uint32_t dep = __float_as_uint(acc[0][0] + acc[kTiles - 1][3]);  // the stamp after the MMAs' results
      g_trace_chunk[twarp][c][1] = trace_now() + (dep == 0x7fffffffu);
    })
  }
  cp_async_wait<0>();
}

// One FC1 or FC2 task: (token tile, row task w) -> what it covers. A token tile is up to
// 8 tokens of one expert, so an expert with more tokens gives several tasks per row block;
// they are adjacent in the task order, run at the same time and share the weight reads through
// L2. Consecutive tasks (run at the same time on consecutive CTAs) are consecutive row tasks,
// so they read adjacent memory.
struct GemmTask {
  int w, e, cnt, off;
};
__device__ __forceinline__ GemmTask tile_task(int tile, int w, const Routing& R) {
  GemmTask t;
  t.w = w;
  const int a = R.tile_act[tile];
  t.e = R.active[a];
  const int first = (tile - R.base[a]) * 8;  // the tile's first token of the expert
  t.cnt = min(8, R.count[t.e] - first);
  t.off = R.off[t.e] + first;
  return t;
}
__device__ __forceinline__ GemmTask gemm_task(int idx, int ntasks, const Routing& R) {
  return tile_task(idx / ntasks, idx % ntasks, R);
}
// x / d where magic is ceil(2^32 / d), 0 for d = 1 (exact while x * d < 2^32: DecodeParams).
__device__ __forceinline__ unsigned magic_div(unsigned x, unsigned magic) { return magic ? __umulhi(x, magic) : x; }
// gemm_task with the division by ntasks done as a multiply (magic_div).
__device__ __forceinline__ GemmTask gemm_task_magic(int idx, int ntasks, unsigned magic, const Routing& R) {
  const int tile = static_cast<int>(magic_div(static_cast<unsigned>(idx), magic));
  return tile_task(tile, idx - tile * ntasks, R);
}
// Token tiles of an expert with cnt tokens.
__device__ __forceinline__ int token_tiles(int cnt) { return (cnt + 7) / 8; }

// An FC1 task's activation row: the element offset of token column r's row in xq (W4A4: its
// pair's) or x (its token's), -1 where the token tile has no such column. (Both have H valid
// K-values a row: the ring zero-fills past them, up to the 64-multiple of the prepared chunks.)
__device__ __forceinline__ int fc1_brow(const DecodeParams& p, const Routing& R, const GemmTask& gt, int r) {
  return r < gt.cnt ? R.row_of_slot[gt.off + r] * p.H : -1;
}

// One combine task: outputs [cc * kCols, (cc + 1) * kCols) of token t, out = bf16(sum over j in
// order of w[t, j] * z[slot(t, j)]), the z rows of kPairs pairs loaded at once.
template <int kCols, int kPairs>
__device__ __forceinline__ void combine_task(const DecodeParams& p, const Routing& R, const unsigned* fc2_done, int t,
                                             int cc, int lane, unsigned long long& t_ready) {
  (void)t_ready;  // stamped in the profiling build only
  constexpr int L = kCols / 32, NV = L / 4;  // outputs per lane, in float4s
  const int col = cc * kCols + lane * L;
  float acc[L];
#pragma unroll
  for (int i = 0; i < L; ++i) acc[i] = 0.0f;
  {
    // lane j waits for pair j's expert (top-k <= 32): all k waits at once
    const int slot = lane < p.k ? R.slot_of_pair[t * p.k + lane] : -1;  // -1: invalid id, skipped
    const int ej = slot >= 0 ? R.exp_of_slot[slot] : 0;
    wait_counts(slot >= 0 ? done_ctr(fc2_done, ej) : nullptr, static_cast<unsigned>(p.n2_tasks * token_tiles(R.count[ej])));
  }
  FP4MOE_TRACE(t_ready = trace_now();)
  // z rows kPairs pairs at a time (their loads in flight together), added in pair order
  for (int j0 = 0; j0 < p.k; j0 += kPairs) {
    float4 zv[kPairs][NV];
    float wt[kPairs];
#pragma unroll
    for (int u = 0; u < kPairs; ++u) {
      const int j = j0 + u;
      const int slot = j < p.k ? R.slot_of_pair[t * p.k + j] : -1;
      wt[u] = 0.0f;
#pragma unroll
      for (int v = 0; v < NV; ++v) zv[u][v] = make_float4(0.0f, 0.0f, 0.0f, 0.0f);
      if (slot >= 0 && col < p.H) {
        wt[u] = p.wts[t * p.k + j];
        const float4* zr = reinterpret_cast<const float4*>(p.z + static_cast<long long>(slot) * p.H + col);
#pragma unroll
        for (int v = 0; v < NV; ++v) zv[u][v] = zr[v];
      }
    }
#pragma unroll
    for (int u = 0; u < kPairs; ++u) {
      const int j = j0 + u;
      if (j >= p.k || R.slot_of_pair[t * p.k + j] < 0) continue;
#pragma unroll
      for (int v = 0; v < NV; ++v) {
        const float z4[4] = {zv[u][v].x, zv[u][v].y, zv[u][v].z, zv[u][v].w};
#pragma unroll
        for (int i = 0; i < 4; ++i) acc[4 * v + i] = __fadd_rn(acc[4 * v + i], __fmul_rn(wt[u], z4[i]));
      }
    }
  }
  if (col < p.H) {
    __nv_bfloat162 o[L / 2];
#pragma unroll
    for (int i = 0; i < L / 2; ++i) o[i] = __floats2bfloat162_rn(acc[2 * i], acc[2 * i + 1]);
    __nv_bfloat16* dst = p.out + static_cast<long long>(t) * p.H + col;
    if constexpr (L == 8) *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(o);
    else *reinterpret_cast<uint2*>(dst) = *reinterpret_cast<const uint2*>(o);
  }
}

// The routing tables in shared memory at rbase (decode_smem_bytes: P pairs, E experts, nwarps warps).
__device__ __forceinline__ Routing carve_routing(unsigned char* rbase, int P, int E, int nwarps) {
  Routing R;
  R.tokens = reinterpret_cast<unsigned long long*>(rbase);
  R.warp_sums = R.tokens + E;
  R.count = reinterpret_cast<int*>(R.warp_sums + nwarps);
  R.off = R.count + E;
  R.active = R.off + E;
  R.base = R.active + E;
  R.scalars = R.base + E;
  R.slot_of_pair = reinterpret_cast<short*>(R.scalars + 4);
  R.row_of_slot = R.slot_of_pair + P;
  R.exp_of_slot = R.row_of_slot + P;
  R.tile_act = R.exp_of_slot + P;

  return R;
}

// The prologue every CTA runs, redundantly, with all its threads: the routed pairs compacted per
// expert into slots, in a deterministic order (expert, then pair index), so every CTA agrees.
__device__ __forceinline__ void build_routing(const DecodeParams& p, Routing R, int P, int E, int lane, int warp,
                                              bool w4a4) {
  // ---- prologue: deterministic per-expert compaction of the routed pairs, by (expert, pair) ----
  // Every CTA builds the same tables, in parallel: counts and token masks with shared-memory
  // integer atomics (order-free); one block-wide scan over the experts gives the offsets, the
  // active list and the token tiles; a pair's rank in its expert is the number of earlier tokens
  // routed to that expert (a popcount of the mask). A token that names one expert twice (not
  // what a top-k router gives, but allowed) makes the popcount short: then warp 0 ranks the
  // pairs in order instead, 32 at a time. Same slots either way.
  static_assert(kDecodeMaxTokens <= 64, "one 64-bit token mask per expert");
  for (int e = threadIdx.x; e < E; e += blockDim.x) R.count[e] = 0, R.tokens[e] = 0;
  __syncthreads();
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_mark[blockIdx.x][2] = trace_now();)
  unsigned bad = 0;
  for (int i = threadIdx.x; i < P; i += blockDim.x) {
    const int id = p.ids[i];
    const bool ok = id >= 0 && id < E;
    R.slot_of_pair[i] = static_cast<short>(ok ? id : -1);  // the id until the pair is ranked
    if (ok) {
      atomicAdd(&R.count[id], 1);
      atomicOr(&R.tokens[id], 1ull << (i / p.k));
    } else {
      ++bad;
    }
  }
  if (blockIdx.x == 0 && bad) atomicAdd(p.invalid, bad);
  __syncthreads();
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_mark[blockIdx.x][3] = trace_now();)
  bool dup = false;
  {
    // exclusive scan over the experts of (pairs, active experts, token tiles), 21 bits each;
    // thread i takes a contiguous range of experts
    constexpr unsigned long long kField = (1ull << 21) - 1;
    auto pack = [](int c) {
      return static_cast<unsigned long long>(c) | (static_cast<unsigned long long>(c > 0) << 21) |
             (static_cast<unsigned long long>(token_tiles(c)) << 42);
    };
    const int per = (E + blockDim.x - 1) / blockDim.x;
    const int e0 = min(E, static_cast<int>(threadIdx.x) * per), e1 = min(E, e0 + per);
    unsigned long long sum = 0;
    for (int e = e0; e < e1; ++e) {
      sum += pack(R.count[e]);
      dup |= R.count[e] != __popcll(R.tokens[e]);
    }
    unsigned long long incl = sum;
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const unsigned long long v = __shfl_up_sync(0xffffffffu, incl, d);
      if (lane >= d) incl += v;
    }
    if (lane == 31) R.warp_sums[warp] = incl;
    dup = __syncthreads_or(dup);
    unsigned long long excl = incl - sum;
    for (int w = 0; w < warp; ++w) excl += R.warp_sums[w];
    if (threadIdx.x == blockDim.x - 1) {
      const unsigned long long tot = excl + sum;
      R.scalars[0] = static_cast<int>((tot >> 21) & kField);
      R.scalars[1] = static_cast<int>(tot & kField);
      R.scalars[2] = static_cast<int>(tot >> 42);
    }
    for (int e = e0; e < e1; ++e) {
      const int c = R.count[e];
      R.off[e] = static_cast<int>(excl & kField);
      if (c > 0) {
        const int a = static_cast<int>((excl >> 21) & kField), tile0 = static_cast<int>(excl >> 42);
        R.active[a] = e;
        R.base[a] = tile0;
        for (int j = 0; j < token_tiles(c); ++j) R.tile_act[tile0 + j] = static_cast<short>(a);
      }
      excl += pack(c);
    }
  }
  __syncthreads();
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_mark[blockIdx.x][4] = trace_now();)
  if (!dup) {
    for (int i = threadIdx.x; i < P; i += blockDim.x) {
      const int id = R.slot_of_pair[i];
      if (id >= 0) {
        const int t = i / p.k;
        const int slot = R.off[id] + __popcll(R.tokens[id] & ((1ull << t) - 1));
        R.slot_of_pair[i] = static_cast<short>(slot);
        R.row_of_slot[slot] = static_cast<short>(act_row(i, p.k, w4a4));
        R.exp_of_slot[slot] = static_cast<short>(id);
      }
    }
  } else if (warp == 0) {
    for (int e = lane; e < E; e += 32) R.tokens[e] = 0;  // now: pairs of the expert ranked so far
    __syncwarp();
    for (int b0 = 0; b0 < P; b0 += 32) {
      const int i = b0 + lane;
      const int id = i < P ? R.slot_of_pair[i] : -2;
      const unsigned mask = __match_any_sync(0xffffffffu, id);
      if (id >= 0) {
        const int slot = R.off[id] + static_cast<int>(R.tokens[id]) + __popc(mask & ((1u << lane) - 1u));
        R.slot_of_pair[i] = static_cast<short>(slot);
        R.row_of_slot[slot] = static_cast<short>(act_row(i, p.k, w4a4));
        R.exp_of_slot[slot] = static_cast<short>(id);
      }
      __syncwarp();
      if (id >= 0 && lane == __ffs(mask) - 1) R.tokens[id] += __popc(mask);
      __syncwarp();
    }
  }
}

// Q (W4A4): x quantized into xq with each routed pair's expert's FC1 input scale, a row per pair
// (its token's x row; a token with two pairs of one expert gets two equal rows), by every CTA at
// its start, a 16-block a thread: block j of the P x H / 16 goes to CTA j % grid, whose threads
// take them from its last thread down (the routing and its tables are computed from the first).
// Only the ids are needed, not the routing tables, so this overlaps the prologue, and a CTA
// signals its share with one release add once its prologue barrier has passed (q_all, the first
// word of the counter set); an FC1 task waits for the grid's count. Pairs with an invalid id are
// skipped (FC1 never reads them). Measured on an H200 (one lease, three runs each, us), against Q
// as tasks at the front of the task order (pieces of 32 blocks of a slot's row a warp, an FC1 task
// waiting for its expert's slots), whose warps had pushed FC1 tasks out of the first round where a
// batch's FC1 tasks nearly fill it: deepseek-v3 at one token 68.1-68.3 -> 62.5-62.8, at two
// 133.4-135.0 -> 117.4-118.1, gpt-oss-120b at four 71.9-72.3 -> 67.8-68.0, nemotron at eight
// 77.3-78.4 -> 76.2-76.8; slower where nothing had been pushed out, the prologue now longer by
// the blocks' round trips: qwen3-30b-a3b at one token 16.4-16.5 -> 16.8-16.9, at four 31.2-31.3
// -> 32.5, nemotron at four 44.0-44.2 -> 45.2-45.4, deepseek-v3 at four 188.4-189.9 -> 198.3-198.8.
// (Each warp doing its blocks once it had requested its first FC1 chunks instead, signalled per
// warp, was slower in 22 of the 28 bench cells; and quantizing x inside FC1's chunk loop, each lane
// its block of every chunk, with no xq at all, took twice as long from 4 tokens on - the
// arithmetic of every FC1 warp, not the bytes, then bounds the kernel.)
__device__ __forceinline__ void quantize_x_share(const DecodeParams& p, int P) {
  const int nb = p.H / 16, total = P * nb, G = static_cast<int>(gridDim.x);
  for (int j = static_cast<int>(blockIdx.x) + G * (static_cast<int>(blockDim.x) - 1 - static_cast<int>(threadIdx.x));
       j < total; j += G * static_cast<int>(blockDim.x)) {
    const int pair = j / nb, b = j - pair * nb;
    const uint4* src = reinterpret_cast<const uint4*>(p.x + static_cast<long long>(pair / p.k) * p.H + b * 16);
    uint4 u[2] = {__ldg(src), __ldg(src + 1)};
    const int e = __ldg(p.ids + pair);
    if (e < 0 || e >= p.E) continue;
    quantize_bf16_block16(u, __ldg(p.a13 + e));
    uint4* dst = reinterpret_cast<uint4*>(p.xq + static_cast<long long>(pair) * p.H + b * 16);
    dst[0] = u[0], dst[1] = u[1];
  }
}

// The FC1 epilogue of one task (row task w of an expert, token tile of cnt tokens from slot off):
// the epilogue scale, the activation, in W4A4 the FP4 re-quantization, and h's bf16 stores.
__device__ __forceinline__ void fc1_epilogue(const DecodeParams& p, bool w4a4, const float (&acc)[2][4], float g1,
                                             float is2, int w, int cnt, int off, int lane, int task) {
  (void)task;  // the profiling build's stamps
  const int r = lane >> 2, q = lane & 3;
  // thread holds, per tile, rows (r, r + 8) x tokens (2q, 2q + 1)
  float hv[2][2][2];  // [tile][row half or - for SwiGLU - unused][token]
#pragma unroll
  for (int t = 0; t < 2; ++t)
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      const float y0 = __fmul_rn(acc[t][j], g1), y1 = __fmul_rn(acc[t][2 + j], g1);
      if (p.swiglu) {
        hv[t][0][j] = __bfloat162float(__float2bfloat16_rn(__fmul_rn(silu_fast(y0), y1)));
        hv[t][1][j] = 0.0f;
      } else {
        const float r0 = fmaxf(y0, 0.0f), r1 = fmaxf(y1, 0.0f);
        hv[t][0][j] = __bfloat162float(__float2bfloat16_rn(__fmul_rn(r0, r0)));
        hv[t][1][j] = __bfloat162float(__float2bfloat16_rn(__fmul_rn(r1, r1)));
      }
    }
  if (w4a4) {
    // 16-blocks along i: SwiGLU - the task's 16 i (both tiles); ReLU^2 - each tile. The four
    // blocks' amax, then their scales and the eight values as one batch (act_quant_values).
    float m[4];  // [token j][tile]
#pragma unroll
    for (int j = 0; j < 2; ++j) {
      float m0 = fmaxf(fabsf(hv[0][0][j]), fabsf(hv[0][1][j]));
      float m1 = fmaxf(fabsf(hv[1][0][j]), fabsf(hv[1][1][j]));
      if (p.swiglu) m0 = m1 = fmaxf(m0, m1);
#pragma unroll
      for (int d = 4; d < 32; d <<= 1) {
        m0 = fmaxf(m0, __shfl_xor_sync(0xffffffffu, m0, d));
        m1 = fmaxf(m1, __shfl_xor_sync(0xffffffffu, m1, d));
      }
      m[2 * j] = m0, m[2 * j + 1] = m1;
    }
    float v[8];  // value 4j + 2t + hh in block 2j + t
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int t = 0; t < 2; ++t)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) v[4 * j + 2 * t + hh] = hv[t][hh][j];
    act_quant_values<8, 2>(v, m, is2);
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int t = 0; t < 2; ++t)
#pragma unroll
        for (int hh = 0; hh < 2; ++hh) hv[t][hh][j] = v[4 * j + 2 * t + hh];
  }
  FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][1] = trace_now();)
#pragma unroll
  for (int j = 0; j < 2; ++j) {
    const int tj = 2 * q + j;
    if (tj >= cnt) continue;
    __nv_bfloat16* hrow = p.h + static_cast<long long>(off + tj) * p.Ik;
#pragma unroll
    for (int t = 0; t < 2; ++t) {
      if (p.swiglu) {
        hrow[16 * w + 8 * t + r] = __float2bfloat16_rn(hv[t][0][j]);
      } else {
        hrow[32 * w + 16 * t + r] = __float2bfloat16_rn(hv[t][0][j]);
        hrow[32 * w + 16 * t + r + 8] = __float2bfloat16_rn(hv[t][1][j]);
      }
    }
  }
}

// The counter set of a launch whose epoch (the low bit of its launch count) is epoch.
__device__ __forceinline__ unsigned* counter_set(const DecodeParams& p, unsigned epoch) {
  return p.counters + kDecodeSmArrivalsAt + p.sm_ids + epoch * decode_counter_set(p.E, p.sm_ids);
}

// The end of a launch, by warp 0 of every CTA: the grid's last CTA to arrive (launch: the launch
// word before its arrival, read by thread 0 - lane 0 of warp 0) clears the counter set the next
// launch uses, then sets the arrivals back to zero and adds one launch (DecodeParams::counters).
// Every CTA has read the launch word when the last arrives, and the next launch begins after this
// one has ended: no ordering is needed within the launch.
__device__ __forceinline__ void finish_launch(const DecodeParams& p, unsigned long long launch, unsigned epoch, int E,
                                              int lane) {
  if (static_cast<unsigned>(__shfl_sync(0xffffffffu, launch, 0)) != gridDim.x - 1) return;
  const int set_words = decode_counter_set(E, p.sm_ids);
  unsigned* const next = counter_set(p, epoch ^ 1u);
  for (int i = lane; i < 1 + 2 * E; i += 32) next[i * kDecodeCounterStride] = 0;  // the completion counters
  for (int i = decode_done_words(E) + lane; i < set_words; i += 32) next[i] = 0;  // the rest
  // arrivals back to zero, launch count + 1 (the other set)
  if (lane == 0) atomicAdd(reinterpret_cast<unsigned long long*>(p.counters), (1ull << 32) - gridDim.x);
}

}  // namespace

template <bool kW4A4>
__global__ void __launch_bounds__(kDecodeWarps * 32, kDecodeMinBlocks) fused_decode_kernel(DecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_wait();  // a programmatic dependent launch (decode.cu): the previous kernel has completed
  pdl_launch_dependents();  // (a dependent waits for this grid's completion in its own pdl_wait)
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) {
    g_trace_cta[blockIdx.x][0] = trace_now(), g_trace_cta[blockIdx.x][3] = sm_id();
  })
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int P = p.T * p.k, E = p.E;
  // One or two atomics per CTA at launch, relaxed, their results used only after the routing
  // prologue (their round trips overlap it; nothing waits for them before). Measured on an H200:
  // with a load of the counter set's epoch and a release arrival among them instead (whose fence
  // waited for the other two), thread 0 started the prologue 1.3 us after the CTA, and the
  // prologue ended at 3.04 us instead of 2.40 (profiling build, qwen3-30b-a3b at one token);
  // in-graph time 0.2-0.6 us more at 1..8 tokens of qwen3-30b-a3b and nemotron (one lease, two
  // runs each).
  // - The launch word (DecodeParams::counters): this CTA's arrival and the launch's counter set,
  //   read in one atomic, so the grid's last CTA to arrive knows every CTA has read the set.
  // - A one-round batch's order needs the CTA's place on its SM at launch (see the first round
  //   below). When the SM ids are 0..SMs-1 (%nsmid equals the SM count, as on the H200 measured),
  //   a counter per SM id gives it. The counter wraps to zero at ctas_per_sm: the grid is
  //   ctas_per_sm CTAs per SM, all resident, so every SM holds exactly that many, and the counter
  //   returns to zero by the launch's end (it starts at zero: every launch leaves it so),
  //   whatever the next launch's grid. (Were that ever not so, a count left over would give a
  //   tier past the grid's - trapped after the prologue - or two CTAs one place.)
  const unsigned sms = gridDim.x / p.ctas_per_sm;
  const bool sm_ids_dense = static_cast<unsigned>(p.sm_ids) == sms;
  unsigned start_tier = 0, start_sm = 0;
  unsigned long long launch = 0;  // the launch word before this CTA's arrival
  if (threadIdx.x == 0) {
    if (sm_ids_dense) {
      start_sm = sm_id();
      start_tier = atomicInc(&p.counters[kDecodeSmArrivalsAt + start_sm], static_cast<unsigned>(p.ctas_per_sm - 1));
    }
    launch = atomicAdd(reinterpret_cast<unsigned long long*>(p.counters), 1ull);
  }
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_mark[blockIdx.x][0] = trace_now();)
  __shared__ int s_start_cta;
  __shared__ unsigned s_epoch;
  // The first FC1 chunks into L2 while the tables are built (DecodeParams::pf_chunks). Measured on
  // an H200 (one lease, two runs each, against none): 0.4-0.8 us faster at 1 and 2 tokens of
  // qwen3-30b-a3b, nemotron and gpt-oss-120b (qwen3 at 1 20.05 -> 19.3 us), within +-0.2 us
  // at 4 and 8; 8 chunks instead of 4 no better. (An L2 prefetch of a waiting FC2 task's
  // remaining chunks, issued once its expert's first FC1 task, or half of them, had ended, was
  // 1-17% slower at 1..8 tokens, as one at the start of the wait had been.)
  if (p.pf_chunks > 0) {  // segment 0 is the first scale group, then chunks 0, 1, ...
    const int seg = p.n1_tasks * 8;  // 128-byte lines of one chunk (or scale group) of all tasks
    const int total = (p.pf_chunks + 1) * P * seg;
    const long long stride = static_cast<long long>(p.n1_tasks) * 1024;
    for (int g = blockIdx.x * blockDim.x + threadIdx.x; g < total; g += gridDim.x * blockDim.x) {
      const int l = g % seg, i = (g / seg) % P, s = g / (seg * P);
      const int e = p.ids[i];
      if (e < 0 || e >= E) continue;
      const uint8_t* a = p.w1 + static_cast<long long>(e) * p.expert1_bytes + (s == 0 ? p.chunks1 : s - 1) * stride + l * 128;
      asm volatile("prefetch.global.L2 [%0];" ::"l"(a));
    }
  }
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_mark[blockIdx.x][1] = trace_now();)

  if (kW4A4) quantize_x_share(p, P);  // (signalled after the prologue's barrier)
  const Staging st = warp_staging<kDecodeDepth, 2, kDecodeStagingPieces>(smem, warp);
  unsigned char* rbase = smem + kDecodeWarps * kDecodeStagingPieces * 512;
  Routing R = carve_routing(rbase, P, E, kDecodeWarps);
  build_routing(p, R, P, E, lane, warp, kW4A4);
  if (threadIdx.x == 0) {
    // A count left over in a per-SM counter (its CTAs' arrivals not a multiple of ctas_per_sm)
    // would show as a tier past the grid's, or as two CTAs of one place: the first is caught here.
    if (start_tier >= static_cast<unsigned>(p.ctas_per_sm)) __trap();
    s_start_cta = static_cast<int>(start_tier * sms + start_sm);
    s_epoch = static_cast<unsigned>(launch >> 32) & 1u;
  }
  __syncthreads();

  const int ntile = R.scalars[2];
  unsigned* const set = counter_set(p, s_epoch);  // this launch's counters
  unsigned* const q_all = set;  // (decode_done_words)
  unsigned* fc1_done = set + kDecodeCounterStride;  // the kinds follow each other, E counters apart
  unsigned* fc2_done = fc1_done + E * kDecodeCounterStride;
  // W4A4: this CTA's share of Q is stored (the barrier above orders every thread's stores before
  // thread 0's release)
  if (kW4A4 && threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(q_all) : "memory");
  const int n1 = ntile * p.n1_tasks, n2 = ntile * p.n2_tasks;
  // Combine tasks: 128 outputs, 8 pairs' z rows at once, up to kCombineNarrowTokens tokens; 256
  // outputs, 4 pairs at once, above. Measured on an H200 (one lease, two runs each), 128 x 8
  // against 256 x 4: 0.2-1.0 us faster at 1..4 tokens (nemotron at 1 28.5 -> 27.9 us,
  // gpt-oss-120b at 1 37.8 -> 36.9), within +-0.5% at 16, slower at 64 (qwen3-30b-a3b 105.2 ->
  // 107.0: twice the tasks, each waiting for its experts).
  const bool narrow = p.T <= kCombineNarrowTokens;
  const int ccols = narrow ? kCombineColsNarrow : kCombineCols;
  const int ncol = (p.H + ccols - 1) / ccols;
  const int round = gridDim.x * kDecodeWarps;
  const int rest = n2 + p.T * ncol;  // FC2 and combine tasks
  // A two-round batch whose FC1 tasks overflow the first round: the FC1 tasks past it start
  // only when a first-round task ends, and their experts' FC2 tasks wait for them. Each of them
  // runs as nsplit tasks over consecutive ranges of K (at scale-group starts; as many, up to
  // kMaxFc1Splits, as still fit in the second round), side by side there: the splits before the
  // last write their partial sums, the last (the largest task index: it waits only on smaller
  // ones) adds them in split order to its own, so the sum does not depend on which finishes
  // first, and does the epilogue. (Measured on an H200, gpt-oss-120b at 4 tokens - 2700 FC1 tasks,
  // 2640 warps, i.e. 5 CTAs per SM, which max_tokens <= 16 leaves room for: halves 78.5 -> 75.7
  // us, up to four splits with the order below 69.7. With the 2112 warps of 4 CTAs per SM the 588
  // tasks past the first round do not fit as splits: such a batch gets the larger grid its
  // routing table allows - see DecodeKernel::setup in decode.cu.)
  int ov = 0, nsplit = 1, cps = p.chunks1;
  if (n1 > round) {
    for (int s = kMaxFc1Splits; s >= 2; --s) {
      const int c = ((p.chunks1 + s - 1) / s + 7) / 8 * 8;  // chunks per split
      if ((s - 1) * c < p.chunks1 && n1 + (n1 - round) * (s - 1) + rest <= 2 * round) {
        ov = n1 - round, nsplit = s, cps = c;
        break;
      }
    }
  }
  const int n1s = n1 + ov * (nsplit - 1);  // FC1 task slots: [0, round) whole tasks, then ov * nsplit splits
  const int total = n1s + n2 + p.T * ncol;
  const int r = lane >> 2, q = lane & 3;
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_cta[blockIdx.x][1] = trace_now();
               if (threadIdx.x == 0 && blockIdx.x == 0) {
                 g_trace_meta[0] = total, g_trace_meta[2] = n1, g_trace_meta[3] = n2;
                 g_trace_meta[4] = gridDim.x;
               })

  // The first round of tasks is static. When there are more than two rounds, a warp then claims
  // its next task from a counter as it starts a task (the atomic's round trip hides behind the
  // task), so warps that drew short tasks take more and all finish close together; with two
  // rounds or fewer the second is static too (measured: claiming there made 1..2-token batches
  // up to 25% slower, most likely because a task's fences wait for the warp's outstanding
  // atomic). Tasks are claimed in increasing order, a warp's current task is smaller than the one
  // it holds, and tasks only wait on smaller ones: the smallest unfinished task is always running,
  // so the waits cannot deadlock.
  const bool dynamic = total > 2 * round;
  unsigned* const task_claim = set + decode_done_words(E);
  unsigned claim = 0;  // lane 0: the task this warp takes next, claimed when the current one began
  // Where the first round goes. Every order below gives each warp one task of the round.
  // - One round (total <= round, the smallest batches): by the CTAs' place on their SM at launch -
  //   warp 0 of each SM's first CTA, SM by SM, then warp 1 of each, ..., then the second CTA's
  //   warps, and so on; the FC1 tasks, first in the order, get every warp index of a few CTAs per
  //   SM. Block order gives them the same warp index of many CTAs (qwen3-30b-a3b at one token:
  //   warp 0 of CTAs 0..383) - a likely reason it is slower: a CTA's warp w is commonly placed on
  //   the SM's scheduler w mod 4, so one scheduler of each SM ran all its FC1 warps. Profiling
  //   build, qwen3-30b-a3b at one token: FC1 tasks took 8.9 us (p50) this way. Measured on an
  //   H200, one lease, two runs each, against block order: qwen3-30b-a3b at 1 and 2 tokens 7-8%
  //   faster (25.0 -> 23.3 us, 31.0 -> 28.4), nemotron at 1 and 2 tokens 5-8%, gpt-oss-120b at 1
  //   token 3.5% faster and at 2 tokens 1.5% slower. Without dense SM ids: block order.
  // - Two rounds whose first is all FC1 tasks (every FC2 task in the second): the same order.
  //   An SM's CTAs stream at different speeds (profiling build, gpt-oss-120b at 4 tokens, block
  //   order: FC1 tasks took 30.8 us on CTAs 0..263, 38.2 on CTAs 528..659), and an expert's FC2
  //   waits for its slowest FC1 task. In block order every expert has tasks on the slow CTAs; in
  //   this order an expert's tasks are consecutive within one CTA tier, so the experts on the
  //   first tiers finish early and their FC2 tasks, next on the same warps, start while the later
  //   tiers still run FC1. Measured on an H200, one lease, two runs each, 5 CTAs per SM:
  //   gpt-oss-120b at 4 tokens 75.7 -> 70.8 us (with the halves above; 78.5 with neither).
  // - Other two-round batches: block order, task i to CTA i % grid. (Measured: the order by tier
  //   was slower there - nemotron at 4 tokens 48.7 -> 54.0 us, qwen3-30b-a3b at 5 tokens 41.3 ->
  //   43.2 - where the first round also holds FC2 tasks that wait.)
  // - More (the dynamic schedule): every warp is busy and the round is (Q and) FC1 tasks, then FC2
  //   tasks that wait for them; on an SM that every warp loads, the CTAs that started there first
  //   stream faster (measured on an H200, deepseek-v3 at two tokens: an SM's first CTA did its FC1
  //   tasks in 50 us, its last in 67), and an expert's FC2 waits for its slowest FC1 task. So the
  //   round goes by arrival after the prologue: the warps of one CTA per SM that got there first,
  //   then of one per SM that got there second, and so on - the FC1 tasks land on the CTAs that
  //   arrived first, the waiting FC2 tasks on the last. Measured, one lease, two runs each:
  //   deepseek-v3 at two tokens 126 -> 118 us, other batches of more than two rounds -1..+3%.
  //   (Numbered at launch instead, with two atomics before the prologue: 3-5% slower for
  //   qwen3-30b-a3b, nemotron and gpt-oss-120b at 8 tokens, 5% faster for deepseek-v3 at 4.)
  //   A CTA's tier (the how-manieth of its SM's CTAs to get there) comes from a counter per SM
  //   id, its rank in the tier from a counter per tier.
  // Every SM holds exactly ctas_per_sm CTAs (the grid is that many per SM, all resident:
  // cooperative launch), so each tier has one CTA per SM, and tier * SMs + rank numbers the CTAs
  // 0..grid-1.
  // this warp's task in the round when CTAs are numbered tier * SMs + rank
  auto first_by_tier = [&](int cta) {
    const int n = static_cast<int>(sms);
    return ((cta / n) * kDecodeWarps + warp) * n + cta % n;
  };
  int first = warp * gridDim.x + blockIdx.x;
  if (sm_ids_dense && (total <= round || (n1 >= round && total <= 2 * round))) first = first_by_tier(s_start_cta);
  if (dynamic) {
    __shared__ int s_cta;
    unsigned* const sm_arrive = set + decode_done_words(E) + 1;  // [sm_ids], then [kDecodeMaxTiers] per tier
    if (threadIdx.x == 0) {
      const unsigned sm = sm_id();
      if (sm >= static_cast<unsigned>(p.sm_ids)) __trap();  // an SM id past %nsmid
      const unsigned tier = atomicAdd(&sm_arrive[sm], 1u);
      if (tier >= static_cast<unsigned>(p.ctas_per_sm)) __trap();  // more CTAs on an SM than the grid allows
      const unsigned rank = atomicAdd(&sm_arrive[p.sm_ids + tier], 1u);
      if (rank >= sms) __trap();  // the grid spread over more SMs than it was sized for
      s_cta = static_cast<int>(tier * sms + rank);
    }
    __syncthreads();
    first = first_by_tier(s_cta);
  }
  for (int task = first; task < total;
       task = dynamic ? round + static_cast<int>(__shfl_sync(0xffffffffu, claim, 0)) : task + round) {
    if (dynamic && lane == 0) claim = atomicAdd(task_claim, 1u);
    unsigned long long t_ready = 0;
    FP4MOE_TRACE(const unsigned long long t_start = trace_now();)
    if (task < n1s) {
      // ---- FC1 + activation (+ W4A4 re-quantization) -> h ----
      // split: -1 all of K, else which of the unit's nsplit ranges of K
      const int hj = task - round, split = task >= round && ov > 0 ? hj % nsplit : -1, unit = hj / nsplit;
      const GemmTask gt = gemm_task(split < 0 ? task : round + unit, p.n1_tasks, R);
      const int w = gt.w, e = gt.e, cnt = gt.cnt, off = gt.off;
      TaskStream stream = task_stream(p.w1, p.expert1_bytes, e, p.n1_tasks, w, p.chunks1);
      const float g1 = p.g1[e];
      const float is2 = kW4A4 ? p.a2[e] : 1.0f;
      int brow = fc1_brow(p, R, gt, r), kvalid = p.H, nch = p.chunks1;
      if (split >= 0) {  // chunks [c0, c0 + cps), c0 a scale group's start
        const int c0 = split * cps;
        stream = from_chunk(stream, c0);
        nch = min(cps, p.chunks1 - c0), kvalid -= c0 * 64;
        if (brow >= 0) brow += c0 * 64;
      }
      float acc[2][4];
      auto wait_q = [&] {
        if (kW4A4) wait_count(q_all, gridDim.x, lane);
      };
      if (kW4A4) task_pass(stream, nch, st, lane, p.xq, brow, kvalid, acc, wait_q, t_ready);
      else task_pass(stream, nch, st, lane, p.x, brow, kvalid, acc, wait_q, t_ready, 0, true);
      FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][0] = trace_now();)
      // the unit's partial sums: [split][32 lanes][8]
      float4* const part =
          reinterpret_cast<float4*>(p.part) + (static_cast<long long>(unit) * (kMaxFc1Splits - 1) * 32 + lane) * 2;
      if (split >= 0 && split + 1 < nsplit) {
        __stcg(part + split * 64, make_float4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]));
        __stcg(part + split * 64 + 1, make_float4(acc[1][0], acc[1][1], acc[1][2], acc[1][3]));
        signal_count(&p.split_ctr[unit], lane);
      } else {
        if (split > 0) {
          wait_count(&p.split_ctr[unit], static_cast<unsigned>(nsplit - 1), lane);
          float4 pv[kMaxFc1Splits - 1][2];
#pragma unroll
          for (int s = 0; s < kMaxFc1Splits - 1; ++s) {
            const int sc = min(s, nsplit - 2);  // past the last partial: load it again (unused)
            pv[s][0] = __ldcg(part + sc * 64), pv[s][1] = __ldcg(part + sc * 64 + 1);
          }
          __syncwarp();
          if (lane == 0) p.split_ctr[unit] = 0;  // every split has arrived: ready for the next launch
#pragma unroll
          for (int t = 0; t < 2; ++t) {
            float v[4] = {pv[0][t].x, pv[0][t].y, pv[0][t].z, pv[0][t].w};
#pragma unroll
            for (int s = 1; s < kMaxFc1Splits - 1; ++s)
              if (s < nsplit - 1) {
                v[0] = __fadd_rn(v[0], pv[s][t].x), v[1] = __fadd_rn(v[1], pv[s][t].y);
                v[2] = __fadd_rn(v[2], pv[s][t].z), v[3] = __fadd_rn(v[3], pv[s][t].w);
              }
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[t][i] = __fadd_rn(v[i], acc[t][i]);
          }
        }
        fc1_epilogue(p, kW4A4, acc, g1, is2, w, cnt, off, lane, task);
        FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][2] = trace_now();)
        signal_count(done_ctr(fc1_done, e), lane);
        FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][3] = trace_now();)
      }
    } else if (task < n1s + n2) {
      // ---- FC2 -> z (fp32, complete sums) ----
      const GemmTask gt = gemm_task(task - n1s, p.n2_tasks, R);
      const int w = gt.w, e = gt.e, cnt = gt.cnt, off = gt.off;
      const TaskStream stream = task_stream(p.w2, p.expert2_bytes, e, p.n2_tasks, w, p.chunks2);
      const float g2 = p.g2[e];
      const int brow = r < cnt ? (off + r) * p.Ik : -1;  // element offset of token column r's row in h
      float acc[2][4];
      task_pass(stream, p.chunks2, st, lane, p.h, brow, p.Ik, acc, [&] {
        // all of h of the expert's tokens: every FC1 task of every one of its token tiles
        wait_count(done_ctr(fc1_done, e), static_cast<unsigned>(p.n1_tasks * token_tiles(R.count[e])), lane);
      }, t_ready);
      FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][0] = g_trace_epi[task][1] = trace_now();)
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        const int tj = 2 * q + j;
        if (tj >= cnt) continue;
        float* zrow = p.z + static_cast<long long>(off + tj) * p.H;
#pragma unroll
        for (int t = 0; t < 2; ++t) {
          const int o = 32 * w + 16 * t + r;
          if (o < p.H) zrow[o] = __fmul_rn(acc[t][j], g2);
          if (o + 8 < p.H) zrow[o + 8] = __fmul_rn(acc[t][2 + j], g2);
        }
      }
      FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][2] = trace_now();)
      signal_count(done_ctr(fc2_done, e), lane);
      FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) g_trace_epi[task][3] = trace_now();)
    } else {
      // ---- combine: out[t] = bf16(sum over j in order of w[t, j] * z[slot(t, j)]) ----
      const int idx = task - n1s - n2, t = idx / ncol, cc = idx % ncol;
      if (narrow) combine_task<kCombineColsNarrow, 8>(p, R, fc2_done, t, cc, lane, t_ready);
      else combine_task<kCombineCols, 4>(p, R, fc2_done, t, cc, lane, t_ready);
    }
    FP4MOE_TRACE(if (lane == 0 && task < kTraceTasks) {
      const int kind = task < n1s ? 1 : task < n1s + n2 ? 2 : 3;
      g_trace_task[task][0] = static_cast<unsigned long long>(kind) | (static_cast<unsigned long long>(blockIdx.x * kDecodeWarps + warp) << 4);
      g_trace_task[task][1] = t_start, g_trace_task[task][2] = t_ready, g_trace_task[task][3] = trace_now();
    })
    (void)t_ready;
  }

  // ---- the grid's last CTA to arrive: the next launch uses the other counter set, cleared here ----
  // (this launch never touches it: the previous launch, complete before this one began, used it).
  // Measured on an H200 (one lease, two runs each), against the last CTA to finish resetting the
  // counters (an atomic round trip and a fence at the end of every CTA): deepseek-v3, on the same
  // grid either way, 65.2 -> 62.6 us at one token and 115.5 -> 109.5 at two.
  if (warp == 0) finish_launch(p, launch, s_epoch, E, lane);
  FP4MOE_TRACE(if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_cta[blockIdx.x][2] = trace_now();)
}

// ---- the wide kernel (decode_kernel.cuh): batches of at most kWideMaxPairs routed pairs ----

// The wide kernel's routing, computed by every warp in registers from the ids alone (pairs lane
// and lane + 32): no shared-memory atomics, block scan or CTA barrier before a warp knows its
// first FC1 task, so it requests that task's first chunks before any table exists (the tables
// that later phases read are written by warp 0 meanwhile, behind one barrier). The token tiles
// are in the order of each expert's first pair, not of ascending expert ids (any order the ids
// alone fix is deterministic, and nothing sums across experts in tile order), an expert's pairs
// in pair order: a pair's slot is its expert's offset plus the expert's pairs before it.
struct WideRoute {
  int v[2];                  // the pairs' ids (-1 - pair index where absent or invalid: never equal)
  unsigned long long m[2];   // the pairs of each one's expert (bit i: pair i)
  unsigned excl[2];          // at an expert's first pair: its slot offset (bits 0..15), first tile (16..)
  unsigned first[2];         // whether the pair is its expert's first
  int nvalid, ntile, nbad;
};

__device__ __forceinline__ WideRoute wide_route(const DecodeParams& p, int P, int lane) {
  WideRoute w;
  int bad = 0;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = lane + 32 * h;
    const int id = i < P ? p.ids[i] : -1;
    const bool ok = i < P && id >= 0 && id < p.E;
    bad += i < P && !ok;
    w.v[h] = ok ? id : -1 - i;
  }
  const unsigned ma = __match_any_sync(0xffffffffu, w.v[0]), mb = __match_any_sync(0xffffffffu, w.v[1]);
  unsigned xa = 0, xb = 0;  // the lanes whose second pair has my first pair's id, and the reverse
  if (P > 32)
    for (int l = 0; l < 32; ++l) {
      xa |= static_cast<unsigned>(__shfl_sync(0xffffffffu, w.v[1], l) == w.v[0]) << l;
      xb |= static_cast<unsigned>(__shfl_sync(0xffffffffu, w.v[0], l) == w.v[1]) << l;
    }
  w.m[0] = ma | static_cast<unsigned long long>(xa) << 32;
  w.m[1] = xb | static_cast<unsigned long long>(mb) << 32;
  unsigned pk[2], incl[2];  // at a first pair: its expert's pairs (bits 0..15) and token tiles (16..)
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    w.first[h] = w.v[h] >= 0 && __ffsll(static_cast<long long>(w.m[h])) - 1 == lane + 32 * h;
    const unsigned c = static_cast<unsigned>(__popcll(w.m[h]));
    pk[h] = w.first[h] ? c | ((c + 7) >> 3) << 16 : 0u;
    incl[h] = pk[h];
#pragma unroll
    for (int d = 1; d < 32; d <<= 1) {
      const unsigned u = __shfl_up_sync(0xffffffffu, incl[h], d);
      if (lane >= d) incl[h] += u;
    }
  }
  const unsigned tot0 = __shfl_sync(0xffffffffu, incl[0], 31), tot = tot0 + __shfl_sync(0xffffffffu, incl[1], 31);
  w.excl[0] = incl[0] - pk[0];
  w.excl[1] = tot0 + incl[1] - pk[1];
  w.nvalid = static_cast<int>(tot & 0xFFFFu);
  w.ntile = static_cast<int>(tot >> 16);
  w.nbad = __reduce_add_sync(0xffffffffu, static_cast<unsigned>(bad));
  return w;
}

// Bit n (from 0) of the set bits of m, as a position (m has more than n set bits).
__device__ __forceinline__ int nth_set_bit(unsigned long long m, int n) {
  for (int i = 0; i < n; ++i) m &= m - 1;
  return __ffsll(static_cast<long long>(m)) - 1;
}

// Where an expert's first pair is (lane and half), its values: from the lane of pair f.
struct WideExpert {
  int e;
  unsigned long long m;
  unsigned excl;
};
__device__ __forceinline__ WideExpert wide_expert_at(const WideRoute& w, int f) {
  const int src = f & 31;
  WideExpert x;
  const int v0 = __shfl_sync(0xffffffffu, w.v[0], src), v1 = __shfl_sync(0xffffffffu, w.v[1], src);
  const unsigned long long m0 = __shfl_sync(0xffffffffu, w.m[0], src), m1 = __shfl_sync(0xffffffffu, w.m[1], src);
  const unsigned x0 = __shfl_sync(0xffffffffu, w.excl[0], src), x1 = __shfl_sync(0xffffffffu, w.excl[1], src);
  x.e = f < 32 ? v0 : v1, x.m = f < 32 ? m0 : m1, x.excl = f < 32 ? x0 : x1;
  return x;
}

// An FC1 task (token tile tile, row task wt) from the registers: the task (as tile_task gives it
// from the tables) and, for this lane's token column r, its pair (-1: no such column).
__device__ __forceinline__ GemmTask wide_fc1_task(const WideRoute& w, int tile, int wt, int r, int& pair) {
  // the expert: the last first pair (in pair order) whose first tile is at most `tile`
  const unsigned q0 = __ballot_sync(0xffffffffu, w.first[0] && (w.excl[0] >> 16) <= static_cast<unsigned>(tile));
  const unsigned q1 = __ballot_sync(0xffffffffu, w.first[1] && (w.excl[1] >> 16) <= static_cast<unsigned>(tile));
  const int f = q1 ? 63 - __clz(q1) : 31 - __clz(q0);
  const WideExpert x = wide_expert_at(w, f);
  const int first = (tile - static_cast<int>(x.excl >> 16)) * 8;  // the tile's first pair of the expert
  GemmTask t;
  t.w = wt;
  t.e = x.e;
  t.cnt = min(8, __popcll(x.m) - first);
  t.off = static_cast<int>(x.excl & 0xFFFFu) + first;
  pair = r < t.cnt ? nth_set_bit(x.m, first + r) : -1;
  return t;
}

// Warp 0 writes the tables that the later phases read (the Routing fields the fused kernel's
// prologue fills but the scan's scalars and scratch, in this order of tiles - active is then not
// ascending -; count and off only for the routed experts), and per pair its token tile and column
// (ptile: tile | column << 8, -1 for an invalid id).
__device__ __forceinline__ void wide_route_tables(const DecodeParams& p, const WideRoute& w, const Routing& R, int P,
                                                  int* ptile, int lane, bool w4a4) {
  const unsigned b0 = __ballot_sync(0xffffffffu, w.first[0]), b1 = __ballot_sync(0xffffffffu, w.first[1]);
  const unsigned lt = (1u << lane) - 1u;
  // the expert's offset and first tile, from the lane of its first pair (every lane shuffles)
  unsigned ex[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int f = w.v[h] >= 0 ? __ffsll(static_cast<long long>(w.m[h])) - 1 : 0;
    ex[h] = wide_expert_at(w, f).excl;
  }
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int i = lane + 32 * h;
    if (i >= P) continue;
    if (w.v[h] < 0) {
      R.slot_of_pair[i] = -1;
      ptile[i] = -1;
      continue;
    }
    const int rank = __popcll(w.m[h] & ((1ull << i) - 1ull));
    const int slot = static_cast<int>(ex[h] & 0xFFFFu) + rank;
    R.slot_of_pair[i] = static_cast<short>(slot);
    R.row_of_slot[slot] = static_cast<short>(act_row(i, p.k, w4a4));
    R.exp_of_slot[slot] = static_cast<short>(w.v[h]);
    ptile[i] = (static_cast<int>(ex[h] >> 16) + (rank >> 3)) | (rank & 7) << 8;
    if (w.first[h]) {
      const int a = h == 0 ? __popc(b0 & lt) : __popc(b0) + __popc(b1 & lt), e = w.v[h];
      const int base = static_cast<int>(w.excl[h] >> 16), c = __popcll(w.m[h]);
      R.active[a] = e;
      R.base[a] = base;
      R.count[e] = c;
      R.off[e] = static_cast<int>(w.excl[h] & 0xFFFFu);
      for (int j = 0; j < token_tiles(c); ++j) R.tile_act[base + j] = static_cast<short>(a);
    }
  }
}

template <bool kW4A4>
__global__ void __launch_bounds__(kWideWarps * 32, 1) wide_decode_kernel(DecodeParams p) {
  extern __shared__ __align__(16) unsigned char smem[];
  pdl_wait();  // a programmatic dependent launch (decode.cu): the previous kernel has completed
  pdl_launch_dependents();  // (a dependent waits for this grid's completion in its own pdl_wait)
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, r = lane >> 2;
  const int P = p.T * p.k, E = p.E, G = static_cast<int>(gridDim.x);
  unsigned long long launch = 0;  // the launch word before this CTA's arrival (DecodeParams::counters)
  if (threadIdx.x == 0) launch = atomicAdd(reinterpret_cast<unsigned long long*>(p.counters), 1ull);
  __shared__ unsigned s_epoch;
  // the combine's factors per pair (its weight, its expert's FC2 epilogue scale), in shared memory
  // before the combine: in the combine's loop over j their global loads would come one after
  // another (measured: the combine took 4 us at one token of qwen3-30b-a3b that way). The weight
  // is loaded now and stored after the prologue; the scale, which needs the id first, at FC2.
  __shared__ float s_pw[kWideMaxPairs], s_pg2[kWideMaxPairs];
  // where a pair's FC2 result is in zpart (-1: an invalid id); until FC2, its token tile and column
  __shared__ int s_pz[kWideMaxPairs];
  float my_w = 0.0f;
  if (static_cast<int>(threadIdx.x) < P) my_w = p.wts[threadIdx.x];
  const Staging st = warp_staging<kWideDepth, 2, kWideStagingPieces>(smem, warp);       // FC1
  const Staging st2 = warp_staging<kWideFc2Depth, 1, kWideStagingPieces>(smem, warp);  // FC2
  const Staging st2n = warp_staging<kWideFc2NarrowDepth, 1, kWideStagingPieces, 8>(smem, warp);  // FC2, T <= 2
  // partial results [item][32 lanes] (FC1's, then FC2's), then the routing
  float4* const zpart = reinterpret_cast<float4*>(smem + kWideWarps * kWideStagingPieces * 512);
  const Routing R = carve_routing(reinterpret_cast<unsigned char*>(zpart + kWideZItems * 32), P, E, kWideWarps);
  FP4MOE_TRACE(auto wstamp = [&](int step, unsigned long long t) {
    if (lane == 0 && blockIdx.x < kTraceCtas) g_trace_wide[blockIdx.x][warp][step] = t;
  };
  bool first1 = true, first2 = true;
  if (threadIdx.x == 0 && blockIdx.x < kTraceCtas) g_trace_cta[blockIdx.x][0] = trace_now();
  if (threadIdx.x == 0 && blockIdx.x == 0) g_trace_meta[4] = -static_cast<int>(gridDim.x);)
  // the routing (wide_route), in every warp's registers; its tables by warp 0, read after the
  // routing barrier: in W4A4 before Q, in W4A16 once a warp has requested its first FC1 chunks
  // (or has none). (Measured on an H200, one lease, two runs each, against the block-wide
  // prologue the fused kernel runs, build_routing, both with programmatic dependent launches:
  // qwen3-30b-a3b 14.9 -> 14.6-14.7 us at one token, 20.1 -> 19.8-19.9 at two; nemotron and
  // gpt-oss-120b at one token within 0.1 us. Profiling build, qwen3 at one token: a warp's routing
  // done 1.38 us after the first CTA's start, its first FC1 chunks requested at 2.62 - the block-wide
  // prologue ended at 1.89, the requests at 2.88.)
  if (kW4A4) quantize_x_share(p, P);  // (signalled after the routing barrier)
  const WideRoute route = wide_route(p, P, lane);
  if (warp == 0) {
    wide_route_tables(p, route, R, P, s_pz, lane, kW4A4);  // (s_pz: then the pairs' tiles)
    if (blockIdx.x == 0 && lane == 0 && route.nbad) atomicAdd(p.invalid, static_cast<unsigned>(route.nbad));
  }
  if (threadIdx.x == 0) s_epoch = static_cast<unsigned>(launch >> 32) & 1u;
  if (static_cast<int>(threadIdx.x) < P) s_pw[threadIdx.x] = my_w;
  bool routed = false;
  // the counters of this launch's set (s_epoch: read after the routing barrier)
  auto q_all = [&] { return counter_set(p, s_epoch); };
  auto fc1_done = [&] { return counter_set(p, s_epoch) + kDecodeCounterStride; };
  auto routing_barrier = [&] {  // every thread passes it once (a named barrier: at two places)
    if (!routed) {
      asm volatile("bar.sync 1;" ::: "memory");
      // W4A4: the CTA's share of Q is stored (the barrier orders every thread's stores before
      // thread 0's release)
      if (kW4A4 && threadIdx.x == 0) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(q_all()) : "memory");
    }
    routed = true;
  };
  const int ntile = route.ntile;
  unsigned long long t_ready = 0;  // stamped by task_pass in the profiling build
  FP4MOE_TRACE(wstamp(0, trace_now());)

  // ---- FC1: CTA b takes the tasks [n1 * b / G, n1 * (b + 1) / G); with fewer tasks than warps,
  // each task's K is split into s1 ranges over the CTA's warps, summed in range order ----
  // (without integer division: on an H200, profiling build, one token of qwen3-30b-a3b, the
  // divisions' chain had kept the FC1 passes from beginning until 1.1 us after the prologue; now
  // 0.6 us. In-graph, one lease, two runs each: qwen3-30b-a3b 15.8-15.9 -> 15.0-15.1 us at one
  // token, 21.4 -> 20.6-20.7 at two, gpt-oss-120b 30.4-30.6 -> 29.5-29.6 at one. Splitting the CTA's
  // chunks evenly over its warps instead, a task across warps wherever the split falls, was slower
  // at one and two tokens of qwen3-30b-a3b: README, session 23.)
  const unsigned n1 = static_cast<unsigned>(ntile * p.n1_tasks);
  const int t0 = static_cast<int>(magic_div(n1 * blockIdx.x, p.wide_grid_magic));
  const int nt = static_cast<int>(magic_div(n1 * (blockIdx.x + 1), p.wide_grid_magic)) - t0;
  const unsigned split = p.wide_fc1_split[min(nt, kWideWarps)];
  const int s1 = static_cast<int>(split & 31u), cps1 = static_cast<int>((split >> 5) & 4095u);
  const int m1 = static_cast<int>(split >> 17);  // it / s1 = (it * m1) >> 8 for it < 256 / s1
  float g1 = 0.0f, is2 = 1.0f;
  float4* const part1 = zpart + kWideSpreadItems * 32;  // FC1 partial sums [item][32 lanes][2 tiles]
  for (int it = warp; it < nt * s1; it += kWideWarps) {
    const int j = (it * m1) >> 8;  // (with s1 > 1, nt * s1 <= kWideWarps: it < 16)
    const int c0 = (it - j * s1) * cps1, nch = min(cps1, p.chunks1 - c0);
    GemmTask gt;
    int brow0;
    if (!routed) {  // (the first item, from the registers)
      int pair;
      const unsigned tile = magic_div(static_cast<unsigned>(t0 + j), p.wide_n1_magic);
      gt = wide_fc1_task(route, static_cast<int>(tile), t0 + j - static_cast<int>(tile) * p.n1_tasks, r, pair);
      brow0 = pair >= 0 ? act_row(pair, p.k, kW4A4) * p.H : -1;
    } else {
      gt = gemm_task_magic(t0 + j, p.n1_tasks, p.wide_n1_magic, R);
      brow0 = fc1_brow(p, R, gt, r);
    }
    const TaskStream ts = from_chunk(task_stream(p.w1, p.expert1_bytes, gt.e, p.n1_tasks, gt.w, p.chunks1), c0);
    const int brow = brow0 >= 0 ? brow0 + c0 * 64 : -1;  // from K-value 64 * c0
    const int kvalid = p.H - c0 * 64;
    // the epilogue's scales, loaded before the pass (after it, their round trip would add to every task's end)
    g1 = p.g1[gt.e], is2 = kW4A4 ? p.a2[gt.e] : 1.0f;
    float acc[2][4];
    // W4A4: every CTA's share of Q (after this CTA's routing barrier: its thread 0 signals there)
    auto wait_q = [&] {
      routing_barrier();
      wait_count(q_all(), gridDim.x, lane);
    };
    FP4MOE_TRACE(if (first1) wstamp(13, trace_now());)
    if (kW4A4) task_pass<2, kWideDepth>(ts, nch, st, lane, p.xq, brow, kvalid, acc, wait_q, t_ready, c0 & 7);
    else task_pass<2, kWideDepth>(ts, nch, st, lane, p.x, brow, kvalid, acc, NoHook{}, t_ready, c0 & 7, true, routing_barrier);
    FP4MOE_TRACE(if (first1) wstamp(1, t_ready); first1 = false;)
    FP4MOE_TRACE(wstamp(2, trace_now());)
    if (s1 == 1) {
      fc1_epilogue(p, kW4A4, acc, g1, is2, gt.w, gt.cnt, gt.off, lane, 0);
      signal_count(done_ctr(fc1_done(), gt.e), lane);
    } else {
#pragma unroll
      for (int t = 0; t < 2; ++t) part1[(it * 32 + lane) * 2 + t] = make_float4(acc[t][0], acc[t][1], acc[t][2], acc[t][3]);
    }
  }
  routing_barrier();  // (the warps without an FC1 item)
  if (s1 > 1) {  // (uniform over the CTA)
    __syncthreads();
    FP4MOE_TRACE(wstamp(3, trace_now());)
    // task j's epilogue by the warp of its first split (with s1 > 1, a warp has at most one item)
    const int j = (warp * m1) >> 8;
    if (warp == j * s1 && j < nt) {
      float acc[2][4];
#pragma unroll
      for (int t = 0; t < 2; ++t) {
        float4 v = part1[(j * s1 * 32 + lane) * 2 + t];
        acc[t][0] = v.x, acc[t][1] = v.y, acc[t][2] = v.z, acc[t][3] = v.w;
        for (int s = 1; s < s1; ++s) {
          v = part1[((j * s1 + s) * 32 + lane) * 2 + t];
          acc[t][0] = __fadd_rn(acc[t][0], v.x), acc[t][1] = __fadd_rn(acc[t][1], v.y);
          acc[t][2] = __fadd_rn(acc[t][2], v.z), acc[t][3] = __fadd_rn(acc[t][3], v.w);
        }
      }
      const GemmTask gt = gemm_task_magic(t0 + j, p.n1_tasks, p.wide_n1_magic, R);
      FP4MOE_TRACE(wstamp(12, trace_now());)
      fc1_epilogue(p, kW4A4, acc, g1, is2, gt.w, gt.cnt, gt.off, lane, 0);
      FP4MOE_TRACE(wstamp(10, trace_now());)
      signal_count(done_ctr(fc1_done(), gt.e), lane);
      FP4MOE_TRACE(wstamp(11, trace_now());)
    }
  }

  // FC2's results reach the partial sums' items only with more than kWideSpreadItems token tiles
  if (s1 > 1 && ntile > kWideSpreadItems) __syncthreads();  // (uniform over the CTA)

  FP4MOE_TRACE(wstamp(4, trace_now());)
  // ---- FC2 and the combine: CTA b owns the 16-row output tiles b, b + G, ...; for each, every
  // token tile of every active expert, as items of a warp each: with W or more token tiles, item i
  // is token tile i; with fewer, each token tile's K is split into s2 ranges (item i: token tile
  // i / s2, range i % s2) - or, where that leaves a warp more chunks than an even split of all the
  // chunks (N2 = ntile x chunks2) over the warps, warp w takes [N2 w / W, N2 (w + 1) / W) of them
  // (token tile-major; at most two token tiles, its first and last ranges' results in items 2w and
  // 2w + 1). Then out = bf16(sum over j in order of w[t, j] * z[slot(t, j)]), a pair's z the sum of
  // its token tile's items in K order. The items are the same for every output tile. ----
  // (Measured on an H200, one lease, three runs each, against s2 ranges always, rings of 2 chunks and
  // a wait at every pass:
  // nemotron at one token 24.5-24.7 -> 23.8-24.1 us, at two 38.0 -> 36.1; gpt-oss-120b 29.6-29.9 ->
  // 28.8-29.3 and 45.6 -> 43.8-44.0; qwen3-30b-a3b 15.0 -> 15.1-15.2 and 20.6-20.7 -> 20.9-21.0.)
  const int C2 = p.chunks2, N2 = ntile * C2;
  const unsigned split2 = p.wide_fc2_split[min(ntile, kWideWarps)];  // (the FC1 split's rule, set by setup_wide)
  const int s2 = static_cast<int>(split2 & 31u), cps2 = static_cast<int>((split2 >> 5) & 4095u);
  const bool spread = (split2 >> 17) & 1u;
  const int a2 = spread ? N2 * warp / kWideWarps : 0, b2 = spread ? N2 * (warp + 1) / kWideWarps : 0;
  float my_g2 = 0.0f;  // stored after the FC2 items below (its load's round trip behind them)
  if (static_cast<int>(threadIdx.x) < P) {  // (read after the first barrier below)
    const int slot = R.slot_of_pair[threadIdx.x];
    int pz = -1;
    if (slot >= 0) {
      my_g2 = p.g2[R.exp_of_slot[slot]];
      // token column col of its token tile, in the MMA's accumulator layout; pz: its first item
      // (bits 0..12), where its later items begin (13..25: zstride apart from there), items (26..)
      const int tile = s_pz[threadIdx.x] & 255, col = s_pz[threadIdx.x] >> 8, cofs = (col >> 1) * 4 + (col & 1);
      if (!spread) {
        pz = (tile * s2 * 128 + cofs) | (tile * s2 * 128 + cofs) << 13 | s2 << 26;
      } else {
        const int x0 = tile * C2, x1 = x0 + C2 - 1;  // its chunks; the warps holding its first and last
        const int wf = (kWideWarps * x0 + kWideWarps - 1) / N2, wl = (kWideWarps * x1 + kWideWarps - 1) / N2;
        const int sf = N2 * wf / kWideWarps < x0;  // the token tile is wf's second range
        pz = ((wf * 2 + sf) * 128 + cofs) | (wf * 256 + cofs) << 13 | (wl - wf + 1) << 26;
      }
    }
    s_pz[threadIdx.x] = pz;
  }
  const int zstride = spread ? 256 : 128;  // floats from one item of a token tile to the next
  // FC2's dependencies, waited for once, in the first pass: all of h of the experts of the warp's
  // token tiles - every FC1 task of every one of their token tiles -, one token tile a lane, the
  // lanes polling at once with acquire loads, the warp barrier then ordering every lane's reads
  // after them. (A wait at a later pass, while the CTA's other warps stream, would cost them an L1
  // invalidation each time. Acquire polls rather than relaxed ones and an acquire: a round trip less
  // once the count is there - measured in session 21 with a wait at every pass, when the CTA's other
  // warps were mostly waiting too, on an H200, one lease, three runs each, with the FC2-scale load
  // moved out of the prologue: qwen3-30b-a3b 16.7 -> 16.5-16.6 us at one token, gpt-oss-120b
  // 30.4-30.6 -> 30.2-30.3.)
  bool waited = false;
  auto wait_fc2_deps = [&] {
    if (waited) return;
    waited = true;
    int tt = -1;
    if (spread) {
      const int j0 = static_cast<int>(magic_div(a2, p.wide_c2_magic));
      const int j1 = static_cast<int>(magic_div(b2 - 1, p.wide_c2_magic));
      tt = lane == 0 ? j0 : lane == 1 && j1 != j0 ? j1 : -1;
    } else {
      const int it = warp + kWideWarps * lane;
      tt = lane < 4 && it < ntile * s2 ? it / s2 : -1;
    }
    const int e = tt >= 0 ? R.active[R.tile_act[tt]] : 0;
    wait_counts<true, 64>(tt >= 0 ? done_ctr(fc1_done(), e) : nullptr,
                          tt >= 0 ? static_cast<unsigned>(p.n1_tasks * token_tiles(R.count[e])) : 0u);
  };
  // A CTA with two output tiles (b and b + G) streams both in one pass of two-tile chunks (FC1's
  // ring: the same bytes in flight, the ring's work and the activations shared by both tiles, one
  // wait and one start), where a warp has at most two items: the second tile's results wait in the
  // warp's staging pieces past that ring (park) for its combine. (Measured on an H200, one lease, two
  // runs each, against one pass per tile: nemotron at one token 23.3-23.5 -> 21.1-21.5 us, gpt-oss-120b
  // 28.8 -> 27.0-27.1; qwen3-30b-a3b, 128 tiles, 14.6-14.7 -> 14.7-14.8 and 19.8 -> 20.0 at two tokens
  // - the kernel's registers went from 114 to 128. The second tile had cost 5.5 us at one token of
  // nemotron and gpt-oss-120b - a build that skipped it, wrong on purpose, took 18.0 and 23.5 us -
  // and not for its DRAM latency: L2 prefetches of its chunks during the hand-off changed nothing.
  // Splitting the left-over tiles' chunks over every CTA instead, their partial results added across
  // CTAs through global memory, was slower: 26.0 and 31.5 us.)
  const int T2 = p.H / 16;
  const bool two = static_cast<int>(blockIdx.x) + G < T2 && static_cast<int>(blockIdx.x) + 2 * G >= T2 &&
                   (spread || ntile * s2 <= 2 * kWideWarps);
  // A CTA off the two-tile path where the tiles outnumber the CTAs (T2 > G) - by default, at most two
  // tokens of nemotron or gpt-oss-120b, a CTA with one output tile, not what the launch waits for;
  // with FP4MOE_DECODE_WIDE, also CTAs of three tiles or with more items a warp - requests, in a
  // batch of at most two tokens, its FC2 weights before it waits for h, through a ring 8
  // chunks deep that stages only token columns 0 and 1 (256 bytes of h a chunk instead of 1 KB: the
  // same staging pieces), so its reads are out of the way of the two-tile CTAs' second tiles.
  // (Measured on an H200, one lease, three runs each: nemotron at one token 21.2-21.4 -> 21.1-21.2 us,
  // gpt-oss-120b 26.9-27.2 -> 26.6-26.8; qwen3-30b-a3b, which has no CTA with two tiles, 14.7-14.8 ->
  // 14.6-14.7 and 20.0-20.1 -> 19.8 at two tokens, its code unchanged but for the layout. The same
  // early requests through the 4-chunk ring: nemotron 20.9-21.1, gpt-oss-120b 26.7-26.8, but qwen3
  // 14.9 at one token; the 8-chunk ring without the early requests, for every one-tile CTA of a batch
  // of at most two tokens: qwen3 14.8 and 20.4, the others unchanged.)
  const bool early = T2 > G && p.T <= 2;
  auto park = [&](int item) {  // item's 512 bytes for the second tile, in its warp's staging (in floats)
    const int w = spread ? item >> 1 : item & (kWideWarps - 1), sub = spread ? item & 1 : item / kWideWarps;
    return (w * kWideStagingPieces + decode_staging_pieces(kWideDepth) + sub) * 128;
  };
  static_assert(decode_staging_pieces(kWideDepth) + 2 <= kWideStagingPieces, "two parked items a warp");
  for (int ot = static_cast<int>(blockIdx.x); ot < T2; ot += G) {
    const bool parked = two && ot != static_cast<int>(blockIdx.x);  // (its results are in the park)
    // the warp's items, one call of the pass (one copy of its code; an even split has N2 >= W
    // chunks - with fewer, s2 = chunks2 leaves one chunk a warp -, so no warp's range is empty)
    for (int c = a2, j = spread ? static_cast<int>(magic_div(a2, p.wide_c2_magic)) : 0, it = warp;
         !parked && (spread ? c < b2 : it < ntile * s2);) {
      int tt, c0, nch, item;
      if (spread) {
        const int jc = j * C2, c1 = min(b2 - jc, C2);
        tt = j, c0 = c - jc, nch = c1 - c0, item = warp * 2 + (c != a2);
        c = jc + c1, ++j;
      } else {
        tt = it / s2, c0 = (it - tt * s2) * cps2, nch = min(cps2, C2 - c0), item = it;
        it += kWideWarps;
      }
      const GemmTask gt = tile_task(tt, 0, R);  // the token tile (its row task is ot's, below)
      TaskStream ts = from_chunk(task_stream(p.w2, p.expert2_bytes, gt.e, p.n2_tasks, ot >> 1, C2), c0);
      ts.w += (ot & 1) * 512, ts.s += (ot & 1) * 512;  // tile ot & 1 of the task
      const int brow = r < gt.cnt ? (gt.off + r) * p.Ik + c0 * 64 : -1;  // token column r's K-value 64 * c0 in h
      FP4MOE_TRACE(if (first2) wstamp(16, trace_now());)
      if (two) {
        float acc[2][4];
        ts.t1 = G * 512;
        task_pass<2, kWideDepth>(ts, nch, st, lane, p.h, brow, p.Ik - c0 * 64, acc, wait_fc2_deps, t_ready, c0 & 7, true);
        zpart[item * 32 + lane] = make_float4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
        reinterpret_cast<float4*>(smem)[park(item) / 4 + lane] = make_float4(acc[1][0], acc[1][1], acc[1][2], acc[1][3]);
      } else {
        float acc[1][4];
        if (early)
          task_pass<1, kWideFc2NarrowDepth, 8>(ts, nch, st2n, lane, p.h, brow, p.Ik - c0 * 64, acc, wait_fc2_deps, t_ready, c0 & 7, false);
        else
          task_pass<1, kWideFc2Depth>(ts, nch, st2, lane, p.h, brow, p.Ik - c0 * 64, acc, wait_fc2_deps, t_ready, c0 & 7, true);
        zpart[item * 32 + lane] = make_float4(acc[0][0], acc[0][1], acc[0][2], acc[0][3]);
      }
      FP4MOE_TRACE(if (first2) wstamp(5, t_ready); first2 = false;)
    }
    if (static_cast<int>(threadIdx.x) < P) s_pg2[threadIdx.x] = my_g2;
    FP4MOE_TRACE(wstamp(6, trace_now());)
    __syncthreads();
    FP4MOE_TRACE(wstamp(8, trace_now());)
    // every pair's weighted result on the 16 rows at once, then each output adds its pairs in
    // order (measured on an H200: one thread per output doing both, one pair after another, took
    // 0.6 us more at one token of qwen3-30b-a3b). The products go to the (drained) staging.
    // (prod: the first P x 16 floats of warp 0's staging, before its park)
    float* const prod = reinterpret_cast<float*>(smem);  // [pair][16 rows]
    static_assert(kWideMaxPairs * 16 * 4 <= decode_staging_pieces(kWideDepth) * 512, "the products before the park");
    const float* const zb = parked ? reinterpret_cast<const float*>(smem) : reinterpret_cast<const float*>(zpart);
    auto zloc = [&](int off) { return parked ? park(off >> 7) + (off & 127) : off; };  // (an item's float)
    for (int i = threadIdx.x; i < P * 16; i += blockDim.x) {
      const int pi = i >> 4, rr = i & 15;
      const float* zr = zb + (rr & 7) * 16 + (rr >> 3) * 2;  // tile row rr
      const int pz = s_pz[pi];
      if (pz < 0) continue;
      const int n = pz >> 26, rest = (pz >> 13) & 8191;
      float zs = zr[zloc(pz & 8191)];
      for (int s = 1; s < n; ++s) zs = __fadd_rn(zs, zr[zloc(rest + s * zstride)]);
      prod[i] = __fmul_rn(s_pw[pi], __fmul_rn(zs, s_pg2[pi]));
    }
    __syncthreads();
    for (int i = threadIdx.x; i < p.T * 16; i += blockDim.x) {
      const int t = i >> 4, rr = i & 15;
      float o = 0.0f;
      for (int j = 0; j < p.k; ++j)
        if (s_pz[t * p.k + j] >= 0) o = __fadd_rn(o, prod[(t * p.k + j) * 16 + rr]);
      p.out[static_cast<long long>(t) * p.H + ot * 16 + rr] = __float2bfloat16_rn(o);
    }
    FP4MOE_TRACE(wstamp(9, trace_now());)
    __syncthreads();
  }
  FP4MOE_TRACE(wstamp(7, trace_now());)
  if (warp == 0) finish_launch(p, launch, s_epoch, E, lane);
}

#ifdef FP4MOE_DECODE_TRACE
void decode_trace_reset() {
  void* p = nullptr;
  if (cudaGetSymbolAddress(&p, g_trace_task) == cudaSuccess) (void)cudaMemset(p, 0, sizeof(g_trace_task));
  if (cudaGetSymbolAddress(&p, g_trace_cta) == cudaSuccess) (void)cudaMemset(p, 0, sizeof(g_trace_cta));
  if (cudaGetSymbolAddress(&p, g_trace_chunk) == cudaSuccess) (void)cudaMemset(p, 0, sizeof(g_trace_chunk));
  if (cudaGetSymbolAddress(&p, g_trace_epi) == cudaSuccess) (void)cudaMemset(p, 0, sizeof(g_trace_epi));
  if (cudaGetSymbolAddress(&p, g_trace_mark) == cudaSuccess) (void)cudaMemset(p, 0, sizeof(g_trace_mark));
  if (cudaGetSymbolAddress(&p, g_trace_wide) == cudaSuccess) (void)cudaMemset(p, 0, sizeof(g_trace_wide));
}
void decode_trace_print() {
  static unsigned long long task[kTraceTasks][4], cta[kTraceCtas][4];
  int meta[5] = {};
  if (cudaMemcpyFromSymbol(task, g_trace_task, sizeof(task)) != cudaSuccess ||
      cudaMemcpyFromSymbol(cta, g_trace_cta, sizeof(cta)) != cudaSuccess ||
      cudaMemcpyFromSymbol(meta, g_trace_meta, sizeof(meta)) != cudaSuccess) {
    std::printf("    trace: could not read the timeline\n");
    return;
  }
  // the grid (the wide kernel records it negated), its first CTA's start, percentiles
  const int grid = std::min(meta[4] < 0 ? -meta[4] : meta[4], kTraceCtas);
  unsigned long long t0 = ~0ull, tend = 0;
  for (int b = 0; b < grid; ++b) t0 = std::min(t0, cta[b][0]);
  auto pct = [](std::vector<double> v, double q) {
    if (v.empty()) return 0.0;
    std::sort(v.begin(), v.end());
    return v[static_cast<size_t>(q * (v.size() - 1))];
  };
  if (meta[4] < 0) {  // the wide kernel's steps, per warp
    static unsigned long long wt[kTraceCtas][kWideWarps][kWideSteps];
    if (cudaMemcpyFromSymbol(wt, g_trace_wide, sizeof(wt)) != cudaSuccess) return;
    const char* steps[kWideSteps] = {"prologue", "FC1 1st data", "FC1 items", "FC1 partials", "FC1 epilogues",
                                     "FC2 1st ready", "FC2 items", "end", "combine start", "combine done",
                                     "epi stores", "epi signal", "epi summed", "FC1 pre-pass", "FC1 issued",
                                     "FC2 issued", "FC2 pre-pass"};
    std::printf("    wide trace (us from the first CTA's start, over warps that reached the step: p10/p50/p90/max):\n");
    for (int sidx = 0; sidx < kWideSteps; ++sidx) {
      std::vector<double> v;
      for (int b = 0; b < grid; ++b)
        for (int w = 0; w < kWideWarps; ++w)
          if (wt[b][w][sidx] >= t0) v.push_back((wt[b][w][sidx] - t0) * 1e-3);
      if (v.empty()) continue;
      std::printf("      %-14s n %5zu  %6.2f %6.2f %6.2f %6.2f\n", steps[sidx], v.size(), pct(v, 0.1), pct(v, 0.5),
                  pct(v, 0.9), pct(v, 1.0));
    }
    if (const char* path = std::getenv("FP4MOE_DECODE_TRACE_CSV")) {  // every warp's steps, per launch
      if (std::FILE* f = std::fopen(path, "a")) {
        std::fprintf(f, "# launch\ncta,warp");
        for (int sidx = 0; sidx < kWideSteps; ++sidx) std::fprintf(f, ",s%d", sidx);
        std::fprintf(f, "\n");
        for (int b = 0; b < grid; ++b)
          for (int w = 0; w < kWideWarps; ++w) {
            std::fprintf(f, "%d,%d", b, w);
            for (int sidx = 0; sidx < kWideSteps; ++sidx)
              std::fprintf(f, ",%.3f", wt[b][w][sidx] >= t0 ? (wt[b][w][sidx] - t0) * 1e-3 : -1.0);
            std::fprintf(f, "\n");
          }
        std::fclose(f);
      }
    }
    return;
  }
  std::vector<double> pro, ex;
  for (int b = 0; b < grid; ++b) {
    pro.push_back((cta[b][1] - t0) * 1e-3);
    ex.push_back((cta[b][2] - t0) * 1e-3);
    tend = std::max(tend, cta[b][2]);
  }
  double last_start = 0;
  for (int b = 0; b < grid; ++b) last_start = std::max(last_start, (cta[b][0] - t0) * 1e-3);
  std::printf("    trace (us from the first CTA start): grid %d, tasks %d (FC1 %d, FC2 %d); last CTA start %.2f; "
              "prologue end p50 %.2f max %.2f; CTA exit p50 %.2f max %.2f\n",
              meta[4], meta[0], meta[2], meta[3], last_start, pct(pro, 0.5), pct(pro, 1), pct(ex, 0.5), pct(ex, 1));
  const int ntask = std::min(meta[0], kTraceTasks);  // tasks with a record
  if (const char* path = std::getenv("FP4MOE_DECODE_TRACE_CSV")) {  // every task, for offline analysis
    if (std::FILE* f = std::fopen(path, "a")) {
      std::fprintf(f, "# launch\ntask,kind,warp,start_us,ready_us,end_us,sm\n");
      for (int i = 0; i < ntask; ++i)
        if (task[i][3])
          std::fprintf(f, "%d,%d,%llu,%.3f,%.3f,%.3f,%lld\n", i, static_cast<int>(task[i][0] & 15), task[i][0] >> 4,
                       (task[i][1] - t0) * 1e-3, task[i][2] ? (task[i][2] - t0) * 1e-3 : -1.0, (task[i][3] - t0) * 1e-3,
                       (task[i][0] >> 4) / kDecodeWarps < kTraceCtas ? static_cast<long long>(cta[(task[i][0] >> 4) / kDecodeWarps][3]) : -1ll);
      std::fclose(f);
    }
  }
  const char* names[4] = {"Q", "FC1", "FC2", "combine"};
  auto recorded = [&](int i, int kind) { return task[i][3] != 0 && static_cast<int>(task[i][0] & 15) == kind; };
  {  // thread 0's prologue steps, and the FC1 and FC2 epilogues (p50 / max, us)
    static unsigned long long mk[kTraceCtas][kTraceMarks], ep[kTraceTasks][4];
    if (cudaMemcpyFromSymbol(mk, g_trace_mark, sizeof(mk)) == cudaSuccess &&
        cudaMemcpyFromSymbol(ep, g_trace_epi, sizeof(ep)) == cudaSuccess) {
      const char* steps[kTraceMarks] = {"launch atomics", "L2 prefetch", "tables cleared", "pairs counted", "scanned"};
      std::printf("    prologue (thread 0, from the first CTA's start):");
      for (int m = 0; m < kTraceMarks; ++m) {
        std::vector<double> v;
        for (int b = 0; b < grid; ++b) v.push_back((static_cast<double>(mk[b][m]) - static_cast<double>(t0)) * 1e-3);
        std::printf(" %s %.2f/%.2f%s", steps[m], pct(v, 0.5), pct(v, 1), m + 1 < kTraceMarks ? "," : "\n");
      }
      for (int kind = 1; kind <= 2; ++kind) {
        std::vector<double> d[3];
        for (int i = 0; i < ntask; ++i) {
          // complete epilogues only (the splits of a K-split FC1 task but the last stamp only the pass)
          if (!recorded(i, kind) || ep[i][0] == 0 || ep[i][3] == 0) continue;
          for (int s = 0; s < 3; ++s) d[s].push_back((static_cast<double>(ep[i][s + 1]) - static_cast<double>(ep[i][s])) * 1e-3);
        }
        if (d[0].empty()) continue;
        std::printf("    %s epilogue: activation %.3f/%.3f, stores %.3f/%.3f, signal %.3f/%.3f\n", names[kind], pct(d[0], 0.5),
                    pct(d[0], 1), pct(d[1], 0.5), pct(d[1], 1), pct(d[2], 0.5), pct(d[2], 1));
      }
    }
  }
  {  // FC1 and FC2 chunks: the wait for a chunk's data (ready[c] - done[c - 1]), its compute
     // (done[c] - ready[c]), and when chunk c was ready (p50 over the tasks, from the first CTA's start)
    static unsigned long long ch[kTraceWarpsC][kTraceChunks][2];
    if (cudaMemcpyFromSymbol(ch, g_trace_chunk, sizeof(ch)) == cudaSuccess) {
      for (int kind = 1; kind <= 2; ++kind) {
        std::vector<double> wt, cp;
        std::vector<std::vector<double>> byc(kTraceChunks);
        for (int i = 0; i < ntask; ++i) {
          if (!recorded(i, kind)) continue;
          const int w = static_cast<int>(task[i][0] >> 4);
          if (w >= kTraceWarpsC) continue;
          for (int c = 0; c < kTraceChunks && ch[w][c][0]; ++c) {
            if (ch[w][c][0] < task[i][1] || ch[w][c][0] > task[i][3]) break;  // a later task's stamps
            cp.push_back((ch[w][c][1] - ch[w][c][0]) * 1e-3);
            if (c > 0) wt.push_back((static_cast<double>(ch[w][c][0]) - static_cast<double>(ch[w][c - 1][1])) * 1e-3);
            byc[c].push_back((ch[w][c][0] - t0) * 1e-3);
          }
        }
        if (cp.empty()) continue;
        std::printf("    %s per chunk: compute p10 %.3f p50 %.3f p90 %.3f | wait p10 %.3f p50 %.3f p90 %.3f (us)\n"
                    "    ready p50 by chunk:",
                    names[kind], pct(cp, 0.1), pct(cp, 0.5), pct(cp, 0.9), pct(wt, 0.1), pct(wt, 0.5), pct(wt, 0.9));
        for (int c = 0; c < kTraceChunks; ++c)
          if (!byc[c].empty()) std::printf(" %.2f", pct(byc[c], 0.5));
        std::printf("\n");
      }
    }
  }
  for (int kind = 0; kind < 4; ++kind) {
    std::vector<double> st, rd, en, dur, wait;
    for (int i = 0; i < ntask; ++i) {
      if (!recorded(i, kind)) continue;
      st.push_back((task[i][1] - t0) * 1e-3);
      en.push_back((task[i][3] - t0) * 1e-3);
      dur.push_back((task[i][3] - task[i][1]) * 1e-3);
      if (task[i][2]) rd.push_back((task[i][2] - t0) * 1e-3), wait.push_back((task[i][2] - task[i][1]) * 1e-3);
    }
    if (st.empty()) continue;
    std::printf("    %-7s n %5zu | start p0 %7.2f p50 %7.2f p100 %7.2f | ready-start p50 %6.2f p100 %6.2f | "
                "end p50 %7.2f p100 %7.2f | dur p50 %6.2f p100 %6.2f\n",
                names[kind], st.size(), pct(st, 0), pct(st, 0.5), pct(st, 1), pct(wait, 0.5), pct(wait, 1), pct(en, 0.5),
                pct(en, 1), pct(dur, 0.5), pct(dur, 1));
  }
}
#endif

const void* fused_decode_kernel_ptr(bool w4a4) {
  return w4a4 ? reinterpret_cast<const void*>(&fused_decode_kernel<true>)
              : reinterpret_cast<const void*>(&fused_decode_kernel<false>);
}
const void* wide_decode_kernel_ptr(bool w4a4) {
  return w4a4 ? reinterpret_cast<const void*>(&wide_decode_kernel<true>)
              : reinterpret_cast<const void*>(&wide_decode_kernel<false>);
}

}  // namespace fp4moe::cuda
