// fp4moe internal: the bit layout of a prepared 32-bit word of 8 e2m1 codes, shared by the
// decode and prefill weight layouts, and its dequantization to bf16 bits (host and device).
//
// The word feeds four bf16x2 registers (reg 0..3), two codes each (half 0 = low element,
// 1 = high). A code's 4 bits are not a nibble: they are scattered over the word so that one
// rotate and one mask put each code's magnitude into bits 8..6 and its sign into bit 15 of its
// half - the bf16 bits of the e2m1 value times 2^-126 (the two smallest codes are bf16
// subnormals); one bf16 multiply by the block scale (times a power of two that keeps the
// product normal) then gives the exact weight. Register 0 is one mask, 1 and 2 a rotate and a
// mask, 3 two rotates and two masks: 9 integer operations per word instead of 15 for nibbles.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define FP4MOE_HOST_DEVICE __host__ __device__
#else
#define FP4MOE_HOST_DEVICE
#endif

namespace fp4moe::cuda {

// Bit of the word that holds bit `role` (0 = m, 1 = e0, 2 = e1, 3 = sign) of the code of
// register `reg`, half `half`: (target bit - the register's rotation) mod 32.
FP4MOE_HOST_DEVICE constexpr int code_bit(int reg, int half, int role) {
  const int target = (role == 3 ? 15 : 6 + role) + 16 * half;
  const int rot = reg == 0 ? 0 : reg == 1 ? 4 : reg == 2 ? 10 : (role == 2 ? 30 : 6);
  return (target - rot + 32) % 32;
}

FP4MOE_HOST_DEVICE constexpr uint32_t rotl32(uint32_t w, int r) { return r ? (w << r) | (w >> (32 - r)) : w; }

// Register `reg` of word w as bf16x2 bits: per half, the code's magnitude in bits 8..6 and
// its sign in bit 15, all else zero.
FP4MOE_HOST_DEVICE constexpr uint32_t word_reg_bits(uint32_t w, int reg) {
  constexpr uint32_t kP = 0x81C081C0u;                         // bits 6..8, 15 of each half
  constexpr uint32_t kNoE1 = 0x80C080C0u, kE1 = 0x01000100u;  // reg 3 takes e1 from another rotation
  return reg == 0 ? (w & kP)
         : reg == 1 ? (rotl32(w, 4) & kP)
         : reg == 2 ? (rotl32(w, 10) & kP)
                    : ((rotl32(w, 6) & kNoE1) | (rotl32(w, 30) & kE1));
}

}  // namespace fp4moe::cuda
