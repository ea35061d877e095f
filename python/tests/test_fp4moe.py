"""fp4moe PyTorch binding tests: against a pure-torch reference (dequantize with a lookup table,
matmul in float32), under CUDA-graph capture and under torch.compile, and argument errors."""
import pytest
import torch

import fp4moe

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="no CUDA GPU visible to torch (torch.cuda.is_available() is False)")

E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])
E2M1_MIDS = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0])


# ---------------------------------------------------------------- the reference

def dequant(packed, scales, g):
    """[E, R, C/2] u8 codes (low nibble first), [E, R, C/16] e4m3, [E] f32 -> [E, R, C] f32."""
    E, R, half = packed.shape
    p = packed.cpu().long()
    codes = torch.stack([p & 0xF, p >> 4], dim=-1).reshape(E, R, 2 * half)
    v = E2M1[codes]
    s = scales.cpu().float().repeat_interleave(16, dim=-1)
    return v * s * g.cpu().float()[:, None, None]


def e2m1_round(v):
    """Round to the nearest e2m1 value, ties to the even code, saturating at 6; keeps the sign."""
    a = v.abs().clamp(max=6.0)
    c = (a.unsqueeze(-1) > E2M1_MIDS).sum(-1)
    tie = (c < 7) & (a == E2M1_MIDS[c.clamp(max=6)]) & (c % 2 == 1)
    c = c + tie.long()
    return torch.where(v < 0, -E2M1[c], E2M1[c])


def quant_act(x, a):
    """NVFP4 activation quantization of rows x [n, C] with input scale a (dequant direction):
    returns e2m1(q) * s per 16-block, WITHOUT a (a goes into the epilogue)."""
    n, C = x.shape
    b = x.reshape(n, C // 16, 16)
    amax = b.abs().amax(-1, keepdim=True)
    # e4m3 saturates at 448 like the library's encoder (torch's cast would give NaN above it)
    s = (amax / (6.0 * a)).clamp(max=448.0).to(torch.float8_e4m3fn).float()
    q = torch.where(s > 0, e2m1_round(b / (s * a)), torch.zeros_like(b))
    return (q * s).reshape(n, C)


def bf16(t):
    return t.to(torch.bfloat16).float()


def reference(x, ids, wts, L, activation, act_quant, gate_up_order="gate_up"):
    x = x.cpu().float()
    ids = ids.cpu().long()
    wts = wts.cpu().float()
    W1 = dequant(L["w13"], L["w13_scale"], L["w13_scale_2"])
    W2 = dequant(L["w2"], L["w2_scale"], L["w2_scale_2"])
    I = W2.shape[2]
    T, k = ids.shape
    out = torch.zeros(T, W2.shape[1])
    a4 = act_quant == "nvfp4"
    for t in range(T):
        for j in range(k):
            e = int(ids[t, j])
            xin = x[t : t + 1]
            a13 = float(L["a13_scale"][e]) if a4 else 1.0
            a2 = float(L["a2_scale"][e]) if a4 else 1.0
            if a4:
                xin = quant_act(xin, a13)
            y = (xin @ W1[e].T) * a13
            if activation == "silu":
                gate, up = (y[:, :I], y[:, I:]) if gate_up_order == "gate_up" else (y[:, I:], y[:, :I])
                h = torch.nn.functional.silu(gate) * up
            else:
                h = torch.relu(y) ** 2
            h = bf16(h)
            if a4:
                h = quant_act(h, a2)
            z = (h @ W2[e].T) * a2
            out[t] += wts[t, j] * z[0]
    return out


def rel_l2(a, ref):
    a = a.cpu().float()
    return float((a - ref).norm() / ref.norm().clamp(min=1e-30))


# ---------------------------------------------------------------- data

def make_layer(E, H, I, activation, act_quant, device, seed=0):
    g = torch.Generator().manual_seed(seed)
    N1 = 2 * I if activation == "silu" else I
    L = {}
    L["w13"] = torch.randint(0, 256, (E, N1, H // 2), generator=g, dtype=torch.uint8)
    L["w2"] = torch.randint(0, 256, (E, H, I // 2), generator=g, dtype=torch.uint8)
    # block scales 2^-3..2^1 (exact in e4m3), global scales near 1/64
    L["w13_scale"] = (2.0 ** torch.randint(-3, 2, (E, N1, H // 16), generator=g).float()).to(torch.float8_e4m3fn)
    L["w2_scale"] = (2.0 ** torch.randint(-3, 2, (E, H, I // 16), generator=g).float()).to(torch.float8_e4m3fn)
    L["w13_scale_2"] = (torch.rand(E, generator=g) * 0.5 + 0.5) / 64
    L["w2_scale_2"] = (torch.rand(E, generator=g) * 0.5 + 0.5) / 64
    if act_quant == "nvfp4":
        L["a13_scale"] = torch.full((E,), 4.0 / (6 * 448))
        L["a2_scale"] = torch.full((E,), 2.0 / (6 * 448))
    return {k: v.to(device) for k, v in L.items()}


def make_inputs(T, H, E, k, device, seed=1, ids_dtype=torch.int32, w_dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, H, generator=g).clamp(-4, 4).to(torch.bfloat16)
    ids = torch.stack([torch.randperm(E, generator=g)[:k] for _ in range(T)]) if T else torch.zeros(0, k)
    wts = torch.rand(T, k, generator=g) + 0.1
    wts = wts / wts.sum(-1, keepdim=True)
    return x.to(device), ids.to(ids_dtype).to(device), wts.to(w_dtype).to(device)


def layer_args(L):
    return (L["w13"], L["w13_scale"], L["w13_scale_2"], L["w2"], L["w2_scale"], L["w2_scale_2"])


def layer_kwargs(L, activation, act_quant):
    return dict(activation=activation, act_quant=act_quant, a13_scale=L.get("a13_scale"), a2_scale=L.get("a2_scale"))


E, H, I, K = 8, 256, 128, 2


# ---------------------------------------------------------------- CPU reference path (any machine)

def test_cpu_tensors_run_the_cpu_reference():
    L = make_layer(E, H, I, "silu", "none", "cpu")
    x, ids, wts = make_inputs(3, H, E, K, "cpu")
    moe = fp4moe.NvFp4MoE(*layer_args(L), max_tokens=16, topk=K)
    assert moe.backend() == "cpu-reference"
    y = moe(x, ids, wts)
    assert y.dtype == torch.bfloat16 and y.shape == (3, H)
    assert rel_l2(y, reference(x, ids, wts, L, "silu", "none")) < 1e-2


@pytest.mark.parametrize("activation", ["silu", "relu2"])
@pytest.mark.parametrize("act_quant", ["none", "nvfp4"])
def test_cpu_fused_moe_matches_reference(activation, act_quant):
    # the library's CPU reference against this file's reference (runs anywhere)
    L = make_layer(E, H, I, activation, act_quant, "cpu", seed=21)
    x, ids, wts = make_inputs(7, H, E, K, "cpu", seed=22, ids_dtype=torch.int64)
    y = fp4moe.fused_moe(x, ids, wts, *layer_args(L), **layer_kwargs(L, activation, act_quant))
    ref = reference(x, ids, wts, L, activation, act_quant)
    assert rel_l2(y, ref) < (1e-2 if act_quant == "none" else 3e-2), f"rel L2 {rel_l2(y, ref):.3e}"


# ---------------------------------------------------------------- CUDA: accuracy

@needs_cuda
@pytest.mark.parametrize("activation", ["silu", "relu2"])
@pytest.mark.parametrize("act_quant", ["none", "nvfp4"])
@pytest.mark.parametrize("T", [1, 5, 64, 300])
def test_fused_moe_matches_reference(activation, act_quant, T):
    L = make_layer(E, H, I, activation, act_quant, "cuda", seed=T)
    x, ids, wts = make_inputs(T, H, E, K, "cuda", seed=T + 1)
    y = fp4moe.fused_moe(x, ids, wts, *layer_args(L), **layer_kwargs(L, activation, act_quant))
    assert y.shape == x.shape and y.dtype == torch.bfloat16 and y.device == x.device
    ref = reference(x, ids, wts, L, activation, act_quant)
    tol = 1e-2 if act_quant == "none" else 3e-2
    assert rel_l2(y, ref) < tol, f"rel L2 {rel_l2(y, ref):.3e}"


@needs_cuda
def test_int64_ids_bf16_weights_and_up_gate_order():
    L = make_layer(E, H, I, "silu", "none", "cuda", seed=3)
    x, ids, wts = make_inputs(9, H, E, K, "cuda", seed=4, ids_dtype=torch.int64, w_dtype=torch.bfloat16)
    y = fp4moe.fused_moe(x, ids, wts, *layer_args(L), gate_up_order="up_gate")
    ref = reference(x, ids, wts, L, "silu", "none", gate_up_order="up_gate")
    assert rel_l2(y, ref) < 1e-2
    # and the order matters (the test can fail)
    assert rel_l2(y, reference(x, ids, wts, L, "silu", "none")) > 0.1


@needs_cuda
def test_nvfp4moe_module_out_argument_and_backends():
    L = make_layer(E, H, I, "silu", "none", "cuda", seed=5)
    moe = fp4moe.NvFp4MoE(*layer_args(L), max_tokens=512, topk=K)
    report = moe.selection_report()
    assert "candidates" in report and moe.backend() in report
    x, ids, wts = make_inputs(40, H, E, K, "cuda", seed=6)
    out = torch.empty_like(x)
    r = moe(x, ids, wts, out=out)
    assert r.data_ptr() == out.data_ptr()
    assert rel_l2(out, reference(x, ids, wts, L, "silu", "none")) < 1e-2
    for b in ["cuda-decode", "cuda-prefill", "hybrid"]:
        m = fp4moe.NvFp4MoE(*layer_args(L), max_tokens=64, backend=b, topk=K)
        assert m.backend() == b
        assert rel_l2(m(x, ids, wts), reference(x, ids, wts, L, "silu", "none")) < 1e-2


@needs_cuda
def test_functional_cache_sees_in_place_updates():
    L = make_layer(E, H, I, "relu2", "none", "cuda", seed=7)
    x, ids, wts = make_inputs(4, H, E, K, "cuda", seed=8)
    y1 = fp4moe.fused_moe(x, ids, wts, *layer_args(L), activation="relu2")
    L["w2_scale_2"].mul_(2.0)  # bumps the version: the cache must re-prepare
    y2 = fp4moe.fused_moe(x, ids, wts, *layer_args(L), activation="relu2")
    torch.testing.assert_close(y2.float(), 2 * y1.float(), rtol=1e-2, atol=1e-3)


# ---------------------------------------------------------------- CUDA graphs, torch.compile

@needs_cuda
@pytest.mark.parametrize("T", [4, 200])
def test_cuda_graph_capture_and_replay(T):
    L = make_layer(E, H, I, "silu", "none", "cuda", seed=9)
    moe = fp4moe.NvFp4MoE(*layer_args(L), max_tokens=256, topk=K)
    x, ids, wts = make_inputs(T, H, E, K, "cuda", seed=10)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        moe(x, ids, wts)  # warm up on the side stream
        fp4moe.fused_moe(x, ids, wts, *layer_args(L))
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        y = moe(x, ids, wts)
        y2 = fp4moe.fused_moe(x, ids, wts, *layer_args(L))
    # new inputs into the captured buffers, replay
    x2, ids2, wts2 = make_inputs(T, H, E, K, "cuda", seed=11)
    x.copy_(x2), ids.copy_(ids2), wts.copy_(wts2)
    g.replay()
    torch.cuda.synchronize()
    ref = reference(x2, ids2, wts2, L, "silu", "none")
    assert rel_l2(y, ref) < 1e-2
    assert rel_l2(y2, ref) < 1e-2


@needs_cuda
def test_torch_compile_fullgraph():
    torch._dynamo.reset()
    L = make_layer(E, H, I, "silu", "nvfp4", "cuda", seed=12)
    moe = fp4moe.NvFp4MoE(*layer_args(L), topk=K, **layer_kwargs(L, "silu", "nvfp4"))

    def f(x, ids, wts):
        a = moe(x, ids, wts)
        b = fp4moe.fused_moe(x, ids, wts, *layer_args(L), **layer_kwargs(L, "silu", "nvfp4"))
        return a.float() + b.float()

    cf = torch.compile(f, fullgraph=True)
    x, ids, wts = make_inputs(16, H, E, K, "cuda", seed=13)
    ref = reference(x, ids, wts, L, "silu", "nvfp4")
    assert rel_l2(cf(x, ids, wts) / 2, ref) < 3e-2


def test_fake_kernels_registered():
    x = torch.empty(3, H, dtype=torch.bfloat16, device="meta")
    out = torch.ops.fp4moe.moe_forward(1, x, torch.empty(3, K, dtype=torch.int32, device="meta"),
                                        torch.empty(3, K, device="meta"))
    assert out.shape == (3, H) and out.device.type == "meta"


# ---------------------------------------------------------------- errors name the argument

@needs_cuda
def test_errors_name_the_argument():
    L = make_layer(E, H, I, "silu", "none", "cuda", seed=14)
    x, ids, wts = make_inputs(4, H, E, K, "cuda", seed=15)
    args = layer_args(L)
    with pytest.raises(ValueError, match=r"x: expected dtype bfloat16"):
        fp4moe.fused_moe(x.float(), ids, wts, *args)
    with pytest.raises(ValueError, match=r"x: expected a tensor on cuda"):
        fp4moe.fused_moe(x.cpu(), ids, wts, *args)
    with pytest.raises(ValueError, match=r"topk_ids: expected shape \[4, 2\]"):
        fp4moe.NvFp4MoE(*args, topk=K)(x, ids[:3].contiguous(), wts)
    with pytest.raises(ValueError, match=r"topk_weights: expected dtype float32 or bfloat16"):
        fp4moe.fused_moe(x, ids, wts.half(), *args)
    with pytest.raises(ValueError, match=r"w13: expected a contiguous tensor"):
        w13 = L["w13"].transpose(1, 2).contiguous().transpose(1, 2)
        fp4moe.fused_moe(x, ids, wts, w13, *args[1:])
    with pytest.raises(ValueError, match=r"w13_scale: expected dtype float8_e4m3fn or uint8"):
        fp4moe.fused_moe(x, ids, wts, args[0], L["w13_scale"].float(), *args[2:])
    with pytest.raises(ValueError, match=r"w2_scale_2: expected shape \[8\]"):
        fp4moe.fused_moe(x, ids, wts, *args[:5], L["w2_scale_2"][:3].contiguous())
    with pytest.raises(ValueError, match=r"activation"):
        fp4moe.fused_moe(x, ids, wts, *args, activation="gelu")
    with pytest.raises(ValueError, match=r"backend: expected one of auto, cpu-reference, cuda-decode"):
        fp4moe.fused_moe(x, ids, wts, *args, backend="marlin")
    with pytest.raises(RuntimeError, match=r"cpu-reference\" was requested but cannot run"):
        fp4moe.fused_moe(x, ids, wts, *args, backend="cpu-reference")
    with pytest.raises(ValueError, match=r"max_tokens"):
        fp4moe.NvFp4MoE(*args, max_tokens=0)

