// fp4moe internal: the Hopper (sm_90a) grouped GEMM of the prefill backend: wgmma with the
// dequantized weights as the register-sourced A operand ("swap AB": weight rows are the M side,
// 64 per warpgroup) and the tile's token rows (contiguous slots) as the shared-memory B operand
// (K-major, 128-byte swizzle), a TMA pipeline on mbarriers with warp 0 as producer, the
// persistent tile loop and the epilogues of prefill_gemm.cuh. The prepared weight layout is the
// same as the mma.sync path's: the 8 code bytes a thread reads for rows g and g + 8 of its
// warp's 16-row slice are exactly the k positions of the wgmma A fragment (which is the
// mma.sync m16n8k16 A fragment per warp).
// SwiGLU rows are ordered per 16-row block as 8 gate rows then the 8 matching up rows, so a
// thread holds (gate, up) of one intermediate index in its accumulator pair (c, c + 2).
// The tile height (token rows per tile) is the wgmma N, a template parameter: the kernel is
// compiled for the heights of kWgTileRows and the host picks one per call from the average rows
// per expert, so small batches do not pay 64 or 128 rows of MMA work for 30 tokens. One width
// per kernel on purpose: a kernel holding two wgmma widths gets every wgmma serialized by ptxas
// (C7511 / C7512).
// Compiled only for sm_90a (__CUDA_ARCH_FEAT_SM90_ALL); elsewhere the kernel body is empty and
// the host never selects it (it checks the loaded binary's version).
#pragma once
#include "cuda/common.cuh"
#include "cuda/prefill_gemm.cuh"

namespace fp4moe::cuda::prefill {

#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
#define FP4MOE_PREFILL_WGMMA 1
#endif

#ifdef FP4MOE_PREFILL_WGMMA
__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void wgmma_wait() {
  asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// Orders this thread's generic-proxy shared-memory accesses before later async-proxy ones (TMA
// writes into a buffer the epilogue used).
__device__ __forceinline__ void fence_proxy_async_smem() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }

// mbarriers (shared-window addresses) and TMA loads that complete on them. The warp-level
// forms are executed by a whole warp (convergent control flow, so the compiler keeps the
// k-loop's descriptor arithmetic in uniform registers) and act through one elected lane.
__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_init_fence() { asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory"); }
// one arrival for the warp
__device__ __forceinline__ void mbar_arrive_warp(uint32_t bar) {
  asm volatile("{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\n@p mbarrier.arrive.shared::cta.b64 _, [%0];\n}\n" ::"r"(bar)
               : "memory");
}
__device__ __forceinline__ bool mbar_test(uint32_t bar, uint32_t parity) {
  uint32_t ok;
  asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}\n"
               : "=r"(ok)
               : "r"(bar), "r"(parity)
               : "memory");
  return ok != 0;
}
// the warp waits until the phase with this parity has completed
__device__ __forceinline__ void mbar_wait_warp(uint32_t bar, uint32_t parity) {
  while (!__all_sync(0xffffffffu, mbar_test(bar, parity))) {
  }
}
// one elected lane: expect kTx bytes on `full` and load a stage - a TMA box of token rows at
// (k0, row0) and two bulk copies (codes, scales; evict-first in L2: read once per call)
__device__ __forceinline__ void tma_stage_warp(uint32_t full, uint32_t tx, uint32_t dst_b, const CUtensorMap* map, int k0,
                                               int row0, uint32_t dst_c, const void* src_c, uint32_t bytes_c,
                                               uint32_t dst_s, const void* src_s, uint32_t bytes_s, uint64_t pol) {
  asm volatile(
      "{\n.reg .pred p;\nelect.sync _|p, 0xffffffff;\n"
      "@p mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n"
      "@p cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes [%2], [%3, {%4, %5}], [%0];\n"
      "@p cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%6], [%7], %8, [%0], %12;\n"
      "@p cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes.L2::cache_hint [%9], [%10], %11, [%0], %12;\n}\n" ::"r"(full),
      "r"(tx), "r"(dst_b), "l"(map), "r"(k0), "r"(row0), "r"(dst_c), "l"(src_c), "r"(bytes_c), "r"(dst_s), "l"(src_s),
      "r"(bytes_s), "l"(pol)
      : "memory");
}

// Shared-memory matrix descriptor: K-major, 128-byte swizzle, 8-row groups 1024 bytes apart
// (stride byte offset), leading byte offset unused for this layout; the tile base is
// 1024-byte aligned (base offset 0), and a k16 step inside the 128-byte row advances the start
// address by 32 bytes.
__device__ __forceinline__ uint64_t smem_desc_sw128(uint32_t saddr) {
  uint64_t d = static_cast<uint64_t>((saddr & 0x3FFFFu) >> 4);
  d |= static_cast<uint64_t>(1) << 16;
  d |= static_cast<uint64_t>(1024 >> 4) << 32;
  d |= static_cast<uint64_t>(1) << 62;
  return d;
}

// wgmma m64nNk16, A (bf16 weights) from registers, B (tokens) from shared memory, fp32 accumulators
// d[0, N/2) (the accumulator layout of a narrower N is the prefix of a wider one's).
template <int N, int NA>
__device__ __forceinline__ void wgmma_rs(float (&d)[NA], const uint32_t (&a)[4], uint64_t desc) {
  static_assert(N % 8 == 0 && N >= 8 && N / 2 <= NA, "wgmma N");
  if constexpr (N == 8) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %9, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n8k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, %8, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 16) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %13, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n16k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7}, {%8, %9, %10, %11}, %12, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 24) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %17, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n24k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11}, {%12, %13, %14, %15}, %16, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 32) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %21, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n32k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15}, {%16, %17, %18, %19}, %20, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 40) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %25, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n40k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19}, {%20, %21, %22, %23}, %24, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 48) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %29, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n48k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23}, {%24, %25, %26, %27}, %28, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 56) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %33, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n56k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27}, {%28, %29, %30, %31}, %32, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 64) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %37, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31}, {%32, %33, %34, %35}, %36, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 72) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %41, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n72k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35}, {%36, %37, %38, %39}, %40, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 80) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %45, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n80k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39}, {%40, %41, %42, %43}, %44, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 88) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %49, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n88k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43}, {%44, %45, %46, %47}, %48, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 96) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %53, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n96k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47}, {%48, %49, %50, %51}, %52, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 104) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %57, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n104k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51}, {%52, %53, %54, %55}, %56, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 112) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %61, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n112k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55}, {%56, %57, %58, %59}, %60, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 120) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %65, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n120k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59}, {%60, %61, %62, %63}, %64, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  } else if constexpr (N == 128) {
    asm volatile(
        "{\n.reg .pred p;\nsetp.ne.b32 p, %69, 0;\n"
        "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 "
        "{%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, {%64, %65, %66, %67}, %68, p, 1, 1, 0;\n}\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(desc), "r"(1));
  }
}

#endif  // FP4MOE_PREFILL_WGMMA

// Pins a register value at this point of the program (CUTLASS's warpgroup_fence_operand): the
// compiler may neither sink the code that computes it past, nor hoist uses of it above, the
// wgmma instructions that read or write it asynchronously. Without it ptxas may interleave the
// dequantization with the wgmmas, reuse the A-fragment registers and serialize every wgmma.
__device__ __forceinline__ void fence_operand(uint32_t& r) { asm volatile("" : "+r"(r)::"memory"); }
__device__ __forceinline__ uint32_t opaque(uint32_t v) {
  uint32_t r;
  asm volatile("mov.b32 %0, %1;" : "=r"(r) : "r"(v));
  return r;
}

// shared-memory loads at a 32-bit shared-window address (volatile: they stay after the barrier)
__device__ __forceinline__ uint2 lds64(uint32_t a) {
  uint2 v;
  asm volatile("ld.shared.v2.u32 {%0, %1}, [%2];\n" : "=r"(v.x), "=r"(v.y) : "r"(a));
  return v;
}

// A fragment of one k16 step from the thread's two code words (rows g, g + 8) and their scale
// words (each holds the scales of two k16 steps: kb even in the low half, odd in the high).
__device__ __forceinline__ void dequant_frag(uint32_t (&af)[4], int kb, uint32_t x0, uint32_t x1, uint32_t c0,
                                             uint32_t c1) {
  if (kb & 1) {
    af[0] = fp4x2_to_bf16x2<2, 1>(x0, c0);
    af[1] = fp4x2_to_bf16x2<2, 1>(x1, c1);
    af[2] = fp4x2_to_bf16x2<3, 1>(x0, c0);
    af[3] = fp4x2_to_bf16x2<3, 1>(x1, c1);
  } else {
    af[0] = fp4x2_to_bf16x2<0, 0>(x0, c0);
    af[1] = fp4x2_to_bf16x2<0, 0>(x1, c1);
    af[2] = fp4x2_to_bf16x2<1, 0>(x0, c0);
    af[3] = fp4x2_to_bf16x2<1, 0>(x1, c1);
  }
}

// The tile heights (token rows per tile = the wgmma N) the kernel is compiled for; the host
// picks one per call from the average routed rows per expert (prefill.cu, pick_tile_rows).
constexpr int kWgTileRows[] = {16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128};
constexpr int kWgTileCount = sizeof(kWgTileRows) / sizeof(kWgTileRows[0]);

template <int BM>
struct WgShape {
  // CTAs per SM the register budget is set for: the accumulators take BM / 2 registers
  // (on an H200 this beat 3 / 2 CTAs per SM with one wgmma group per k16 step by 3-7% on the
  // short tiles and was within 1% on 128)
  static constexpr int kMinBlocks = BM <= 32 ? 4 : BM <= 64 ? 3 : 2;
  static constexpr int kBTile = BM * 128;  // token rows x 64 K, bf16, 128-byte swizzle
  static constexpr int kStage = kBTile + kBN * 32 + kBN * kScaleRowBytes;
  // as many pipeline stages (3..8) as fit kMinBlocks CTAs in an SM's 228 KB (1 KB reserved per
  // CTA, 1 KB alignment slack, s_pair and s_w, 1 KB margin)
  static constexpr int kFit = (233472 / kMinBlocks - 3072 - BM * 8) / kStage;
  static constexpr int kStages = kFit < 3 ? 3 : kFit > 8 ? 8 : kFit;
  static constexpr int kSmem = 1024 + kStages * kStage + BM * 8;  // + alignment slack, s_pair, s_w
  static_assert(BM % 8 == 0 && BM >= 8 && BM <= 128, "tile rows");
  static_assert(kStage % 1024 == 0, "stage alignment");
  static_assert(BM * (kBN + 8) * 2 <= kStages * kStage, "epilogue tile");
};

template <int BM, int EPI>
__global__ void __launch_bounds__(kThreads, WgShape<BM>::kMinBlocks)
    wgmma_gemm_kernel(const __grid_constant__ GemmParams p) {
#ifdef FP4MOE_PREFILL_WGMMA
  using S = WgShape<BM>;
  // FC1's epilogue stages its h tile in the first kEpiSlots pipeline slots; the next tile's
  // first stages go to the slots after them, so they load while this tile's epilogue runs.
  constexpr int HC = EPI == kEpiSwiGLU ? kBN / 2 : kBN;  // h columns per FC1 tile
  constexpr int HS = HC + 8;                             // padded h row in shared memory (elements)
  constexpr int kEpiSlots = EPI == kEpiFc2 ? 0 : (BM * HS * 2 + S::kStage - 1) / S::kStage;
  // the producer runs kDist stages ahead: every slot but the one the previous stage's wgmma
  // group may still read (and, while a tile starts, but the epilogue's)
  constexpr int kDist = S::kStages - (kEpiSlots > 1 ? kEpiSlots : 1);
  static_assert(kDist >= 1, "the epilogue tile leaves no pipeline slot for the next tile's first stages");
  constexpr uint32_t kTx = BM * 128 + kBN * (32 + kScaleRowBytes);  // bytes a stage brings: token rows, codes, scales
  extern __shared__ uint8_t smem_raw[];
  uint8_t* smem = smem_raw + ((1024u - (smem_addr(smem_raw) & 1023u)) & 1023u);
  int* s_pair = reinterpret_cast<int*>(smem + S::kStages * S::kStage);
  float* s_w = reinterpret_cast<float*>(s_pair + BM);
  // per pipeline slot: "full" (the producer's expect-tx arrival plus the TMA bytes) and "empty"
  // (one arrival per warp once its wgmma group that read the slot has retired)
  __shared__ __align__(8) uint64_t s_full[S::kStages], s_empty[S::kStages];
  __shared__ int4 s_tc[2];   // by tile parity: the tile's e, ntile, row0, rows
  __shared__ float s_gsc[2];  // by tile parity: its epilogue scale
  __shared__ int s_next[2];

  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int wg = warp >> 2, w4 = warp & 3, g = lane >> 2, q = lane & 3;
  const int nrow = wg * 64 + w4 * 16 + g;  // this thread's weight rows: nrow, nrow + 8
  pdl_launch_dependents();
  pdl_wait();  // the routing and (FC2) FC1 of this call are complete
  const int total = p.n_mtiles[0] * p.nt;
  if (static_cast<int>(blockIdx.x) >= total) return;

  // shared-window addresses, pinned in registers (the compiler otherwise rebuilds them from the
  // CTA id in every stage)
  const uint32_t sbase = opaque(smem_addr(smem));
  const uint32_t full0 = opaque(smem_addr(&s_full[0])), empty0 = opaque(smem_addr(&s_empty[0]));
  if (tid == 0) {
    for (int s = 0; s < S::kStages; ++s) {
      mbar_init(full0 + 8 * s, 1);
      mbar_init(empty0 + 8 * s, kThreads / 32);
    }
    mbar_init_fence();
  }
  __syncthreads();

  const uint32_t w_src = opaque(sbase + S::kBTile + nrow * 32 + q * 8);   // codes of rows nrow, + 8
  const uint32_t s_src = opaque(sbase + S::kBTile + kBN * 32 + nrow * kScaleRowBytes);  // their scales
  const uint64_t desc0 = smem_desc_sw128(sbase);
  const int KC = p.kc;

  // Every tile's stage kc sits in slot (kEpiSlots + kc) % kStages: the k-loop is unrolled by
  // kStages, so each stage's slot, barriers and descriptor offset are compile-time constants.
  // The producer is warp 0 (one elected lane acts): it loads the tile kDist stages ahead of
  // the k-loop, each stage with one TMA box of token rows and two bulk copies (codes, scales),
  // once every warp has released the slot.
  int l_row0 = 0;
  uint32_t l_blk = 0;    // the tile's first weight block: (e * nt + ntile) * kc
  uint32_t l_par = ~0u;  // per slot: the parity of its next empty-barrier wait (a fresh barrier's
                         // "previous phase", parity 1, counts as complete: every slot starts empty)
  const uint64_t pol = l2_evict_first_policy();
  auto load = [&](int kc, int slot) {  // warp 0, kc < KC
    mbar_wait_warp(empty0 + 8 * slot, (l_par >> slot) & 1u);
    l_par ^= 1u << slot;
    const uint32_t dst = sbase + slot * S::kStage;
    tma_stage_warp(full0 + 8 * slot, kTx, dst, &p.a_map, kc * kBK, l_row0, dst + S::kBTile,
                   p.w_codes + static_cast<size_t>(l_blk + kc) * (kBN * 32), kBN * 32, dst + S::kBTile + kBN * 32,
                   reinterpret_cast<const uint8_t*>(p.w_scales) + static_cast<size_t>(l_blk + kc) * (kBN * kScaleRowBytes), kBN * kScaleRowBytes,
                   pol);
  };
  // warp 0: a tile's start - its coordinates and epilogue scale to shared memory (by the
  // tile's parity), its first kDist stages
  auto start_tile = [&](const TileCoord& c, int par) {
    if (lane == 0) {
      s_tc[par] = make_int4(c.e, c.ntile, c.row0, c.rows);
      s_gsc[par] = p.gscale[c.e];
    }
    l_row0 = c.row0;
    l_blk = (static_cast<uint32_t>(c.e) * p.nt + c.ntile) * p.kc;
#pragma unroll
    for (int s = 0; s < kDist; ++s)
      if (s < KC) load(s, (kEpiSlots + s) % S::kStages);
  };

  // Persistent: the first round of tiles is static (tile = CTA), then each CTA claims its next
  // tile from a counter when it starts one (read once the tile's k-loop is done: the atomic's
  // round trip hides behind it), so CTAs whose tiles ran fast take more. The next tile's first
  // stages are issued before this tile's epilogue, so their latency hides behind it.
  {
    const TileCoord tc = tile_coord(p, blockIdx.x);
    if constexpr (EPI == kEpiFc2) stage_fc2_pairs<BM>(p, tc, tid, s_pair, s_w);
    if (warp == 0) start_tile(tc, 0);
  }
  uint32_t use_par = 0;  // per slot: the parity of its next full-barrier wait
  for (int it = 0;; ++it) {
    int claim = 0;
    if (tid == 0) claim = atomicAdd(p.tile_claim, 1);
    // One k-stage (64 K): wait for its data, let warp 0 issue the loads kDist stages ahead,
    // read the codes, retire the previous stage's wgmma group (it reads the A-fragment
    // registers) and release its slot, dequantize, issue four wgmmas as one group. One wgmma
    // width per kernel: ptxas serializes every wgmma of a kernel that holds two widths
    // (C7511/C7512, register resources).
    constexpr int N = BM;
    float acc[N / 2];
#pragma unroll
    for (int i = 0; i < N / 2; ++i) acc[i] = 0.0f;
    uint32_t af[4][4];
    // stage kc of the tile, in unrolled position u (slot (kEpiSlots + u) % kStages)
    auto stage = [&](const int kc, const int u) {
      constexpr int kSlot0 = kEpiSlots;
      const int slot = (kSlot0 + u) % S::kStages;  // constants once unrolled
      const int prev = (kSlot0 + u + S::kStages - 1) % S::kStages;
      mbar_wait_warp(full0 + 8 * slot, (use_par >> slot) & 1u);
      use_par ^= 1u << slot;
      const uint32_t so = slot * S::kStage;
      const uint2 w0 = lds64(w_src + so), w1 = lds64(w_src + so + 8 * 32);
      const uint2 s0 = lds64(s_src + so), s1 = lds64(s_src + so + 8 * kScaleRowBytes);
      // the descriptor's start address field is addr >> 4 (14 bits; no carry out of it:
      // shared addresses stay below 2^18)
      const uint64_t desc = desc0 + (so >> 4);
      wgmma_wait<0>();
      if (kc > 0) mbar_arrive_warp(empty0 + 8 * prev);  // the previous stage's group has retired
      if (warp == 0 && kc + kDist < KC) load(kc + kDist, (kSlot0 + u + kDist) % S::kStages);
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) {
        const uint32_t x0 = kb < 2 ? w0.x : w0.y, x1 = kb < 2 ? w1.x : w1.y;
        const uint32_t c0 = kb < 2 ? s0.x : s0.y, c1 = kb < 2 ? s1.x : s1.y;
        dequant_frag(af[kb], kb, x0, x1, c0, c1);
      }
#pragma unroll
      for (int kb = 0; kb < 4; ++kb)
#pragma unroll
        for (int i = 0; i < 4; ++i) fence_operand(af[kb][i]);
      wgmma_fence();
#pragma unroll
      for (int kb = 0; kb < 4; ++kb) wgmma_rs<N>(acc, af[kb], desc + kb * 2);
      wgmma_commit();
    };
    // Whole rounds of kStages stages first, with no per-stage bound check (an A/B on an H200:
    // 2-7% faster at M <= 1024 than one loop checking kc < KC in every stage), then the last
    // partial round.
    const int KCf = KC - KC % S::kStages;
    for (int kc0 = 0; kc0 < KCf; kc0 += S::kStages) {
#pragma unroll
      for (int u = 0; u < S::kStages; ++u) stage(kc0 + u, u);
    }
#pragma unroll
    for (int u = 0; u < S::kStages - 1; ++u)
      if (KCf + u < KC) stage(KCf + u, u);
    const int prev = (kEpiSlots + KC - 1) % S::kStages;  // the tile's last stage
    wgmma_wait<0>();
    mbar_arrive_warp(empty0 + 8 * prev);
    if (tid == 0) s_next[it & 1] = static_cast<int>(gridDim.x) + claim;
    __syncthreads();  // every wgmma of the tile has retired; s_next is published
    const int next = s_next[it & 1];
    const int4 cur = s_tc[it & 1];  // this tile: e, ntile, row0, rows
    const float gsc = s_gsc[it & 1];
    int n_pair = -1;
    float n_w = 0.0f;
    if (next < total && (warp == 0 || (EPI == kEpiFc2 && tid < BM))) {
      const TileCoord nc = tile_coord(p, next);
      if (EPI == kEpiFc2 && tid < BM) {  // the next tile's pairs: stored to s_pair / s_w once this epilogue is done
        n_pair = tid < nc.rows ? p.sorted_pair[nc.row0 + tid] : -1;
        n_w = n_pair >= 0 ? p.topk_w[n_pair] : 0.0f;
      }
      if (warp == 0) start_tile(nc, (it + 1) & 1);
    }

    if constexpr (EPI == kEpiFc2) {
      const int col = cur.y * kBN + nrow;
      const bool ok0 = col < p.out_cols, ok1 = col + 8 < p.out_cols;
#pragma unroll
      for (int j = 0; j < N / 8; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int tok = 8 * j + 2 * q + c;
          if (tok < cur.w) {
            float* dst = p.term + static_cast<int64_t>(s_pair[tok]) * p.out_cols + col;
            const float w = s_w[tok];
            if (ok0) dst[0] = w * (acc[j * 4 + c] * gsc);
            if (ok1) dst[8] = w * (acc[j * 4 + 2 + c] * gsc);
          }
        }
    } else {
      __nv_bfloat16* hs = reinterpret_cast<__nv_bfloat16*>(smem);
#pragma unroll
      for (int j = 0; j < N / 8; ++j)
#pragma unroll
        for (int c = 0; c < 2; ++c) {
          const int tok = 8 * j + 2 * q + c;
          if constexpr (EPI == kEpiSwiGLU) {
            const float y0 = acc[j * 4 + c] * gsc, y1 = acc[j * 4 + 2 + c] * gsc;  // gate, up
            const float hv = silu_fast(y0) * y1;
            hs[tok * HS + (wg * 32 + w4 * 8 + g)] = __float2bfloat16_rn(hv);
          } else {
            const float y0 = acc[j * 4 + c] * gsc, y1 = acc[j * 4 + 2 + c] * gsc;
            const float r0 = y0 > 0.0f ? y0 : 0.0f, r1 = y1 > 0.0f ? y1 : 0.0f;
            hs[tok * HS + nrow] = __float2bfloat16_rn(r0 * r0);
            hs[tok * HS + nrow + 8] = __float2bfloat16_rn(r1 * r1);
          }
        }
      __syncthreads();
      store_h_tile<BM, HC, HS>(p, hs, cur.x, cur.z, cur.w, cur.y, tid);
      fence_proxy_async_smem();  // the h tile's shared accesses before the TMA writes that reuse its slots
    }
    if (next >= total) break;
    __syncthreads();  // this epilogue is done with s_pair (FC2) and its slots (FC1)
    if constexpr (EPI == kEpiFc2) {
      if (tid < BM) {
        s_pair[tid] = n_pair;
        s_w[tid] = n_w;
      }
    }
    // (the next tile's loop reaches its epilogue only after every warp has passed through
    // the barrier above and the one after its k-loop: s_pair / s_w are in place by then)
  }
#endif
}

}  // namespace fp4moe::cuda::prefill
