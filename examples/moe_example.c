/* fp4moe C API example: a one-expert ReLU^2 layer whose weights are all 1.0, run on the host. */
#include <stdio.h>
#include <string.h>

#include <fp4moe/fp4moe.h>

enum { H = 16, I = 16, E = 1, K = 1 };

int main(void) {
  static unsigned char w13[E * I * H / 2], w13s[E * I * H / 16], w2[E * H * I / 2], w2s[E * H * I / 16];
  float g13[E] = {1.0f}, g2[E] = {1.0f / 256.0f};
  memset(w13, 0x22, sizeof w13); /* two e2m1 1.0 codes per byte */
  memset(w2, 0x22, sizeof w2);
  memset(w13s, 0x38, sizeof w13s); /* e4m3 1.0 */
  memset(w2s, 0x38, sizeof w2s);

  fp4moe_spec spec = {H, I, E, K, "relu2", "none", "gate_up"};
  fp4moe_weights w;
  memset(&w, 0, sizeof w);
  w.w13 = (fp4moe_tensor){w13, FP4MOE_U8, 3, {E, I, H / 2}};
  w.w13_scale = (fp4moe_tensor){w13s, FP4MOE_E4M3, 3, {E, I, H / 16}};
  w.w13_scale_2 = (fp4moe_tensor){g13, FP4MOE_F32, 1, {E}};
  w.w2 = (fp4moe_tensor){w2, FP4MOE_U8, 3, {E, H, I / 2}};
  w.w2_scale = (fp4moe_tensor){w2s, FP4MOE_E4M3, 3, {E, H, I / 16}};
  w.w2_scale_2 = (fp4moe_tensor){g2, FP4MOE_F32, 1, {E}};

  fp4moe_moe* moe = NULL;
  if (fp4moe_create(&spec, &w, NULL, &moe) != FP4MOE_OK) {
    fprintf(stderr, "create: %s\n", fp4moe_last_error());
    return 1;
  }
  unsigned short x[H], out[H];
  for (int i = 0; i < H; ++i) x[i] = 0x3F80; /* 1.0 */
  int ids[1] = {0};
  float wts[1] = {1.0f};
  fp4moe_tensor xt = {x, FP4MOE_BF16, 2, {1, H}}, it = {ids, FP4MOE_I32, 2, {1, K}};
  fp4moe_tensor wt = {wts, FP4MOE_F32, 2, {1, K}}, ot = {out, FP4MOE_BF16, 2, {1, H}};
  if (fp4moe_forward(moe, &xt, &it, &wt, &ot, NULL) != FP4MOE_OK) {
    fprintf(stderr, "forward: %s\n", fp4moe_last_error());
    return 1;
  }
  /* y = 16, h = 256, z = 16 * 256 / 256 = 16 = 0x4180 in bf16 */
  for (int i = 0; i < H; ++i)
    if (out[i] != 0x4180) {
      fprintf(stderr, "out[%d] = 0x%04x, expected 0x4180 (16.0)\n", i, out[i]);
      return 1;
    }
  printf("moe_example_c: backend %s, output 16.0 as expected\n", fp4moe_backend(moe));
  fp4moe_destroy(moe);
  return 0;
}
