/* fp4moe: the C API - one prepared NVFP4 MoE layer behind an opaque handle, for engines that
 * call through an FFI. Same semantics as the C++ class fp4moe::Moe (fp4moe/api.hpp).
 *
 * Every function returns an fp4moe_status; on failure the message of the last error on the
 * calling thread is fp4moe_last_error() (valid until the next fp4moe call on that thread).
 * Messages name the argument, what was expected and what was given. No function throws or
 * aborts. A handle is used by one thread/stream at a time (see api.hpp); distinct handles
 * are independent. */
#ifndef FP4MOE_FP4MOE_H
#define FP4MOE_FP4MOE_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum fp4moe_status {
  FP4MOE_OK = 0,
  FP4MOE_ERROR_INVALID_ARGUMENT = 1, /* a bad pointer, dtype, shape, value or option */
  FP4MOE_ERROR_UNSUPPORTED = 2,      /* backend selection failed: no backend / the requested one cannot run */
  FP4MOE_ERROR_CUDA = 3,             /* a CUDA runtime error */
  FP4MOE_ERROR_INTERNAL = 4          /* anything else (out of memory on the host, a bug) */
} fp4moe_status;

typedef enum fp4moe_dtype {
  FP4MOE_U8 = 0, FP4MOE_E4M3 = 1, FP4MOE_F32 = 2, FP4MOE_BF16 = 3, FP4MOE_I32 = 4, FP4MOE_I64 = 5
} fp4moe_dtype;

typedef enum fp4moe_memory { FP4MOE_HOST = 1, FP4MOE_DEVICE = 2 } fp4moe_memory;

#define FP4MOE_MAX_DIMS 4

/* A dense row-major tensor. ndim 0 with data != NULL is a scalar; data == NULL with ndim 0
 * is "absent" (the optional input scales). */
typedef struct fp4moe_tensor {
  void* data;
  int32_t dtype; /* fp4moe_dtype */
  int32_t ndim;
  int64_t shape[FP4MOE_MAX_DIMS];
} fp4moe_tensor;

typedef struct fp4moe_spec {
  int64_t hidden, inter, experts, topk;
  const char* activation;    /* "silu" (gated, N1 = 2I) or "relu2" (N1 = I); NULL = "silu" */
  const char* act_quant;     /* "none" (W4A16) or "nvfp4" (W4A4); NULL = "none" */
  const char* gate_up_order; /* "gate_up" or "up_gate"; NULL = "gate_up" */
} fp4moe_spec;

/* The on-disk (ModelOpt) linear layout: w13 [E, N1, H/2] u8, w13_scale [E, N1, H/16] e4m3,
 * w13_scale_2 [E] f32, w2 [E, H, I/2] u8, w2_scale [E, H, I/16] e4m3, w2_scale_2 [E] f32,
 * a13_scale / a2_scale [E] or scalar f32 (dequant direction), optional. */
typedef struct fp4moe_weights {
  fp4moe_tensor w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13_scale, a2_scale;
} fp4moe_weights;

typedef struct fp4moe_options {
  const char* backend;  /* "auto" (NULL too) or a backend name */
  int64_t max_tokens;   /* 0 = 8192 */
  int32_t device;       /* CUDA device index */
  int32_t weights_on;   /* fp4moe_memory; 0 = host */
  int32_t data_on;      /* fp4moe_memory of forward()'s tensors; 0 = host */
  int32_t ids_dtype;    /* FP4MOE_I32 or FP4MOE_I64; 0 (= FP4MOE_U8) means FP4MOE_I32 */
  int32_t topk_weights_dtype; /* FP4MOE_F32 or FP4MOE_BF16; 0 means FP4MOE_F32 */
  int64_t crossover;    /* hybrid crossover in tokens; 0 = FP4MOE_CROSSOVER / tune file / default */
} fp4moe_options;

typedef struct fp4moe_moe fp4moe_moe; /* opaque */

/* options may be NULL (all defaults). On success *out is a new handle. */
fp4moe_status fp4moe_create(const fp4moe_spec* spec, const fp4moe_weights* weights, const fp4moe_options* options,
                            fp4moe_moe** out);
/* x [T, H] bf16, topk_ids [T, k], topk_weights [T, k], out [T, H] bf16; stream: a
 * cudaStream_t or NULL. */
fp4moe_status fp4moe_forward(fp4moe_moe* moe, const fp4moe_tensor* x, const fp4moe_tensor* topk_ids,
                             const fp4moe_tensor* topk_weights, fp4moe_tensor* out, void* stream);
/* NULL is allowed. */
void fp4moe_destroy(fp4moe_moe* moe);

/* The chosen backend's name, and the selection report (both owned by the handle). */
const char* fp4moe_backend(const fp4moe_moe* moe);
const char* fp4moe_selection_report(const fp4moe_moe* moe);
const char* fp4moe_last_error(void);
const char* fp4moe_status_string(fp4moe_status status);
const char* fp4moe_version(void);

#ifdef __cplusplus
}
#endif
#endif /* FP4MOE_FP4MOE_H */
