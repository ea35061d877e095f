"""fp4moe: NVFP4 Mixture-of-Experts layers for PyTorch.

Ops are registered under torch.ops.fp4moe (fused_moe, fused_moe_out, moe_forward,
moe_forward_out) with fake kernels, so torch.compile traces them; on CUDA they never
synchronize the host, so CUDA graphs capture them (prepare the weights before capture:
NvFp4MoE(..., topk=k) does it at construction, fused_moe on its first call).
Errors: ValueError for bad arguments (the message names the argument), RuntimeError when no
backend can run the layer (or the requested one cannot).
"""
from typing import Optional

import torch

from . import _C  # noqa: F401  (registers the ops)

__all__ = ["fused_moe", "NvFp4MoE", "set_log_level"]

_ops = torch.ops.fp4moe


@torch.library.register_fake("fp4moe::fused_moe")
def _fused_moe_fake(x, topk_ids, topk_weights, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13_scale,
                    a2_scale, activation, act_quant, gate_up_order, backend):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("fp4moe::fused_moe_out")
def _fused_moe_out_fake(x, topk_ids, topk_weights, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13_scale,
                        a2_scale, activation, act_quant, gate_up_order, backend, out):
    return None


@torch.library.register_fake("fp4moe::moe_forward")
def _moe_forward_fake(handle, x, topk_ids, topk_weights):
    return torch.empty_like(x, memory_format=torch.contiguous_format)


@torch.library.register_fake("fp4moe::moe_forward_out")
def _moe_forward_out_fake(handle, x, topk_ids, topk_weights, out):
    return None


def set_log_level(level: str) -> None:
    """trace, debug, info (default; FP4MOE_LOG_LEVEL), warn, error or off."""
    _C.set_log_level(level)


def _check_tensor(name, t, optional=False):
    if t is None and optional:
        return
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"fp4moe: {name}: expected a torch.Tensor, got {type(t).__name__}")


def fused_moe(x, topk_ids, topk_weights, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, *,
              activation: str = "silu", act_quant: str = "none", a13_scale: Optional[torch.Tensor] = None,
              a2_scale: Optional[torch.Tensor] = None, gate_up_order: str = "gate_up", backend: str = "auto",
              out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """out[t] = sum_j topk_weights[t, j] * expert_{topk_ids[t, j]}(x[t]) with NVFP4 experts.

    The prepared weights are cached, keyed on the weight tensors' identity and version."""
    for name, t in (("x", x), ("topk_ids", topk_ids), ("topk_weights", topk_weights), ("w13", w13),
                    ("w13_scale", w13_scale), ("w13_scale_2", w13_scale_2), ("w2", w2), ("w2_scale", w2_scale),
                    ("w2_scale_2", w2_scale_2)):
        _check_tensor(name, t)
    _check_tensor("a13_scale", a13_scale, True)
    _check_tensor("a2_scale", a2_scale, True)
    args = (x, topk_ids, topk_weights, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13_scale, a2_scale,
            activation, act_quant, gate_up_order, backend)
    if out is None:
        return _ops.fused_moe(*args)
    _check_tensor("out", out)
    _ops.fused_moe_out(*args, out)
    return out


class NvFp4MoE(torch.nn.Module):
    """One NVFP4 MoE layer, prepared once for the selected backend.

    topk (optional, an extension of the documented signature): when given, the weights are
    prepared here; otherwise on the first call (per top-k value seen). Prepare before CUDA-graph
    capture. One instance runs one call at a time (it owns one workspace)."""

    def __init__(self, w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, *, activation: str = "silu",
                 act_quant: str = "none", a13_scale: Optional[torch.Tensor] = None,
                 a2_scale: Optional[torch.Tensor] = None, gate_up_order: str = "gate_up", max_tokens: int = 8192,
                 backend: str = "auto", topk: Optional[int] = None):
        super().__init__()
        for name, t in (("w13", w13), ("w13_scale", w13_scale), ("w13_scale_2", w13_scale_2), ("w2", w2),
                        ("w2_scale", w2_scale), ("w2_scale_2", w2_scale_2)):
            _check_tensor(name, t)
        _check_tensor("a13_scale", a13_scale, True)
        _check_tensor("a2_scale", a2_scale, True)
        if not isinstance(max_tokens, int) or max_tokens < 1:
            raise ValueError(f"fp4moe: max_tokens: expected an int >= 1, got {max_tokens!r}")
        self._weights = (w13, w13_scale, w13_scale_2, w2, w2_scale, w2_scale_2, a13_scale, a2_scale)
        self._opts = (activation, act_quant, gate_up_order)
        self.max_tokens = max_tokens
        self.requested_backend = backend
        self._handles = {}
        if topk is not None:
            self._prepare(int(topk))

    def _prepare(self, topk: int) -> int:
        h = _C.create(*self._weights, *self._opts, topk, self.max_tokens, self.requested_backend)
        self._handles[topk] = h
        return h

    def _handle(self, topk: int) -> int:
        h = self._handles.get(topk)
        return h if h is not None else self._prepare(topk)

    def forward(self, x, topk_ids, topk_weights, out: Optional[torch.Tensor] = None) -> torch.Tensor:
        _check_tensor("topk_ids", topk_ids)
        if topk_ids.dim() != 2:
            raise ValueError(f"fp4moe: topk_ids: expected shape [T, k], got {list(topk_ids.shape)}")
        h = self._handle(topk_ids.shape[1])
        if out is None:
            return _ops.moe_forward(h, x, topk_ids, topk_weights)
        _ops.moe_forward_out(h, x, topk_ids, topk_weights, out)
        return out

    def backend(self, topk: Optional[int] = None) -> str:
        """The chosen backend (for top-k `topk`, default: the first prepared)."""
        k = topk if topk is not None else next(iter(self._handles), None)
        if k is None:
            raise RuntimeError("fp4moe: NvFp4MoE: not prepared yet (pass topk= or call it once)")
        return _C.backend(self._handle(k))

    def selection_report(self, topk: Optional[int] = None) -> str:
        k = topk if topk is not None else next(iter(self._handles), None)
        if k is None:
            raise RuntimeError("fp4moe: NvFp4MoE: not prepared yet (pass topk= or call it once)")
        return _C.report(self._handle(k))

    def __del__(self):
        for h in getattr(self, "_handles", {}).values():
            try:
                _C.destroy(h)
            except Exception:
                pass
