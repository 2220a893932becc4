"""The op table: every mlc op declared once.

Each entry gives the op's category, its attributes, how its result types follow from its
inputs (``infer``), and a reference implementation in torch (``ref``) that the reference
executor, constant folding and the tests use. Adding an op is adding one ``OpDef`` here
(and one row in the frontend's ``ATEN_TO_MLC`` if ATen graphs should produce it).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable

import torch
from torch._prims_common import ELEMENTWISE_TYPE_PROMOTION_KIND, elementwise_dtypes

from .types import (
    SymType,
    TensorType,
    Type,
    broadcast_shapes,
    make_dim,
    normalize_dim,
)


class Category(str, Enum):
    SOURCE = "source"  # graph inputs and constants
    POINTWISE = "pointwise"
    REDUCTION = "reduction"
    MATMUL = "matmul"
    ATTENTION = "attention"  # softmax(q @ k^T * scale + mask) @ v and its gradients, never the S x S scores
    VIEW = "view"  # a new view of the same elements; no arithmetic
    DATA = "data"  # moves or gathers elements (cat, gather, index, copy)
    CREATION = "creation"  # makes a tensor from attributes alone
    SYM = "sym"  # symbolic integers
    FALLBACK = "fallback"  # an ATen op mlc does not know, run by PyTorch
    KERNEL = "kernel"  # a fused region: its body graph becomes one generated kernel


REQUIRED = object()


@dataclass(frozen=True)
class OpDef:
    name: str
    category: Category
    infer: Callable[[list[Type], dict], Type | tuple[Type, ...]]
    ref: Callable[..., Any]
    arity: int | None = 1  # None: any number of inputs
    attrs: dict[str, Any] = field(default_factory=dict)  # name -> default (REQUIRED if none)
    doc: str = ""


class InferError(ValueError):
    """The inputs or attributes do not fit the op (raised by ``infer`` rules)."""


OPS: dict[str, OpDef] = {}


def register(name, category, infer, ref, arity=1, attrs=None, doc=""):
    OPS[name] = OpDef(name, category, infer, ref, arity, dict(attrs or {}), doc)


def complete_attrs(op: str, attrs: dict) -> dict:
    """``attrs`` with the op's defaults filled in (nodes always hold every attribute)."""
    defaults = OPS[op].attrs
    out = {k: attrs.get(k, d) for k, d in defaults.items() if k in attrs or d is not REQUIRED}
    out.update((k, v) for k, v in attrs.items() if k not in defaults)  # unknown: left for verify to report
    return out


def is_default_attr(op: str, key: str, value) -> bool:
    d = OPS[op].attrs.get(key, REQUIRED)
    return d is not REQUIRED and type(d) is type(value) and d == value


def infer_types(op: str, in_types: list[Type], attrs: dict) -> tuple[Type, ...]:
    if op not in OPS:
        raise InferError(f"unknown op '{op}'")
    attrs = complete_attrs(op, attrs)
    try:
        out = OPS[op].infer(in_types, attrs)
    except InferError:
        raise
    except (ValueError, IndexError, KeyError, TypeError) as e:
        raise InferError(f"{op}: {e}") from e
    return out if isinstance(out, tuple) else (out,)


# ---------------------------------------------------------------------------------------
# Shared inference rules
# ---------------------------------------------------------------------------------------


def _tensors(in_types) -> list[TensorType]:
    for t in in_types:
        if not isinstance(t, TensorType):
            raise InferError(f"expected tensor operands, got {t}")
    return in_types


def _device(ts) -> str:
    devices = {t.device for t in ts if t.rank > 0} or {t.device for t in ts}
    if len(devices) > 1:
        raise InferError(f"operands on different devices: {sorted(devices)}")
    return devices.pop()


def promote(ts: list[TensorType]) -> torch.dtype:
    """torch's type promotion (0-dim tensors rank below dimensioned ones), via torch's own rule."""
    args = [torch.empty((1,) * min(t.rank, 1), dtype=t.dtype, device="meta") for t in ts]
    _, result = elementwise_dtypes(*args, type_promotion_kind=ELEMENTWISE_TYPE_PROMOTION_KIND.DEFAULT)
    return result


def _float_of(dtype: torch.dtype) -> torch.dtype:
    return dtype if dtype.is_floating_point or dtype.is_complex else torch.get_default_dtype()


def same_as_input(in_types, attrs):
    (x,) = _tensors(in_types)
    return x.with_()


def float_unary(in_types, attrs):
    (x,) = _tensors(in_types)
    return x.with_(dtype=_float_of(x.dtype))


def bool_unary(in_types, attrs):
    (x,) = _tensors(in_types)
    return x.with_(dtype=torch.bool)


def broadcast_promote(in_types, attrs):
    ts = _tensors(in_types)
    return TensorType(broadcast_shapes(*(t.shape for t in ts)), promote(ts), _device(ts))


def broadcast_float(in_types, attrs):
    t = broadcast_promote(in_types, attrs)
    return t.with_(dtype=_float_of(t.dtype))


def broadcast_bool(in_types, attrs):
    return broadcast_promote(in_types, attrs).with_(dtype=torch.bool)


def div_rule(in_types, attrs):
    return broadcast_float(in_types, attrs) if attrs.get("rounding_mode") is None else broadcast_promote(in_types, attrs)


def where_rule(in_types, attrs):
    c, a, b = _tensors(in_types)
    if c.dtype != torch.bool:
        raise InferError(f"where: condition must be b8, got {c}")
    shape = broadcast_shapes(c.shape, a.shape, b.shape)
    return TensorType(shape, promote([a, b]), _device([c, a, b]))


def convert_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    return x.with_(dtype=attrs["dtype"])


def _reduce_dims(x: TensorType, attrs) -> tuple[int, ...]:
    dims = attrs["dims"]
    if dims is None or dims == ():
        return tuple(range(x.rank))
    normalized = [normalize_dim(d, x.rank) for d in dims]
    if len(set(normalized)) != len(normalized):  # torch rejects a repeated dim; so must the verifier
        raise InferError(f"dims {list(dims)} name a dim twice")
    return tuple(sorted(normalized))


def _reduced_shape(x: TensorType, dims, keepdim) -> tuple:
    if keepdim:
        return tuple(1 if i in dims else d for i, d in enumerate(x.shape))
    return tuple(d for i, d in enumerate(x.shape) if i not in dims)


def reduce_rule(result_dtype: Callable[[torch.dtype], torch.dtype]):
    def rule(in_types, attrs):
        (x,) = _tensors(in_types)
        dims = _reduce_dims(x, attrs)
        return TensorType(_reduced_shape(x, dims, attrs["keepdim"]), result_dtype(x.dtype), x.device)

    return rule


def _sum_dtype(d):
    return torch.int64 if not (d.is_floating_point or d.is_complex) else d


def _mean_dtype(d):
    if not (d.is_floating_point or d.is_complex):
        raise InferError(f"mean needs a floating dtype, got {d}")
    return d


def arg_reduce_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    if x.dtype == torch.bool:  # torch.argmax refuses b8 (max.dim accepts it, and so falls back)
        raise InferError(f"argmax/argmin of a b8 tensor: {x}")
    dim = attrs["dim"]
    dims = tuple(range(x.rank)) if dim is None else (normalize_dim(dim, x.rank),)
    shape = _reduced_shape(x, dims, attrs["keepdim"]) if dim is not None or attrs["keepdim"] else ()
    return TensorType(shape, torch.int64, x.device)


def reduced_dims(op: str, x: TensorType, attrs) -> tuple[int, ...]:
    """The dims of ``x`` that reduction ``op`` reduces (none, for a 0-d tensor)."""
    if x.rank == 0:
        return ()
    if op in ("argmax", "argmin"):
        return tuple(range(x.rank)) if attrs["dim"] is None else (normalize_dim(attrs["dim"], x.rank),)
    return _reduce_dims(x, attrs)


MATMUL_PRECISIONS = ("ieee", "tf32")  # how fp32 operands are multiplied (the ``precision`` option "tf32")


def _check_precision(op: str, attrs):
    if attrs["precision"] not in MATMUL_PRECISIONS:
        raise InferError(f"{op}: precision must be one of {', '.join(MATMUL_PRECISIONS)}, got {attrs['precision']!r}")


def mm_rule(in_types, attrs):
    _check_precision("mm", attrs)
    a, b = _tensors(in_types)
    if a.rank != 2 or b.rank != 2 or a.shape[1] != b.shape[0]:
        raise InferError(f"mm: cannot multiply {a} by {b}")
    return TensorType((a.shape[0], b.shape[1]), promote([a, b]), _device([a, b]))


def bmm_rule(in_types, attrs):
    _check_precision("bmm", attrs)
    a, b = _tensors(in_types)
    if a.rank != 3 or b.rank != 3 or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        raise InferError(f"bmm: cannot multiply {a} by {b}")
    return TensorType((a.shape[0], a.shape[1], b.shape[2]), promote([a, b]), _device([a, b]))


def _attention_shapes(q: TensorType, k: TensorType, v: TensorType, mask: list[TensorType], op: str):
    """Check q [B,Hq,Sq,D], k [B,Hkv,Sk,D], v [B,Hkv,Sk,Dv] and a mask broadcastable to [B,Hq,Sq,Sk]."""
    if q.rank != 4 or k.rank != 4 or v.rank != 4:
        raise InferError(f"{op}: q, k, v must be [B, H, S, D], got {q}, {k}, {v}")
    (b, hq, sq, d), (bk, hkv, sk, dk) = q.shape, k.shape
    if bk != b or dk != d or tuple(v.shape[:3]) != tuple(k.shape[:3]):
        raise InferError(f"{op}: q {q}, k {k} and v {v} do not fit together")
    if hq != hkv and not (isinstance(hq, int) and isinstance(hkv, int) and hkv > 0 and hq % hkv == 0):
        raise InferError(f"{op}: {hq} query heads are not a multiple of {hkv} key/value heads")
    if len({q.dtype, k.dtype, v.dtype}) != 1 or not q.dtype.is_floating_point:
        raise InferError(f"{op}: q, k, v must have one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if len(mask) > 1:
        raise InferError(f"{op}: at most one mask")
    scores = (b, hq, sq, sk)
    for m in mask:
        if m.rank > 4 or broadcast_shapes(m.shape, scores) != scores:
            raise InferError(f"{op}: the mask {m} does not broadcast to the scores [{', '.join(map(str, scores))}]")
        if m.dtype != torch.bool and not m.dtype.is_floating_point:
            raise InferError(f"{op}: the mask must be b8 or floating (additive), got {m.dtype}")
    return scores


def attention_rule(in_types, attrs):
    q, k, v, *mask = _tensors(in_types)
    _attention_shapes(q, k, v, mask, "attention")
    if attrs.get("score_mod") and (len(mask) != 1 or not mask[0].dtype.is_floating_point):
        raise InferError("attention: score_mod needs the modified scores, one floating operand after v")
    device = _device([q, k, v])
    return (TensorType(q.shape[:3] + v.shape[3:], q.dtype, device),
            TensorType(q.shape[:3], torch.float32, device))


def attention_scores_rule(in_types, attrs):
    q, k = _tensors(in_types)
    if q.rank != 4 or k.rank != 4 or q.shape[0] != k.shape[0] or q.shape[3] != k.shape[3]:
        raise InferError(f"attention_scores: q [B, Hq, Sq, D] and k [B, Hkv, Sk, D] do not fit: {q}, {k}")
    hq, hkv = q.shape[1], k.shape[1]
    if hq != hkv and not (isinstance(hq, int) and isinstance(hkv, int) and hkv > 0 and hq % hkv == 0):
        raise InferError(f"attention_scores: {hq} query heads are not a multiple of {hkv} key heads")
    return TensorType(q.shape[:3] + k.shape[2:3], promote([q, k]), _device([q, k]))


def attention_split_rule(in_types, attrs):
    q, k, v, *mask = _tensors(in_types)
    _attention_shapes(q, k, v, mask, "attention_split")
    splits, chunk, sk = attrs["splits"], attrs["chunk"], k.shape[2]
    if not (isinstance(splits, int) and isinstance(chunk, int) and splits > 0 and chunk > 0 and chunk % 16 == 0):
        raise InferError(f"attention_split: splits must be a positive int and chunk a positive multiple of 16, "
                         f"got splits={splits}, chunk={chunk}")
    if not isinstance(sk, int) or splits * chunk < sk:
        raise InferError(f"attention_split: {splits} splits of {chunk} keys do not cover the {sk} keys "
                         f"(the key length must be static)")
    device = _device([q, k, v])
    b, h, sq = q.shape[:3]
    return (TensorType((b, h, splits, sq, v.shape[3]), torch.float32, device),
            TensorType((b, h, splits, sq), torch.float32, device))


def _attention_grad_inputs(in_types, op, score_mod=False):
    do, q, k, v, lse, delta, *mask = _tensors(in_types)
    if score_mod:  # the modified scores and their gradient, both [B, Hq, Sq, Sk]
        scores = _attention_shapes(q, k, v, [], op)
        if len(mask) != 2 or any(tuple(t.shape) != tuple(scores) or not t.dtype.is_floating_point for t in mask):
            raise InferError(f"{op}: score_mod needs the modified scores and their gradient, two floating "
                             f"[{', '.join(map(str, scores))}] operands after delta, got {', '.join(map(str, mask))}")
    else:
        _attention_shapes(q, k, v, mask, op)
    if tuple(do.shape) != tuple(q.shape[:3] + v.shape[3:]) or do.dtype != q.dtype:
        raise InferError(f"{op}: the output's gradient {do} does not fit q {q} and v {v}")
    for name, t in (("lse", lse), ("delta", delta)):
        if tuple(t.shape) != tuple(q.shape[:3]) or t.dtype != torch.float32:
            raise InferError(f"{op}: {name} must be f32[B, Hq, Sq], got {t}")
    return q, k, v


def attention_grad_kv_rule(in_types, attrs):
    q, k, v = _attention_grad_inputs(in_types, "attention_grad_kv", attrs.get("score_mod", False))
    return k.with_(), v.with_()


def attention_grad_q_rule(in_types, attrs):
    q, k, v = _attention_grad_inputs(in_types, "attention_grad_q", attrs.get("score_mod", False))
    return q.with_()


def attention_probs_grad_rule(in_types, attrs):
    do, q, k, v, lse, delta, x = _tensors(in_types)
    _attention_grad_inputs(in_types[:6], "attention_probs_grad")
    scores = (*q.shape[:3], k.shape[2])
    if tuple(x.shape) != scores or not x.dtype.is_floating_point:
        raise InferError(f"attention_probs_grad: the modified scores must be floating [{', '.join(map(str, scores))}], "
                         f"got {x}")
    return x.with_()


def view_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    shape = tuple(make_dim(d) for d in attrs["shape"])
    if make_dim(math.prod(shape)) != make_dim(math.prod(x.shape)):
        raise InferError(f"view: cannot view {x} as [{', '.join(map(str, shape))}]")
    return x.with_(shape=shape)


def permute_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    dims = tuple(normalize_dim(d, x.rank) for d in attrs["dims"])
    if sorted(dims) != list(range(x.rank)):
        raise InferError(f"permute: {attrs['dims']} is not a permutation of {x.rank} dims")
    return x.with_(shape=tuple(x.shape[d] for d in dims))


def expand_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    shape = tuple(make_dim(d) for d in attrs["shape"])
    if len(shape) < x.rank:
        raise InferError(f"expand: {shape} has fewer dims than {x}")
    lead = len(shape) - x.rank
    for i, d in enumerate(x.shape):
        if d != 1 and d != shape[lead + i]:
            raise InferError(f"expand: cannot expand {x} to {list(shape)}")
    return x.with_(shape=shape)


def _clamp_index(i, size, default):
    if i is None:
        return default
    if isinstance(i, int) and isinstance(size, int):
        if i < 0:
            i += size
        return min(max(i, 0), size)
    if isinstance(i, int) and i < 0:
        return make_dim(size + i)
    # A symbolic bound: frontends give bounds that are already within the size.
    if isinstance(i, int) and i >= 2**62:  # INT64_MAX-style "to the end"
        return size
    return make_dim(i)


def slice_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    dim = normalize_dim(attrs["dim"], x.rank)
    size = x.shape[dim]
    start = _clamp_index(attrs["start"], size, 0)
    end = _clamp_index(attrs["end"], size, size)
    step = attrs["step"]
    if step < 1:
        raise InferError("slice: step must be positive")
    length = make_dim((end - start + step - 1) // step) if step != 1 else make_dim(end - start)
    if isinstance(length, int):
        length = max(length, 0)
    return x.with_(shape=x.shape[:dim] + (length,) + x.shape[dim + 1:])


def select_rule(in_types, attrs):
    (x,) = _tensors(in_types)
    dim = normalize_dim(attrs["dim"], x.rank)
    return x.with_(shape=x.shape[:dim] + x.shape[dim + 1:])


def cat_rule(in_types, attrs):
    ts = _tensors(in_types)
    ts_nonempty = [t for t in ts if not (t.rank == 1 and t.shape[0] == 0)] or ts
    rank = ts_nonempty[0].rank
    dim = normalize_dim(attrs["dim"], rank)
    for t in ts_nonempty:
        if t.rank != rank or any(t.shape[i] != ts_nonempty[0].shape[i] for i in range(rank) if i != dim):
            raise InferError(f"cat: shapes {[str(t) for t in ts]} do not match outside dim {dim}")
    total = make_dim(sum(t.shape[dim] for t in ts_nonempty))
    shape = ts_nonempty[0].shape[:dim] + (total,) + ts_nonempty[0].shape[dim + 1:]
    return TensorType(shape, promote(ts), _device(ts))


def gather_rule(in_types, attrs):
    x, idx = _tensors(in_types)
    if idx.dtype not in (torch.int64, torch.int32):
        raise InferError(f"gather: index must be an integer tensor, got {idx}")
    return TensorType(idx.shape, x.dtype, x.device)


def index_select_rule(in_types, attrs):
    x, idx = _tensors(in_types)
    dim = normalize_dim(attrs["dim"], x.rank)
    if idx.rank > 1:
        raise InferError(f"index_select: index must be 0-d or 1-d, got {idx}")
    if x.rank == 0:  # torch picks the one element of a 0-d tensor and keeps it 0-d
        return x.with_()
    n = idx.shape[0] if idx.rank else 1
    return x.with_(shape=x.shape[:dim] + (n,) + x.shape[dim + 1:])


def embedding_rule(in_types, attrs):
    w, idx = _tensors(in_types)
    if w.rank != 2:
        raise InferError(f"embedding: weight must be 2-d, got {w}")
    return TensorType(idx.shape + (w.shape[1],), w.dtype, w.device)


def index_rule(in_types, attrs):
    x, *idxs = _tensors(in_types)
    dims = tuple(attrs["dims"])
    if len(dims) != len(idxs) or list(dims) != list(range(dims[0], dims[0] + len(dims))):
        raise InferError(f"index: indexed dims {dims} must be consecutive and match the {len(idxs)} indices")
    for i in idxs:
        if i.dtype not in (torch.int64, torch.int32):
            raise InferError(f"index: indices must be integer tensors, got {i}")
    mid = broadcast_shapes(*(i.shape for i in idxs))
    return x.with_(shape=x.shape[:dims[0]] + mid + x.shape[dims[-1] + 1:])


def index_copy_rule(in_types, attrs):
    x, idx, src = _tensors(in_types)
    dim = normalize_dim(attrs["dim"], max(x.rank, 1))
    if idx.rank != 1 or idx.dtype not in (torch.int64, torch.int32):
        raise InferError(f"index_copy: index must be a 1-d integer tensor, got {idx}")
    want = x.shape[:dim] + (idx.shape[0],) + x.shape[dim + 1:]
    if tuple(src.shape) != tuple(want):
        raise InferError(f"index_copy: source {src} must have shape {list(want)} (the index's length at dim {dim})")
    if src.dtype != x.dtype:
        raise InferError(f"index_copy: source {src} must have the destination's dtype {x.dtype}")
    return x.with_()


def full_rule(in_types, attrs):
    return TensorType(tuple(attrs["shape"]), attrs["dtype"], attrs["device"])


def arange_rule(in_types, attrs):
    start, end, step = attrs["start"], attrs["end"], attrs["step"]
    if all(isinstance(v, (int, float)) for v in (start, end, step)):
        n = max(0, math.ceil((end - start) / step))
    else:
        n = make_dim(-((start - end) // step))  # ceil division on integers
    return TensorType((n,), attrs["dtype"], attrs["device"])


def sym_rule(in_types, attrs):
    return SymType(attrs["expr"])


def kernel_rule(in_types, attrs):
    body = attrs["body"]
    if len(in_types) != len(body.inputs):
        raise InferError(f"kernel: {len(in_types)} operands for a body with {len(body.inputs)} inputs")
    for k, (t, n) in enumerate(zip(in_types, body.inputs)):
        if not n.types[0].same_value_type(t):
            raise InferError(f"kernel: operand {k} is {t} but the body's input {k} is {n.types[0]}")
    return tuple(v.type.with_() if isinstance(v.type, TensorType) else v.type for v in body.outputs)


def _ref_kernel(*inputs, body):
    from .reference import run_reference

    out = run_reference(body, list(inputs))
    return out[0] if len(out) == 1 else tuple(out)


def no_infer(in_types, attrs):
    raise InferError("the result types of this op are given, not inferred")


# ---------------------------------------------------------------------------------------
# Reference implementations that are more than one torch call
# ---------------------------------------------------------------------------------------


def _dims_or_all(x, dims):
    return list(range(x.dim())) if dims is None or dims == () else list(dims)


def _ref_reduce(fn):
    def ref(x, dims, keepdim):
        return fn(x, _dims_or_all(x, dims), keepdim=keepdim)

    return ref


def _ref_amax(x, dims, keepdim):
    return torch.amax(x, _dims_or_all(x, dims), keepdim=keepdim)


def _ref_prod(x, dims, keepdim):
    for d in sorted((d % max(x.dim(), 1) for d in _dims_or_all(x, dims)), reverse=True):
        x = torch.prod(x, d, keepdim=keepdim) if x.dim() else x
    return x.to(_sum_dtype(x.dtype))


def _ref_arg(fn):
    def ref(x, dim, keepdim):
        return fn(x, dim=dim, keepdim=keepdim)

    return ref


def _ref_gelu(x, approximate):
    return torch.nn.functional.gelu(x, approximate=approximate)


def _ref_clamp(x, min, max):
    if min is None and max is None:  # unbounded both ways (torch.clamp refuses this)
        return x.clone()
    return torch.clamp(x, min, max)


def _ref_full(shape, value, dtype, device):
    return torch.full(tuple(shape), value, dtype=dtype, device=device)


def _ref_arange(start, end, step, dtype, device):
    return torch.arange(start, end, step, dtype=dtype, device=device)


def _ref_index(x, *idxs, dims):
    return x[(slice(None),) * dims[0] + tuple(idxs)]


def _ref_scores(q, k, mask, scale, is_causal, score_mod=False):
    """The fp32 scores [B, Hq, Sq, Sk] with the mask and the causal mask applied (-inf where masked).
    With ``score_mod`` the mask operand is the scores themselves."""
    if score_mod:
        s = mask.float().expand(*q.shape[:3], k.shape[2])
    else:
        k = k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        s = q.float() @ k.transpose(-1, -2) * scale
        if mask is not None:
            s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask.float()
    if is_causal:  # top-left aligned, as torch's SDPA: query i sees keys j <= i
        allowed = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
        s = s.masked_fill(~allowed, float("-inf"))
    return s


def _ref_attention_scores(q, k):
    """q @ kᵀ per head (grouped-query heads share their key head), computed in fp32."""
    k = k.float().repeat_interleave(q.shape[1] // k.shape[1], dim=1)
    return (q.float() @ k.transpose(-1, -2)).to(torch.promote_types(q.dtype, k.dtype))


def _ref_attention(q, k, v, mask=None, *, scale, is_causal, score_mod=False):
    """(output, log-sum-exp per row). A row with no key to attend to gives 0 (as torch's flash
    kernels do) and a log-sum-exp of +inf, so that probabilities recomputed from it are 0."""
    s = _ref_scores(q, k, mask, scale, is_causal, score_mod)
    lse = torch.logsumexp(s, dim=-1)
    empty = lse == float("-inf")
    p = torch.exp(s - lse.masked_fill(empty, 0)[..., None])
    out = p @ v.float().repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    return out.to(q.dtype), lse.masked_fill(empty, float("inf"))


def _ref_attention_split(q, k, v, mask=None, *, scale, is_causal, splits, chunk, score_mod=False):
    """Per split of ``chunk`` keys: (its output normalized by its own sum, its log-sum-exp);
    a split with no key to attend to gives 0 and -inf (so that it weighs nothing in the combine)."""
    s = _ref_scores(q, k, mask, scale, is_causal, score_mod)
    v = v.float().repeat_interleave(q.shape[1] // v.shape[1], dim=1)
    accs, lses = [], []
    for i in range(splits):
        si, vi = s[..., i * chunk:(i + 1) * chunk], v[..., i * chunk:(i + 1) * chunk, :]
        lse = torch.logsumexp(si, dim=-1) if si.shape[-1] else torch.full(s.shape[:3], float("-inf"), device=s.device)
        p = torch.exp(si - lse.masked_fill(lse == float("-inf"), 0)[..., None])
        accs.append(p @ vi)
        lses.append(lse)
    return torch.stack(accs, dim=2), torch.stack(lses, dim=2)


def _ref_probs(do, q, k, v, lse, delta, mask, scale, is_causal, score_mod):
    """The recomputed probabilities and their softmax's gradient, ``p * (do @ vᵀ - delta)``."""
    group = q.shape[1] // k.shape[1]
    p = torch.exp(_ref_scores(q, k, mask, scale, is_causal, score_mod) - lse[..., None])
    return p, p * (do.float() @ v.float().repeat_interleave(group, dim=1).transpose(-1, -2) - delta[..., None])


def _ref_attention_probs_grad(do, q, k, v, lse, delta, x):
    return _ref_probs(do, q, k, v, lse, delta, x, 1.0, False, True)[1].to(x.dtype)


def _ref_attention_grads(do, q, k, v, lse, delta, mask, scale, is_causal, ds=None):
    """The gradients of q, k and v; with ``ds`` (a score modification's), ``mask`` is the modified
    scores and ``ds`` the gradient of the scores q @ kᵀ themselves."""
    group = q.shape[1] // k.shape[1]
    p, ds_probs = _ref_probs(do, q, k, v, lse, delta, mask, scale, is_causal, ds is not None)
    ds = ds_probs if ds is None else ds.float()
    dq = ds @ k.float().repeat_interleave(group, dim=1) * scale

    def per_kv_head(x):  # the gradients of the query heads that share a key/value head, summed
        return x.unflatten(1, (k.shape[1], group)).sum(2)

    dk = per_kv_head(ds.transpose(-1, -2) @ q.float() * scale)
    dv = per_kv_head(p.transpose(-1, -2) @ do.float())
    return dq.to(q.dtype), dk.to(k.dtype), dv.to(v.dtype)


def _ref_attention_grad_kv(do, q, k, v, lse, delta, mask=None, ds=None, *, scale, is_causal, score_mod=False):
    return _ref_attention_grads(do, q, k, v, lse, delta, mask, scale, is_causal, ds)[1:]


def _ref_attention_grad_q(do, q, k, v, lse, delta, mask=None, ds=None, *, scale, is_causal, score_mod=False):
    return _ref_attention_grads(do, q, k, v, lse, delta, mask, scale, is_causal, ds)[0]


def _ref_index_copy(x, idx, src, dim):
    # index_put's semantics (negative indices count from the end), out of place
    return torch.ops.aten.index_put.default(x, [None] * dim + [idx], src)


def _ref_fallback(*tensors, target, args, kwargs, pick):
    from .fallback import call_aten

    out = call_aten(target, args, kwargs, tensors)
    if pick is None:
        return out
    # A node with one result gets the tensor itself, as every other op's ref gives it.
    return out[pick[0]] if len(pick) == 1 else tuple(out[i] for i in pick)


# ---------------------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------------------

P, R, M, V, D, C = Category.POINTWISE, Category.REDUCTION, Category.MATMUL, Category.VIEW, Category.DATA, Category.CREATION

register("input", Category.SOURCE, no_infer, None, arity=0, doc="a graph input")
register("constant", Category.SOURCE, no_infer, None, arity=0, doc="a graph-level tensor held by reference")

for _name, _fn in {
    "exp": torch.exp, "exp2": torch.exp2, "expm1": torch.expm1, "log": torch.log, "log2": torch.log2,
    "log10": torch.log10, "log1p": torch.log1p, "sqrt": torch.sqrt, "rsqrt": torch.rsqrt,
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin, "acos": torch.acos,
    "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh, "tanh": torch.tanh, "asinh": torch.asinh,
    "acosh": torch.acosh, "atanh": torch.atanh, "sigmoid": torch.sigmoid, "erf": torch.erf,
    "erfc": torch.erfc, "erfinv": torch.erfinv, "reciprocal": torch.reciprocal, "silu": torch.nn.functional.silu,
}.items():
    register(_name, P, float_unary, _fn, doc=f"torch.{_name}, computed in floating point")

for _name, _fn in {
    "neg": torch.neg, "abs": torch.abs, "relu": torch.relu, "floor": torch.floor, "ceil": torch.ceil,
    "round": torch.round, "trunc": torch.trunc, "sign": torch.sign, "bitwise_not": torch.bitwise_not,
}.items():
    register(_name, P, same_as_input, _fn, doc=f"torch.{_name}; keeps the dtype")

for _name, _fn in {"isnan": torch.isnan, "isinf": torch.isinf, "logical_not": torch.logical_not}.items():
    register(_name, P, bool_unary, _fn, doc=f"torch.{_name}; gives b8")

register("gelu", P, float_unary, _ref_gelu, attrs={"approximate": "none"}, doc="GELU, exact or tanh-approximated")
register("clamp", P, same_as_input, _ref_clamp, attrs={"min": None, "max": None},
         doc="clamp between scalar bounds (None: unbounded)")
register("convert", P, convert_rule, lambda x, dtype: x.to(dtype), attrs={"dtype": REQUIRED}, doc="cast to dtype")

for _name, _fn in {
    "add": torch.add, "sub": torch.sub, "mul": torch.mul, "maximum": torch.maximum, "minimum": torch.minimum,
    "fmod": torch.fmod, "remainder": torch.remainder, "pow": torch.pow, "bitwise_and": torch.bitwise_and,
    "bitwise_or": torch.bitwise_or, "bitwise_xor": torch.bitwise_xor,
}.items():
    register(_name, P, broadcast_promote, _fn, arity=2, doc=f"torch.{_name} with broadcasting and promotion")
register("atan2", P, broadcast_float, torch.atan2, arity=2, doc="torch.atan2")
register("div", P, div_rule, lambda a, b, rounding_mode: torch.div(a, b, rounding_mode=rounding_mode), arity=2,
         attrs={"rounding_mode": None}, doc="true division, or 'trunc'/'floor' rounding division")

for _name, _fn in {
    "eq": torch.eq, "ne": torch.ne, "lt": torch.lt, "le": torch.le, "gt": torch.gt, "ge": torch.ge,
    "logical_and": torch.logical_and, "logical_or": torch.logical_or, "logical_xor": torch.logical_xor,
}.items():
    register(_name, P, broadcast_bool, _fn, arity=2, doc=f"torch.{_name}; gives b8")

register("where", P, where_rule, torch.where, arity=3, doc="select from two tensors by a b8 condition")

_REDUCE_ATTRS = {"dims": None, "keepdim": False}
register("sum", R, reduce_rule(_sum_dtype), _ref_reduce(torch.sum), attrs=_REDUCE_ATTRS, doc="sum over dims (None: all)")
register("mean", R, reduce_rule(_mean_dtype), _ref_reduce(torch.mean), attrs=_REDUCE_ATTRS, doc="mean over dims")
register("prod", R, reduce_rule(_sum_dtype), _ref_prod, attrs=_REDUCE_ATTRS, doc="product over dims")
register("amax", R, reduce_rule(lambda d: d), _ref_amax, attrs=_REDUCE_ATTRS, doc="maximum over dims")
register("amin", R, reduce_rule(lambda d: d), _ref_reduce(torch.amin), attrs=_REDUCE_ATTRS, doc="minimum over dims")
register("any", R, reduce_rule(lambda d: torch.bool), _ref_reduce(torch.any), attrs=_REDUCE_ATTRS, doc="logical or over dims")
register("all", R, reduce_rule(lambda d: torch.bool), _ref_reduce(torch.all), attrs=_REDUCE_ATTRS, doc="logical and over dims")
register("var", R, reduce_rule(_mean_dtype),
         lambda x, dims, correction, keepdim: torch.var(x, _dims_or_all(x, dims), correction=correction, keepdim=keepdim),
         attrs={"dims": None, "correction": 1, "keepdim": False}, doc="variance over dims with a correction")
register("argmax", R, arg_reduce_rule, _ref_arg(torch.argmax), attrs={"dim": None, "keepdim": False},
         doc="index of the maximum along dim (None: flattened)")
register("argmin", R, arg_reduce_rule, _ref_arg(torch.argmin), attrs={"dim": None, "keepdim": False},
         doc="index of the minimum along dim (None: flattened)")

def _ref_matmul(fn):
    def ref(a, b, precision="ieee"):
        if precision == "tf32" and a.is_cuda:  # CPUs have no tf32: there the product stays exact fp32
            old = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = True
            try:
                return fn(a, b)
            finally:
                torch.backends.cuda.matmul.allow_tf32 = old
        return fn(a, b)

    return ref


_MATMUL_ATTRS = {"precision": "ieee"}
register("mm", M, mm_rule, _ref_matmul(torch.mm), arity=2, attrs=_MATMUL_ATTRS,
         doc="[M,K] x [K,N] matrix product; precision tf32 lets fp32 operands multiply as tf32")
register("bmm", M, bmm_rule, _ref_matmul(torch.bmm), arity=2, attrs=_MATMUL_ATTRS,
         doc="[B,M,K] x [B,K,N] batched matrix product; precision as for mm")

_ATTENTION_ATTRS = {"scale": REQUIRED, "is_causal": False}
register("attention", Category.ATTENTION, attention_rule, _ref_attention, arity=None,
         attrs={**_ATTENTION_ATTRS, "score_mod": False},
         doc="softmax(q @ k^T * scale + mask) @ v over q [B,Hq,Sq,D], k [B,Hkv,Sk,D], v [B,Hkv,Sk,Dv] and an "
             "optional b8 or additive mask broadcastable to [B,Hq,Sq,Sk] (Hq a multiple of Hkv: grouped-query "
             "heads); is_causal masks keys after the query (top-left aligned); results: the output and the "
             "f32 log-sum-exp of each row's scores. score_mod: the operand after v is the scores themselves, "
             "softmax(s) @ v with s = f(attention_scores(q, k), ...) (scale unused): attention written by hand, "
             "whose pointwise f the kernel computes on each block of q @ k^T (passes/fuse_attention.py)")
register("attention_split", Category.ATTENTION, attention_split_rule, _ref_attention_split, arity=None,
         attrs={**_ATTENTION_ATTRS, "splits": REQUIRED, "chunk": REQUIRED, "score_mod": False},
         doc="attention's forward with the keys split in `splits` ranges of `chunk` keys (a multiple of 16), "
             "each computed by its own programs (flash-decoding): results f32[B,Hq,splits,Sq,Dv], each range's "
             "output normalized by its own sum, and f32[B,Hq,splits,Sq], its log-sum-exp (-inf where it has no "
             "key to attend to); a combine in IR weighs them (passes/split_attention.py); score_mod as for "
             "attention")
register("attention_scores", Category.ATTENTION, attention_scores_rule, _ref_attention_scores, arity=2,
         doc="q @ k^T per head, [B,Hq,Sq,Sk] from q [B,Hq,Sq,D] and k [B,Hkv,Sk,D]: only ever computed inside "
             "the kernel of the attention (score_mod) that reads it, as its block of scores")
register("attention_grad_kv", Category.ATTENTION, attention_grad_kv_rule, _ref_attention_grad_kv, arity=None,
         attrs={**_ATTENTION_ATTRS, "score_mod": False},
         doc="the gradients of attention's k and v from (d_out, q, k, v, lse, delta, [mask]), delta = "
             "rowsum(out * d_out). score_mod: the operands after delta are the modified scores s = f(attention_scores"
             "(q, k), ...) and ds, the gradient of attention_scores, computed from attention_probs_grad through f's "
             "derivative (attention written by hand, in training: frontend/hand_attention.py)")
register("attention_grad_q", Category.ATTENTION, attention_grad_q_rule, _ref_attention_grad_q, arity=None,
         attrs={**_ATTENTION_ATTRS, "score_mod": False},
         doc="the gradient of attention's q, from the operands of attention_grad_kv")
register("attention_probs_grad", Category.ATTENTION, attention_probs_grad_rule, _ref_attention_probs_grad, arity=7,
         doc="p * (d_out @ v^T - delta) with p = exp(s - lse), from (d_out, q, k, v, lse, delta, s): the gradient "
             "at the modified scores s of attention written by hand; only ever computed inside the kernel of the "
             "score-modified attention_grad_kv or attention_grad_q that reads it, as its block")

register("view", V, view_rule, lambda x, shape: x.reshape(tuple(shape)), attrs={"shape": REQUIRED},
         doc="the same elements in a new shape (row-major order)")
register("permute", V, permute_rule, lambda x, dims: x.permute(tuple(dims)), attrs={"dims": REQUIRED},
         doc="reorder dims")
register("expand", V, expand_rule, lambda x, shape: x.expand(tuple(shape)), attrs={"shape": REQUIRED},
         doc="broadcast size-1 dims (and new leading dims) without copying")
register("slice", V, slice_rule, lambda x, dim, start, end, step: torch.ops.aten.slice.Tensor(x, dim, start, end, step),
         attrs={"dim": REQUIRED, "start": None, "end": None, "step": 1}, doc="x[start:end:step] along dim")
register("select", V, select_rule, lambda x, dim, index: torch.select(x, dim, index),
         attrs={"dim": REQUIRED, "index": REQUIRED}, doc="x[index] along dim, dropping it")

register("copy", D, same_as_input, lambda x: x.clone(memory_format=torch.contiguous_format),
         doc="a fresh contiguous copy")
register("cat", D, cat_rule, lambda *xs, dim: torch.cat(xs, dim), arity=None, attrs={"dim": 0},
         doc="concatenate along dim")
register("gather", D, gather_rule, lambda x, idx, dim: torch.gather(x, dim, idx), arity=2, attrs={"dim": REQUIRED},
         doc="torch.gather")
register("index_select", D, index_select_rule, lambda x, idx, dim: torch.index_select(x, dim, idx), arity=2,
         attrs={"dim": REQUIRED}, doc="torch.index_select")
register("embedding", D, embedding_rule, lambda w, idx: torch.embedding(w, idx), arity=2, doc="rows of a 2-d weight by index")
register("index", D, index_rule, _ref_index, arity=None, attrs={"dims": REQUIRED},
         doc="advanced indexing by integer tensors on consecutive dims")

register("index_copy", D, index_copy_rule, _ref_index_copy, arity=3, attrs={"dim": REQUIRED},
         doc="x with its slices at idx along dim replaced by src's (index_put by one index tensor); "
             "its kernel writes only those slices, in place where x's buffer may be overwritten")

register("full", C, full_rule, _ref_full, arity=0,
         attrs={"shape": REQUIRED, "value": REQUIRED, "dtype": REQUIRED, "device": "cpu"}, doc="a filled tensor")
register("arange", C, arange_rule, _ref_arange, arity=0,
         attrs={"start": 0, "end": REQUIRED, "step": 1, "dtype": REQUIRED, "device": "cpu"}, doc="torch.arange")

register("symint", Category.SYM, sym_rule, None, arity=0, attrs={"expr": REQUIRED},
         doc="a symbolic integer computed from the size symbols")
register("aten", Category.FALLBACK, no_infer, _ref_fallback, arity=None,
         attrs={"target": REQUIRED, "args": (), "kwargs": (), "pick": None},
         doc="an ATen op mlc does not compile, run by PyTorch; $i in args marks the i-th input, "
             "pick lists which items of a tuple result are the node's results")

register("kernel", Category.KERNEL, kernel_rule, _ref_kernel, arity=None, attrs={"body": REQUIRED},
         doc="a fused region, printed inline; its body becomes one generated kernel")

POINTWISE = frozenset(n for n, o in OPS.items() if o.category is P)
REDUCTIONS = frozenset(n for n, o in OPS.items() if o.category is R)
VIEWS = frozenset(n for n, o in OPS.items() if o.category is V)
ATTENTIONS = frozenset(n for n, o in OPS.items() if o.category is Category.ATTENTION)
