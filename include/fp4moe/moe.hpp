// fp4moe: the MoE layer description shared by every backend.
#pragma once
#include <cstdint>
#include <string>

#include "fp4moe/tensor.hpp"

namespace fp4moe {

enum class Activation : uint8_t { SwiGLU, ReLU2 };  // SwiGLU: gated, N1 = 2I; ReLU2: N1 = I
enum class Mode : uint8_t { W4A16, W4A4 };
// Order of the fused FC1 rows for SwiGLU. fp4moe's convention is GateUp: rows [0, I) are
// the gate projection (w1), rows [I, 2I) the up projection (w3) - vLLM's order.
enum class GateUpOrder : uint8_t { GateUp, UpGate };

const char* to_string(Activation a);
const char* to_string(Mode m);
const char* to_string(GateUpOrder o);
Activation parse_activation(const std::string& s);  // "silu"/"swiglu", "relu2"
Mode parse_mode(const std::string& s);              // "w4a16", "w4a4"
GateUpOrder parse_gate_up_order(const std::string& s);  // "gate_up", "up_gate"

struct MoeSpec {
  int64_t hidden = 0;   // H
  int64_t inter = 0;    // I (per-expert intermediate size)
  int64_t experts = 0;  // E (routed experts)
  int64_t topk = 0;     // k
  Activation activation = Activation::SwiGLU;
  Mode mode = Mode::W4A16;
  GateUpOrder gate_up_order = GateUpOrder::GateUp;

  int64_t n1() const { return activation == Activation::SwiGLU ? 2 * inter : inter; }
  // Throws fp4moe::Error naming the field when the spec itself is invalid.
  void validate() const;
};

// The expert weights in the on-disk (ModelOpt) linear layout. Host or device pointers,
// depending on who consumes them.
//   w13 [E, N1, H/2] u8, w13_scale [E, N1, H/16] e4m3, w13_scale_2 [E] f32
//   w2  [E, H, I/2] u8,  w2_scale  [E, H, I/16] e4m3,  w2_scale_2  [E] f32
//   a13_scale, a2_scale: [E] or [] (scalar) f32, dequant direction; W4A4 only, optional
//   (absent = 1.0; for a13 in W4A4 a missing scale means "no global scale" too).
struct MoeWeights {
  TensorView w13, w13_scale, w13_scale_2;
  TensorView w2, w2_scale, w2_scale_2;
  TensorView a13_scale, a2_scale;
};

// Validates every weight tensor against the spec (dtypes, shapes). Does not read data.
void validate_weights(const MoeSpec& spec, const MoeWeights& w);
// Validates x [T, H] bf16, topk_ids [T, k] i32/i64, topk_weights [T, k] f32/bf16; returns T.
int64_t validate_inputs(const MoeSpec& spec, const TensorView& x, const TensorView& topk_ids,
                        const TensorView& topk_weights);
// Host-side routing checks: every id in [0, E), no id twice in one row, weights finite.
void validate_routing_values(const MoeSpec& spec, const TensorView& topk_ids, const TensorView& topk_weights);

}  // namespace fp4moe
