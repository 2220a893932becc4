"""``ATEN_TO_MLC``: one row per ATen overload, saying which mlc ops it becomes.

A lowering is called as ``lowering(L, fx_node, *args, **kwargs)`` where tensor arguments
are already IR ``Value``s and sizes are ints or sympy expressions. It returns a Value (or
a tuple for multi-result ops), or raises ``LoweringError`` to make the op a fallback.
Result shapes of view-like ops are read from ATen's metadata (``fx_node.meta["val"]``),
so ``-1`` sizes, squeezes and the like need no arithmetic here.
"""

from __future__ import annotations

from typing import Any, Callable

import sympy
import torch

from ..ir.graph import GraphBuilder, Value
from ..ir.types import TensorType, make_dim, normalize_dim
from . import hand_attention  # noqa: F401 - registers the torch.ops.mlc ops lowered below

aten = torch.ops.aten
prims = torch.ops.prims


class LoweringError(Exception):
    """This call cannot be lowered to mlc ops; it will run as an ATen fallback."""


class Lowerer:
    def __init__(self, b: GraphBuilder):
        self.b = b
        self.notes: list[str] = []  # decisions for explain's notes (the graph's ``notes``)

    def op(self, name: str, *inputs: Value, **attrs) -> Value:
        try:
            return self.b.op(name, *inputs, **attrs)
        except ValueError as e:  # InferError: the arguments do not fit the op
            raise LoweringError(str(e)) from e

    def scalar(self, value, like: TensorType) -> Value:
        """A python number as a 0-d tensor whose dtype does not change ``like``'s promotion."""
        if isinstance(value, Value):
            return value
        probe = torch.empty((1,), dtype=like.dtype, device="meta")
        # A symbolic size (mean's backward divides by one under dynamic shapes) promotes like
        # the int it is; the full's value is bound when the graph runs.
        dtype = torch.result_type(probe, 1 if isinstance(value, sympy.Expr) else value)
        return self.op("full", shape=(), value=value, dtype=dtype, device=like.device)

    def operands(self, *args) -> list[Value]:
        """Tensor operands with python numbers turned into 0-d tensors."""
        like = next((a.type for a in args if isinstance(a, Value)), None)
        if like is None:
            raise LoweringError("no tensor operand")
        return [self.scalar(a, like) for a in args]


def _shape(fx_node) -> tuple:
    from .fx import sym_to_expr

    return tuple(sym_to_expr(d) for d in fx_node.meta["val"].shape)


def _dtype(fx_node) -> torch.dtype:
    return fx_node.meta["val"].dtype


def _device(fx_node) -> str:
    return str(fx_node.meta["val"].device)


def _dims(dims) -> tuple | None:
    if dims is None:
        return None
    return (dims,) if isinstance(dims, int) else tuple(dims)


# --- rule makers --------------------------------------------------------------------------

def unary(name: str) -> Callable:
    return lambda L, n, x: L.op(name, x)


def binary(name: str) -> Callable:
    return lambda L, n, a, b: L.op(name, *L.operands(a, b))


def _add_sub(name: str) -> Callable:
    def rule(L, n, a, b, alpha=1):
        a, b = L.operands(a, b)
        if alpha != 1:
            b = L.op("mul", b, L.scalar(alpha, b.type))
        return L.op(name, a, b)

    return rule


def _rsub(L, n, a, b, alpha=1):
    a, b = L.operands(a, b)
    if alpha != 1:
        a = L.op("mul", a, L.scalar(alpha, a.type))
    return L.op("sub", b, a)


def _reduce(name: str) -> Callable:
    def rule(L, n, x, dims=None, keepdim=False, dtype=None):
        if dtype is not None and dtype != x.type.dtype:
            x = L.op("convert", x, dtype=dtype)
        return L.op(name, x, dims=_dims(dims), keepdim=keepdim)

    return rule


def _reduce_all(name: str) -> Callable:
    def rule(L, n, x, dtype=None):
        if dtype is not None and dtype != x.type.dtype:
            x = L.op("convert", x, dtype=dtype)
        return L.op(name, x, dims=None, keepdim=False)

    return rule


def _var(L, n, x, dims=None, correction=None, keepdim=False):
    return L.op("var", x, dims=_dims(dims), correction=1 if correction is None else correction, keepdim=keepdim)


def _arg(name: str) -> Callable:
    return lambda L, n, x, dim=None, keepdim=False: L.op(name, x, dim=dim, keepdim=keepdim)


def _max_min_dim(red: str, arg: str) -> Callable:
    def rule(L, n, x, dim, keepdim=False):
        return L.op(red, x, dims=(dim,), keepdim=keepdim), L.op(arg, x, dim=dim, keepdim=keepdim)

    return rule


def _view(L, n, x, *args, **kwargs):
    return L.op("view", x, shape=_shape(n))


def _expand(L, n, x, *args, **kwargs):
    return L.op("expand", x, shape=_shape(n))


def _permute(L, n, x, dims):
    return L.op("permute", x, dims=tuple(dims))


def _transpose(L, n, x, d0, d1):
    dims = list(range(x.type.rank))
    d0, d1 = normalize_dim(d0, x.type.rank), normalize_dim(d1, x.type.rank)
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return L.op("permute", x, dims=tuple(dims))


def _t(L, n, x):
    return x if x.type.rank < 2 else L.op("permute", x, dims=(1, 0))


def _slice(L, n, x, dim=0, start=None, end=None, step=1):
    dim = normalize_dim(dim, x.type.rank)
    size = x.type.shape[dim]
    start = None if start in (None, 0) else start
    if isinstance(end, int) and (end >= 2**62 or (isinstance(size, int) and end >= size)):
        end = None
    if isinstance(start, int) and start < 0 and isinstance(size, int):
        start = max(start + size, 0)
    if isinstance(end, int) and end < 0 and isinstance(size, int):
        end = max(end + size, 0)
    return L.op("slice", x, dim=dim, start=start, end=end, step=step)


def _slice_scatter(L, n, x, src, dim=0, start=None, end=None, step=1):
    # The gradient of a slice (rotate-half in RoPE, split heads). Written as a cat of src and
    # the parts of x around it, it stays in ops that later passes understand. A strided
    # scatter has no such form.
    if step != 1:
        raise LoweringError("slice_scatter with a step")
    dim = normalize_dim(dim, x.type.rank)
    parts = [_slice(L, n, x, dim, 0, start) if start not in (None, 0) else None, src,
             _slice(L, n, x, dim, end, None) if end is not None else None]
    parts = [p for p in parts if p is src or (p is not None and p.type.shape[dim] != 0)]
    return parts[0] if len(parts) == 1 else L.op("cat", *parts, dim=dim)


def _select(L, n, x, dim, index):
    dim = normalize_dim(dim, x.type.rank)
    size = x.type.shape[dim]
    if isinstance(index, int) and index < 0 and isinstance(size, int):
        index += size
    return L.op("select", x, dim=dim, index=index)


def _split(L, n, x, sizes, dim=0):
    dim = normalize_dim(dim, x.type.rank)
    if isinstance(sizes, (int, sympy.Expr)):  # split.Tensor: chunks of one size
        total = x.type.shape[dim]
        if not isinstance(total, int) or not isinstance(sizes, int):
            raise LoweringError("split of a symbolic dim into fixed chunks")
        sizes = [min(sizes, total - s) for s in range(0, total, sizes)] or [0]
    out, start = [], 0
    for size in sizes:
        end = make_dim(start + size)
        out.append(L.op("slice", x, dim=dim, start=start if start != 0 else None,
                        end=None if end == x.type.shape[dim] else end, step=1))
        start = end
    return tuple(out)


def _unbind(L, n, x, dim=0):
    size = x.type.shape[normalize_dim(dim, x.type.rank)]
    if not isinstance(size, int):
        raise LoweringError("unbind of a symbolic dim")
    return tuple(_select(L, n, x, dim, i) for i in range(size))


def _cat(L, n, tensors, dim=0):
    tensors = [t for t in tensors if not (t.type.rank == 1 and t.type.shape[0] == 0)] or list(tensors)
    return L.op("cat", *tensors, dim=normalize_dim(dim, tensors[0].type.rank))


def _to_copy(L, n, x, dtype=None, layout=None, device=None, pin_memory=None, non_blocking=False, memory_format=None):
    if device is not None and str(device) != x.type.device:
        raise LoweringError("a copy to another device")
    if dtype is not None and dtype != x.type.dtype:
        return L.op("convert", x, dtype=dtype)
    return L.op("copy", x)


def _clone(L, n, x, memory_format=None):
    return L.op("copy", x)


def _identity(L, n, x, *args, **kwargs):
    return x


def _convert(L, n, x, dtype):
    return L.op("convert", x, dtype=dtype) if dtype != x.type.dtype else x


def _clamp(L, n, x, min=None, max=None):
    if isinstance(min, Value) or isinstance(max, Value):
        out = x
        if min is not None:
            out = L.op("maximum", *L.operands(out, min))
        if max is not None:
            out = L.op("minimum", *L.operands(out, max))
        return out
    if isinstance(min, sympy.Expr) or isinstance(max, sympy.Expr):
        raise LoweringError("symbolic clamp bounds")
    return L.op("clamp", x, min=min, max=max)


def _where(L, n, cond, a, b):
    like = next((v.type for v in (a, b) if isinstance(v, Value)), None)
    if like is None:
        like = TensorType((), _dtype(n), _device(n))
    return L.op("where", cond, L.scalar(a, like), L.scalar(b, like))


def _masked_fill(L, n, x, mask, value):
    return L.op("where", mask, L.scalar(value, x.type), x)


def _div_mode(L, n, a, b, rounding_mode=None):
    return L.op("div", *L.operands(a, b), rounding_mode=rounding_mode)


def _pow_scalar_base(L, n, base, exp):
    return L.op("pow", L.scalar(base, exp.type), exp)


def _full_from_meta(value_arg: int | None = None, value: Any = None) -> Callable:
    def rule(L, n, *args, **kwargs):
        v = args[value_arg] if value_arg is not None else value
        if isinstance(v, (Value, sympy.Expr)):
            raise LoweringError("a fill value that is not a constant")
        return L.op("full", shape=_shape(n), value=v, dtype=_dtype(n), device=_device(n))

    return rule


def _arange(L, n, *args, **kwargs):
    nums = [a for a in args if not isinstance(a, Value)]
    start, end, step = (0, nums[0], 1) if len(nums) == 1 else (nums[0], nums[1], nums[2] if len(nums) > 2 else 1)
    return L.op("arange", start=start, end=end, step=step, dtype=_dtype(n), device=_device(n))


def _mm(L, n, a, b):
    return L.op("mm", a, b)


def _addmm(L, n, bias, a, b, beta=1, alpha=1):
    out = L.op("mm", a, b)
    if alpha != 1:
        out = L.op("mul", out, L.scalar(alpha, out.type))
    if beta == 0:
        return out
    if beta != 1:
        bias = L.op("mul", bias, L.scalar(beta, bias.type))
    return L.op("add", out, bias)


def _scatter_value(L, n, x, dim, index, value):
    # One value at one index per row is a one-hot (cross-entropy's backward builds one):
    # where(arange == index, value, x), pointwise. Several indices per row have no such form.
    rank = x.type.rank
    dim = normalize_dim(dim, max(rank, 1))
    if rank == 0 or index.type.shape != x.type.shape[:dim] + (1,) + x.type.shape[dim + 1:]:
        raise LoweringError("scatter of other than one index per row")
    if isinstance(value, sympy.Expr):
        raise LoweringError("a scatter value that is not a constant")
    size = x.type.shape[dim]
    positions = L.op("arange", start=0, end=size, step=1, dtype=index.type.dtype, device=x.type.device)
    positions = L.op("view", positions, shape=tuple(size if i == dim else 1 for i in range(rank)))
    return L.op("where", L.op("eq", positions, index), L.scalar(value, x.type), x)


def _gather(L, n, x, dim, index, sparse_grad=False):
    return L.op("gather", x, index, dim=normalize_dim(dim, x.type.rank))


def _index_select(L, n, x, dim, index):
    return L.op("index_select", x, index, dim=normalize_dim(dim, x.type.rank))


def _embedding(L, n, weight, indices, padding_idx=-1, scale_grad_by_freq=False, sparse=False):
    return L.op("embedding", weight, indices)


def _index(L, n, x, indices):
    dims = [i for i, t in enumerate(indices) if t is not None]
    if not dims or dims != list(range(dims[0], dims[0] + len(dims))):
        raise LoweringError("indices on dims that are not consecutive")
    idx = [indices[d] for d in dims]
    if any(t.type.dtype not in (torch.int64, torch.int32) for t in idx):
        raise LoweringError("boolean mask indexing")
    return L.op("index", x, *idx, dims=tuple(dims))


def _index_put(L, n, x, indices, values, accumulate=False):
    # One index tensor on one dim (a KV cache written at the position): index_copy, whose
    # kernel writes only the indexed slices. Other forms (several index tensors, boolean
    # masks, accumulation) stay ATen calls.
    dims = [d for d, t in enumerate(indices) if t is not None]
    if accumulate or len(dims) != 1 or x.type.rank == 0:
        raise LoweringError("index_put other than by one index tensor, without accumulation")
    dim, idx = dims[0], indices[dims[0]]
    if idx.type.dtype not in (torch.int64, torch.int32) or idx.type.rank > 1:
        raise LoweringError("index_put by a boolean mask or a multi-dim index")
    if idx.type.rank == 0:  # x[..., i] = v: v has no dim there
        idx = L.op("view", idx, shape=(1,))
        if values.type.rank >= x.type.rank - dim - 1:
            values = L.op("view", values, shape=values.type.shape[:values.type.rank - (x.type.rank - dim - 1)]
                          + (1,) + values.type.shape[values.type.rank - (x.type.rank - dim - 1):])
    shape = x.type.shape[:dim] + (idx.type.shape[0],) + x.type.shape[dim + 1:]
    if values.type.dtype != x.type.dtype:
        values = L.op("convert", values, dtype=x.type.dtype)
    if tuple(values.type.shape) != tuple(shape):
        values = L.op("expand", values, shape=shape)
    return L.op("index_copy", x, idx, values, dim=dim)


def _copy(L, n, x, src, non_blocking=False):
    # Functional copy: src's values in x's shape and dtype (a new tensor; nothing is written).
    if src.type.dtype != x.type.dtype:
        src = L.op("convert", src, dtype=x.type.dtype)
    if tuple(src.type.shape) != tuple(x.type.shape):
        src = L.op("expand", src, shape=x.type.shape)
    return L.op("copy", src)


def _fma(L, n, a, b, c):
    # a * b + c, rounded twice (prims.fma rounds once: a difference of an ulp); lerp decomposes to it
    a, b, c = L.operands(a, b, c)
    return L.op("add", L.op("mul", a, b), c)


def _gelu(L, n, x, approximate="none"):
    return L.op("gelu", x, approximate=approximate)


def _var_mean(L, n, x, dims=None, correction=None, keepdim=False):
    return _var(L, n, x, dims, correction, keepdim), L.op("mean", x, dims=_dims(dims), keepdim=keepdim)


# --- attention ---------------------------------------------------------------------------
# SDPA reaches a backend as one ATen op forward and one backward (torch picks the CPU flash
# kernel for every mask and dtype, with dropout_p=0). Both become mlc's attention ops, whose
# log-sum-exp passes from one to the other; the backward's delta = rowsum(out * d_out) is
# ordinary IR (a reduction kernel).

def _attention_attrs(L, q: Value, dropout_p, is_causal, scale) -> dict:
    if dropout_p:
        reason = f"attention with dropout_p={dropout_p} is not fused (mlc's attention kernels draw no random numbers)"
        L.notes.append(f"not fused: {reason}; it runs through ATen")
        raise LoweringError(reason)
    head_dim = q.type.shape[-1]
    if scale is None and not isinstance(head_dim, int):
        raise LoweringError("attention with a symbolic head dim")
    return {"scale": float(1 / head_dim ** 0.5 if scale is None else scale), "is_causal": bool(is_causal)}


def _results(L, op: str, inputs, attrs) -> tuple[Value, ...]:
    try:
        return L.b.add(op, inputs, attrs).results
    except ValueError as e:  # InferError
        raise LoweringError(str(e)) from e


def _sdpa(L, n, q, k, v, dropout_p=0.0, is_causal=False, attn_mask=None, scale=None):
    attrs = _attention_attrs(L, q, dropout_p, is_causal, scale)
    return _results(L, "attention", (q, k, v) + ((attn_mask,) if attn_mask is not None else ()), attrs)


def _sdpa_backward(L, n, grad_out, q, k, v, out, lse, dropout_p=0.0, is_causal=False, attn_mask=None, scale=None):
    attrs = _attention_attrs(L, q, dropout_p, is_causal, scale)
    f32 = [x if x.type.dtype == torch.float32 else L.op("convert", x, dtype=torch.float32) for x in (out, grad_out)]
    delta = L.op("sum", L.op("mul", *f32), dims=(3,), keepdim=False)
    inputs = (grad_out, q, k, v, lse, delta) + ((attn_mask,) if attn_mask is not None else ())
    (dq,) = _results(L, "attention_grad_q", inputs, attrs)
    dk, dv = _results(L, "attention_grad_kv", inputs, attrs)
    return dq, dk, dv


# Attention written by hand, in training: the ops frontend/hand_attention.py puts in the joint
# graph, one to one with mlc's IR (the gradient of the scores, ds, feeds both gradient kernels).
_SCORE_MOD = {"scale": 1.0, "is_causal": False, "score_mod": True}


def _hand_backward(L, n, *inputs):
    (dq,) = _results(L, "attention_grad_q", inputs, _SCORE_MOD)
    dk, dv = _results(L, "attention_grad_kv", inputs, _SCORE_MOD)
    return dq, dk, dv


_HAND_ATTENTION = {
    torch.ops.mlc.attention_scores.default: lambda L, n, q, k: _results(L, "attention_scores", (q, k), {})[0],
    torch.ops.mlc.attention.default: lambda L, n, *inputs: _results(L, "attention", inputs, _SCORE_MOD),
    torch.ops.mlc.attention_probs_grad.default: lambda L, n, *inputs: _results(L, "attention_probs_grad", inputs, {})[0],
    torch.ops.mlc.attention_backward.default: _hand_backward,
}


# On a GPU torch picks one of three CUDA kernels instead (FlashAttention, memory-efficient,
# cuDNN), each with results of its own beside the output and the log-sum-exp: nested-tensor
# lengths, dropout's random state, a debug mask. mlc's attention ops compute the output and
# the log-sum-exp; the rest, which they have no use for (dropout_p=0), are zeros of ATen's
# shapes. The log-sum-exp takes ATen's shape too (the memory-efficient kernel pads the
# queries to a multiple of 32), since the forward hands it to the backward as ATen declared it.

def _like(L, vals) -> tuple:
    """Zeros of each of ATen's results in ``vals`` (an integer result as itself, None as None)."""
    from .fx import sym_to_expr

    out = []
    for v in vals:
        if isinstance(v, torch.Tensor):
            out.append(L.op("full", shape=tuple(sym_to_expr(d) for d in v.shape), value=0, dtype=v.dtype,
                            device=str(v.device)))
        else:
            out.append(sym_to_expr(v) if isinstance(v, torch.SymInt) else v)
    return tuple(out)


def _lse_as(L, lse: Value, val) -> Value:
    """The log-sum-exp [B, H, Sq] in the shape ATen gives it (padded along the queries with 0)."""
    from .fx import sym_to_expr

    shape = tuple(sym_to_expr(d) for d in val.shape)
    if shape == tuple(lse.type.shape):
        return lse
    b, h, sq = lse.type.shape
    if shape == (b, h, sq, 1):  # cuDNN's
        return L.op("view", lse, shape=shape)
    if len(shape) != 3 or tuple(shape[:2]) != (b, h) or not isinstance(shape[2], int) or not isinstance(sq, int) \
            or shape[2] < sq:
        raise LoweringError(f"attention's log-sum-exp is {list(shape)} in ATen, [{b}, {h}, {sq}] in mlc")
    if shape[2] == sq:
        return lse
    pad = L.op("full", shape=(b, h, shape[2] - sq), value=0, dtype=torch.float32, device=str(val.device))
    return L.op("cat", lse, pad, dim=2)


def _lse_from(L, lse: Value, q: Value) -> Value:
    """ATen's log-sum-exp (padded, or [B, H, Sq, 1]) back as mlc's [B, H, Sq]."""
    b, h, sq = q.type.shape[:3]
    if lse.type.rank == 4:
        return L.op("view", lse, shape=(b, h, sq))
    if lse.type.shape[2] != sq:
        return L.op("slice", lse, dim=2, start=0, end=sq, step=1)
    return lse


def _no_debug_mask(return_debug_mask):
    if return_debug_mask:
        raise LoweringError("attention asked for its debug mask (the probabilities), which mlc never materializes")


def _cuda_results(L, n, out: Value, lse: Value, with_lse: bool = True) -> tuple:
    """A CUDA attention's results as ATen gives them: the output, the log-sum-exp in ATen's
    shape (zeros of it when not asked for), then zeros for the rest."""
    vals = n.meta["val"]
    return (out, _lse_as(L, lse, vals[1]) if with_lse else _like(L, vals[1:2])[0]) + _like(L, vals[2:])


def _sdpa_flash_cuda(L, n, q, k, v, dropout_p=0.0, is_causal=False, return_debug_mask=False, scale=None):
    _no_debug_mask(return_debug_mask)
    return _cuda_results(L, n, *_sdpa(L, n, q, k, v, dropout_p, is_causal, None, scale))


def _sdpa_flash_cuda_backward(L, n, grad_out, q, k, v, out, lse, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p,
                              is_causal, philox_seed, philox_offset, scale=None):
    return _sdpa_backward(L, n, grad_out, q, k, v, out, _lse_from(L, lse, q), dropout_p, is_causal, None, scale)


def _sdpa_biased_cuda(L, n, q, k, v, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False,
                      return_debug_mask=False, scale=None):
    """The memory-efficient and the cuDNN forward (the same arguments; only cuDNN has a debug mask)."""
    _no_debug_mask(return_debug_mask)
    return _cuda_results(L, n, *_sdpa(L, n, q, k, v, dropout_p, is_causal, attn_bias, scale), compute_log_sumexp)


def _sdpa_efficient_backward(L, n, grad_out, q, k, v, attn_bias, out, lse, philox_seed, philox_offset, dropout_p,
                             grad_input_mask, is_causal=False, scale=None):
    if len(grad_input_mask) > 3 and grad_input_mask[3]:
        raise LoweringError("attention's gradient with respect to its additive mask is not computed by mlc's kernels")
    dq, dk, dv = _sdpa_backward(L, n, grad_out, q, k, v, out, _lse_from(L, lse, q), dropout_p, is_causal, attn_bias,
                                scale)
    return dq, dk, dv, None


def _sdpa_cudnn_backward(L, n, grad_out, q, k, v, out, lse, philox_seed, philox_offset, attn_bias, cum_seq_q,
                         cum_seq_k, max_q, max_k, dropout_p, is_causal, scale=None):
    return _sdpa_backward(L, n, grad_out, q, k, v, out, _lse_from(L, lse, q), dropout_p, is_causal, attn_bias, scale)


ATEN_TO_MLC: dict[Any, Callable] = {}

for _name in ["exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin", "cos", "tan", "asin",
              "acos", "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "sigmoid", "erf", "erfc", "erfinv",
              "reciprocal", "neg", "abs", "relu", "floor", "ceil", "round", "trunc", "sign", "bitwise_not", "isnan",
              "isinf", "logical_not", "silu"]:
    ATEN_TO_MLC[getattr(aten, _name).default] = unary(_name)

for _name in ["mul", "maximum", "minimum", "fmod", "remainder", "bitwise_and", "bitwise_or", "bitwise_xor", "atan2",
              "eq", "ne", "lt", "le", "gt", "ge", "logical_and", "logical_or", "logical_xor", "div", "pow"]:
    packet = getattr(aten, _name)
    for _overload in ["Tensor", "Scalar", "default", "Tensor_Tensor", "Tensor_Scalar"]:
        if _overload in packet.overloads():
            ATEN_TO_MLC[getattr(packet, _overload)] = binary(_name)

ATEN_TO_MLC.update({
    aten.add.Tensor: _add_sub("add"), aten.add.Scalar: _add_sub("add"),
    aten.sub.Tensor: _add_sub("sub"), aten.sub.Scalar: _add_sub("sub"),
    aten.rsub.Scalar: _rsub, aten.rsub.Tensor: _rsub,
    aten.div.Tensor_mode: _div_mode, aten.div.Scalar_mode: _div_mode,
    aten.pow.Scalar: _pow_scalar_base,
    aten.gelu.default: _gelu,
    aten.clamp.default: _clamp, aten.clamp.Tensor: _clamp,
    aten.clamp_min.default: lambda L, n, x, m: _clamp(L, n, x, min=m),
    aten.clamp_max.default: lambda L, n, x, m: _clamp(L, n, x, max=m),
    # A core ATen op (not decomposed), and ATen's own hardtanh is clamp; relu6 is hardtanh(0, 6).
    aten.hardtanh.default: lambda L, n, x, min_val=-1, max_val=1: _clamp(L, n, x, min=min_val, max=max_val),
    aten.where.self: _where, aten.where.ScalarSelf: _where, aten.where.ScalarOther: _where, aten.where.Scalar: _where,
    aten.masked_fill.Scalar: _masked_fill, aten.masked_fill.Tensor: _masked_fill,
    aten._to_copy.default: _to_copy, prims.convert_element_type.default: _convert,
    aten.clone.default: _clone, aten.lift_fresh_copy.default: _clone,
    aten.alias.default: _identity, aten.detach.default: _identity,
    aten.sum.dim_IntList: _reduce("sum"), aten.sum.default: _reduce_all("sum"),
    aten.mean.dim: _reduce("mean"), aten.mean.default: _reduce_all("mean"),
    aten.prod.dim_int: _reduce("prod"), aten.prod.default: _reduce_all("prod"),
    aten.amax.default: _reduce("amax"), aten.amin.default: _reduce("amin"),
    aten.max.default: _reduce_all("amax"), aten.min.default: _reduce_all("amin"),
    aten.any.dim: _reduce("any"), aten.any.dims: _reduce("any"), aten.any.default: _reduce_all("any"),
    aten.all.dim: _reduce("all"), aten.all.dims: _reduce("all"), aten.all.default: _reduce_all("all"),
    aten.var.correction: _var, aten.var_mean.correction: _var_mean,
    aten.argmax.default: _arg("argmax"), aten.argmin.default: _arg("argmin"),
    aten.max.dim: _max_min_dim("amax", "argmax"), aten.min.dim: _max_min_dim("amin", "argmin"),
    aten.mm.default: _mm, aten.bmm.default: lambda L, n, a, b: L.op("bmm", a, b), aten.addmm.default: _addmm,
    aten.view.default: _view, aten._unsafe_view.default: _view, aten.reshape.default: _view,
    aten.unsqueeze.default: _view, aten.squeeze.dim: _view, aten.squeeze.dims: _view, aten.squeeze.default: _view,
    aten.flatten.using_ints: _view,
    aten.expand.default: _expand,
    aten.permute.default: _permute, aten.transpose.int: _transpose, aten.t.default: _t,
    aten.slice.Tensor: _slice, aten.slice_scatter.default: _slice_scatter, aten.select.int: _select,
    aten.split_with_sizes.default: _split, aten.split.Tensor: _split, aten.unbind.int: _unbind,
    aten.cat.default: _cat,
    aten.gather.default: _gather, aten.index_select.default: _index_select, aten.embedding.default: _embedding,
    aten.scatter.value: _scatter_value,
    aten.index.Tensor: _index, aten.index_put.default: _index_put,
    aten.copy.default: _copy, prims.fma.default: _fma,
    aten.full.default: _full_from_meta(1), aten.full_like.default: _full_from_meta(1),
    aten.scalar_tensor.default: _full_from_meta(0),
    aten.zeros.default: _full_from_meta(value=0), aten.zeros_like.default: _full_from_meta(value=0),
    aten.ones.default: _full_from_meta(value=1), aten.ones_like.default: _full_from_meta(value=1),
    aten.new_zeros.default: _full_from_meta(value=0), aten.new_ones.default: _full_from_meta(value=1),
    aten.new_full.default: _full_from_meta(2),
    # An uninitialized tensor may hold anything, so zeros are a correct value for it.
    aten.empty.memory_format: _full_from_meta(value=0), aten.empty_like.default: _full_from_meta(value=0),
    aten.new_empty.default: _full_from_meta(value=0),
    aten.arange.default: _arange, aten.arange.start: _arange, aten.arange.start_step: _arange,
    aten._scaled_dot_product_flash_attention_for_cpu.default: _sdpa,
    aten._scaled_dot_product_flash_attention_for_cpu_backward.default: _sdpa_backward,
    aten._scaled_dot_product_flash_attention.default: _sdpa_flash_cuda,
    aten._scaled_dot_product_flash_attention_backward.default: _sdpa_flash_cuda_backward,
    aten._scaled_dot_product_efficient_attention.default: _sdpa_biased_cuda,
    aten._scaled_dot_product_efficient_attention_backward.default: _sdpa_efficient_backward,
    aten._scaled_dot_product_cudnn_attention.default: _sdpa_biased_cuda,
    aten._scaled_dot_product_cudnn_attention_backward.default: _sdpa_cudnn_backward,
    **_HAND_ATTENTION,
})

# Calls that only check or constrain and produce nothing mlc needs.
IGNORED = {aten._assert_async.msg, aten._assert_scalar.default, aten.sym_constrain_range_for_size.default,
           aten._assert_tensor_metadata.default}
