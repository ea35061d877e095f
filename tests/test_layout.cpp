// The 128x4 swizzled scale layout: known offsets, inverse, padding.
#include <gtest/gtest.h>

#include <random>

#include "fp4moe/format.hpp"

using namespace fp4moe;

TEST(Swizzle, KnownOffsets) {
  EXPECT_EQ(swizzled_scale_offset(0, 0, 8), 0u);
  EXPECT_EQ(swizzled_scale_offset(0, 1, 8), 1u);
  EXPECT_EQ(swizzled_scale_offset(1, 0, 8), 16u);
  EXPECT_EQ(swizzled_scale_offset(32, 0, 8), 4u);
  EXPECT_EQ(swizzled_scale_offset(0, 4, 8), 512u);
  EXPECT_EQ(swizzled_scale_offset(128, 0, 8), 1024u);  // KT = 2 tiles of 512 per 128 rows
  EXPECT_EQ(swizzled_scale_offset(127, 7, 8), 512u + 31 * 16 + 3 * 4 + 3);
}

TEST(Swizzle, InverseOnOddShapesWithZeroPadding) {
  std::mt19937 rng(7);
  for (auto [rows, cols] : {std::pair{1, 1}, {130, 5}, {256, 8}, {77, 3}, {768, 128}}) {
    std::vector<uint8_t> lin(rows * cols);
    for (auto& b : lin) b = static_cast<uint8_t>(1 + rng() % 255);
    auto sw = swizzle_scales(lin.data(), rows, cols);
    EXPECT_EQ(sw.size(), static_cast<size_t>((rows + 127) / 128 * 128 * ((cols + 3) / 4 * 4)));
    size_t nonzero = 0;
    for (auto b : sw) nonzero += b != 0;
    EXPECT_EQ(nonzero, lin.size()) << "padding must be zero and every value placed once";
    EXPECT_EQ(unswizzle_scales(sw.data(), rows, cols), lin);
  }
}
