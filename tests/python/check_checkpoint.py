#!/usr/bin/env python3
"""Cross-check of fp4moe's checkpoint code against an independent implementation.

Writes a small Qwen3-MoE layer with the `safetensors` package, quantizes it to NVFP4 with
this file's own numpy code (ModelOpt's algorithm, written from the format description),
runs `fp4moe quantize` on the same input, and requires the two NVFP4 checkpoints to agree
byte for byte on every weight, weight_scale and weight_scale_2. Then fp4moe must read
the Python-written NVFP4 checkpoint (inspect, run --checkpoint), and the reference
implementation must read fp4moe's output.

usage: check_checkpoint.py FP4MOE_BINARY WORKDIR
"""
import json
import os
import shutil
import struct
import subprocess
import sys

try:
    import numpy as np
    from safetensors import safe_open
    from safetensors.numpy import save_file
except ImportError as e:  # never a silent skip: setup.sh installs these
    print(f"FAILED: python packages missing ({e}); run scripts/setup.sh", file=sys.stderr)
    sys.exit(1)

H, I, E, K = 64, 32, 4, 2
E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6], dtype=np.float32)


def bf16_values(a):
    """Round float32 to the nearest bf16 (ties to even), returned as float32."""
    u = a.astype(np.float32).view(np.uint32).astype(np.uint64)
    u = (u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000
    return u.astype(np.uint32).view(np.float32)


def e4m3_encode(x):
    """float32 (>= 0) -> e4m3fn byte, round to nearest even, saturating at 448."""
    x = np.asarray(x, dtype=np.float64)
    out = np.zeros(x.shape, dtype=np.uint8)
    for idx, v in np.ndenumerate(x):
        if v >= 448.0:
            out[idx] = 0x7E
            continue
        if v == 0.0:
            continue
        e = max(int(np.floor(np.log2(v))), -6)
        if 2.0 ** e > v:  # guard log2 rounding
            e -= 1
        e = max(e, -6)
        q = 2.0 ** (e - 3)
        m = np.round(v / q)  # numpy rounds half to even
        val = m * q
        if val >= 2.0 ** (e + 1):
            e += 1
        if val == 0:
            continue
        if val < 2.0 ** -6:  # subnormal
            out[idx] = int(round(val / 2.0 ** -9))
        else:
            ee = int(np.floor(np.log2(val)))
            mant = int(round((val / 2.0 ** ee - 1.0) * 8))
            out[idx] = ((ee + 7) << 3) | mant
    return out


def e4m3_decode(b):
    b = np.asarray(b, dtype=np.int64)
    e = (b >> 3) & 0xF
    m = b & 7
    v = np.where(e == 0, m * 2.0 ** -9, (1 + m / 8.0) * 2.0 ** (e - 7))
    return np.where(b & 0x80, -v, v).astype(np.float32)


def e2m1_encode(x):
    """Round to nearest, ties to the even code, saturate at 6; sign bit set when x < 0."""
    a = np.abs(x)
    mids = (E2M1[:-1] + E2M1[1:]) / 2
    code = np.searchsorted(mids, a, side="left")  # a < mid -> lower; a == mid -> lower for now
    tie = np.isin(a, mids)
    # at a tie between codes c-1 and c (a == mids[c-1] ... ) pick the even code
    lower = np.searchsorted(mids, a, side="left")
    code = np.where(tie, np.where(lower % 2 == 0, lower, lower + 1), np.searchsorted(mids, a, side="right"))
    code = np.minimum(code, 7).astype(np.uint8)
    return np.where(x < 0, code | 8, code).astype(np.uint8)


def quantize(w, gs):
    """ModelOpt NVFP4: w [N, K] float32, gs = weight_scale_2 (float32)."""
    n, k = w.shape
    blocks = w.reshape(n, k // 16, 16)
    amax = np.abs(blocks).max(axis=2).astype(np.float32)
    s = (amax / (np.float32(6.0) * gs)).astype(np.float32)
    s = np.where((s == 0) | np.isnan(s), np.float32(1.0), s)
    sb = e4m3_encode(s)
    denom = (e4m3_decode(sb) * gs).astype(np.float32)
    q = e2m1_encode((blocks / denom[:, :, None]).astype(np.float32)).reshape(n, k)
    packed = (q[:, 0::2] | (q[:, 1::2] << 4)).astype(np.uint8)
    return packed, sb


def set_dtype(path, names, dtype):
    """numpy has no float8: rewrite the header so that U8 tensors become F8_E4M3."""
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    for k in names:
        hdr[k]["dtype"] = dtype
    text = json.dumps(hdr, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def raw_tensors(path):
    raw = open(path, "rb").read()
    n = struct.unpack("<Q", raw[:8])[0]
    hdr = json.loads(raw[8:8 + n])
    hdr.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], raw[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in hdr.items()}


def main():
    exe, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    bf, pyq, cq = (os.path.join(work, d) for d in ("bf16", "py_nvfp4", "cpp_nvfp4"))
    for d in (bf, pyq):
        os.makedirs(d)
    rng = np.random.default_rng(1234)
    cfg = {"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "hidden_size": H,
           "num_experts": E, "num_experts_per_tok": K, "norm_topk_prob": True}
    dense, quant = {}, {}
    dense["model.layers.0.mlp.gate.weight"] = bf16_values(rng.normal(0, 0.1, (E, H)).astype(np.float32))
    for e in range(E):
        p = f"model.layers.0.mlp.experts.{e}."
        w = {n: bf16_values(rng.normal(0, 1 / np.sqrt(c), (r, c)).astype(np.float32))
             for n, (r, c) in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I)))}
        w["up_proj"][3, 5] = 0.75  # an exact e2m1 tie somewhere is likely; an outlier for sure
        w["gate_proj"][0, :16] = 0  # a zero block (scale 1.0)
        for n, a in w.items():
            dense[p + n + ".weight"] = a
        g13 = np.float32(max(np.abs(w["gate_proj"]).max(), np.abs(w["up_proj"]).max()) / np.float32(2688.0))
        g2 = np.float32(np.abs(w["down_proj"]).max() / np.float32(2688.0))
        for n, gs in (("gate_proj", g13), ("up_proj", g13), ("down_proj", g2)):
            packed, sb = quantize(w[n], gs)
            quant[p + n + ".weight"] = packed
            quant[p + n + ".weight_scale"] = sb
            quant[p + n + ".weight_scale_2"] = np.array(gs, dtype=np.float32)
    # bf16 values stored as F32 (numpy has no bfloat16); fp4moe quantizes the same values.
    save_file(dense, os.path.join(bf, "model.safetensors"), metadata={"format": "pt"})
    json.dump(cfg, open(os.path.join(bf, "config.json"), "w"))
    quant["model.layers.0.mlp.gate.weight"] = dense["model.layers.0.mlp.gate.weight"]
    save_file(quant, os.path.join(pyq, "model.safetensors"), metadata={"format": "pt"})
    set_dtype(os.path.join(pyq, "model.safetensors"), [k for k in quant if k.endswith(".weight_scale")], "F8_E4M3")
    qc = {"quant_algo": "NVFP4", "group_size": 16, "exclude_modules": ["*.gate"]}
    json.dump({"producer": {"name": "modelopt", "version": "test"}, "quantization": qc},
              open(os.path.join(pyq, "hf_quant_config.json"), "w"))
    json.dump(dict(cfg, quantization_config=dict(qc, quant_method="modelopt")), open(os.path.join(pyq, "config.json"), "w"))

    subprocess.run([exe, "quantize", "--input", bf, "--output", cq, "--no-input-scale"], check=True)
    a = raw_tensors(os.path.join(pyq, "model.safetensors"))
    b = raw_tensors(os.path.join(cq, "model.safetensors"))
    fails = 0
    if set(a) != set(b):
        print("FAILED: tensor names differ:", sorted(set(a) ^ set(b)))
        fails += 1
    compared = 0
    for k in sorted(set(a) & set(b)):
        da, sa, ba = a[k]
        db, sb_, bb = b[k]
        if (da, sa, ba) != (db, sb_, bb):
            diff = sum(x != y for x, y in zip(ba, bb))
            print(f"FAILED: {k}: python {da} {sa} vs fp4moe {db} {sb_}, {diff} byte(s) differ")
            fails += 1
        compared += 1
    # The reference implementation reads fp4moe's output (all but the float8 tensors, which
    # numpy cannot hold; their bytes were compared above).
    with safe_open(os.path.join(cq, "model.safetensors"), framework="numpy") as f:
        for k in f.keys():
            if not k.endswith(".weight_scale"):
                f.get_tensor(k)
    # fp4moe reads the Python-written NVFP4 checkpoint.
    out = subprocess.run([exe, "inspect", pyq], check=True, capture_output=True, text=True).stdout
    if "qwen3-moe" not in out or "NVFP4" not in out:
        print("FAILED: fp4moe inspect of the python checkpoint:\n" + out)
        fails += 1
    out = subprocess.run([exe, "run", "--checkpoint", pyq, "--layer", "0", "--tokens", "4"], check=True,
                         capture_output=True, text=True).stdout
    if "w4a16" not in out:
        print("FAILED: fp4moe run --checkpoint of the python checkpoint:\n" + out)
        fails += 1
    print(f"{compared} tensors compared byte for byte; {compared - fails if fails <= compared else 0} identical")
    print(f"{1 if fails == 0 else 0} passed, {1 if fails else 0} failed")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
