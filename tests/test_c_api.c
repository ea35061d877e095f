/* The C API from C: a known answer on the host, and error codes with messages that name the
 * argument. Exits non-zero on the first failure. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fp4moe/fp4moe.h"

static int failures = 0;
#define CHECK(cond, ...)                                      \
  do {                                                        \
    if (!(cond)) {                                            \
      fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__);    \
      fprintf(stderr, __VA_ARGS__);                           \
      fprintf(stderr, "\n");                                  \
      ++failures;                                             \
    }                                                         \
  } while (0)

static fp4moe_tensor tensor(void* data, int dtype, int ndim, int64_t d0, int64_t d1, int64_t d2) {
  fp4moe_tensor t;
  memset(&t, 0, sizeof t);
  t.data = data;
  t.dtype = dtype;
  t.ndim = ndim;
  t.shape[0] = d0;
  t.shape[1] = d1;
  t.shape[2] = d2;
  return t;
}

static float bf16_to_float(uint16_t b) {
  uint32_t u = (uint32_t)b << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

enum { H = 32, I = 16, E = 3, K = 2, T = 2 };

int main(void) {
  /* ReLU^2 layer, every weight 1.0: e2m1 code 2 (1.0) in both nibbles, e4m3 scale 0x38 (1.0),
   * global scales: expert e has w13_scale_2 = 1 and w2_scale_2 = (e + 1) / 64. */
  static uint8_t w13[E * I * H / 2], w13s[E * I * H / 16], w2[E * H * I / 2], w2s[E * H * I / 16];
  float g13[E], g2[E];
  memset(w13, 0x22, sizeof w13);
  memset(w2, 0x22, sizeof w2);
  memset(w13s, 0x38, sizeof w13s);
  memset(w2s, 0x38, sizeof w2s);
  for (int e = 0; e < E; ++e) g13[e] = 1.0f, g2[e] = (float)(e + 1) / 64.0f;

  fp4moe_spec spec = {H, I, E, K, "relu2", "none", "gate_up"};
  fp4moe_weights w;
  memset(&w, 0, sizeof w);
  w.w13 = tensor(w13, FP4MOE_U8, 3, E, I, H / 2);
  w.w13_scale = tensor(w13s, FP4MOE_E4M3, 3, E, I, H / 16);
  w.w13_scale_2 = tensor(g13, FP4MOE_F32, 1, E, 0, 0);
  w.w2 = tensor(w2, FP4MOE_U8, 3, E, H, I / 2);
  w.w2_scale = tensor(w2s, FP4MOE_E4M3, 3, E, H, I / 16);
  w.w2_scale_2 = tensor(g2, FP4MOE_F32, 1, E, 0, 0);

  fp4moe_options opt;
  memset(&opt, 0, sizeof opt);
  opt.backend = "cpu-reference";
  opt.max_tokens = 4;
  opt.data_on = FP4MOE_HOST;

  fp4moe_moe* moe = NULL;
  fp4moe_status st = fp4moe_create(&spec, &w, &opt, &moe);
  CHECK(st == FP4MOE_OK, "create: %s: %s", fp4moe_status_string(st), fp4moe_last_error());
  if (!moe) return 1;
  CHECK(strcmp(fp4moe_backend(moe), "cpu-reference") == 0, "backend %s", fp4moe_backend(moe));
  CHECK(strstr(fp4moe_selection_report(moe), "cpu-reference") != NULL, "report: %s", fp4moe_selection_report(moe));

  /* x = 0.25 everywhere: y = 32 * 0.25 = 8, h = 64, z_e = 16 * 64 * (e+1)/64 = 16 (e+1).
   * token 0: experts 0, 2 with weights 0.5, 0.25 -> 8 + 12 = 20
   * token 1: experts 1, 0 with weights 1.0, 2.0  -> 32 + 32 = 64 */
  uint16_t x[T * H], out[T * H];
  for (int i = 0; i < T * H; ++i) x[i] = 0x3E80; /* 0.25 in bf16 */
  int32_t ids[T * K] = {0, 2, 1, 0};
  float wts[T * K] = {0.5f, 0.25f, 1.0f, 2.0f};
  fp4moe_tensor xt = tensor(x, FP4MOE_BF16, 2, T, H, 0), it = tensor(ids, FP4MOE_I32, 2, T, K, 0),
                wt = tensor(wts, FP4MOE_F32, 2, T, K, 0), ot = tensor(out, FP4MOE_BF16, 2, T, H, 0);
  st = fp4moe_forward(moe, &xt, &it, &wt, &ot, NULL);
  CHECK(st == FP4MOE_OK, "forward: %s", fp4moe_last_error());
  for (int o = 0; o < H; ++o) {
    CHECK(bf16_to_float(out[o]) == 20.0f, "out[0, %d] = %g, expected 20", o, bf16_to_float(out[o]));
    CHECK(bf16_to_float(out[H + o]) == 64.0f, "out[1, %d] = %g, expected 64", o, bf16_to_float(out[H + o]));
  }

  /* Errors: code and a message naming the argument. */
  fp4moe_tensor bad = tensor(x, FP4MOE_F32, 2, T, H, 0);
  st = fp4moe_forward(moe, &bad, &it, &wt, &ot, NULL);
  CHECK(st == FP4MOE_ERROR_INVALID_ARGUMENT, "bad x dtype: status %d", st);
  CHECK(strstr(fp4moe_last_error(), "x: expected dtype bfloat16, got dtype float32") != NULL, "msg: %s",
        fp4moe_last_error());
  ids[1] = 7;
  st = fp4moe_forward(moe, &xt, &it, &wt, &ot, NULL);
  CHECK(st == FP4MOE_ERROR_INVALID_ARGUMENT && strstr(fp4moe_last_error(), "topk_ids[0, 1]") != NULL, "bad id: %d %s",
        st, fp4moe_last_error());
  st = fp4moe_forward(NULL, &xt, &it, &wt, &ot, NULL);
  CHECK(st == FP4MOE_ERROR_INVALID_ARGUMENT && strstr(fp4moe_last_error(), "moe") != NULL, "null handle");
  fp4moe_destroy(moe);

  fp4moe_moe* m2 = NULL;
  opt.backend = "cuda-decode"; /* host data: cannot run, whatever the machine */
  st = fp4moe_create(&spec, &w, &opt, &m2);
  CHECK(st == FP4MOE_ERROR_UNSUPPORTED && m2 == NULL, "explicit backend: status %d", st);
  CHECK(strstr(fp4moe_last_error(), "cuda-decode") != NULL, "msg: %s", fp4moe_last_error());
  opt.backend = "nope";
  st = fp4moe_create(&spec, &w, &opt, &m2);
  CHECK(st == FP4MOE_ERROR_INVALID_ARGUMENT && strstr(fp4moe_last_error(), "backend: expected one of auto") != NULL,
        "unknown backend: %d %s", st, fp4moe_last_error());
  opt.backend = NULL;
  spec.activation = "gelu";
  st = fp4moe_create(&spec, &w, &opt, &m2);
  CHECK(st == FP4MOE_ERROR_INVALID_ARGUMENT && strstr(fp4moe_last_error(), "activation") != NULL, "activation: %s",
        fp4moe_last_error());
  spec.activation = "relu2";
  w.w2.shape[2] = I; /* wrong: expected I/2 */
  st = fp4moe_create(&spec, &w, &opt, &m2);
  CHECK(st == FP4MOE_ERROR_INVALID_ARGUMENT && strstr(fp4moe_last_error(), "w2: expected shape") != NULL, "w2: %s",
        fp4moe_last_error());
  fp4moe_destroy(NULL);

  if (failures) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("test_c_api: all checks passed (fp4moe %s)\n", fp4moe_version());
  return 0;
}
