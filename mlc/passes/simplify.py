"""Algebraic simplification: ``RULES_SIMPLIFY`` applied by the shared rewrite driver.

Each rule is one line, ``(op, fn(node, *inputs))``, with the identity it uses in a comment;
the longer ones are named functions below the list. The driver (``mlc.ir.rewrite``) only
applies a replacement whose type is exactly the node's, so ``x * 1`` where the ``1``
broadcasts ``x`` to a bigger shape, or promotes it to another dtype, stays as it is.

Every identity holds bit for bit, with one exception taken from compilers that do the same
(Inductor's ``remove_no_ops``): ``x + 0 -> x`` turns ``-0.0 + 0.0``, which is ``+0.0``,
into ``-0.0``. Nothing but a sign test or a division by the zero can tell. A sum or mean of
one element is ``0 + x`` and keeps ``-0.0`` the same way.

A reduction with one element to reduce (over size-1 dims, or of a 0-d tensor) is no
reduction: it becomes a copy of its input reshaped (cast as the reduction casts), which fuses
like any pointwise op, or what it gives for one element (``argmax``: 0; ``var``: ``x - x``,
0 or nan, and nan when the correction leaves no degree of freedom, as torch gives). A copy,
not a view: the result is a new tensor, as in eager, never the input itself.
"""

from __future__ import annotations

import torch

from ..ir.graph import Graph, Node, Value
from ..ir.ops import reduced_dims
from ..ir.rewrite import is_scalar, make, rewrite
from ..ir.types import TensorType


def _producer(v: Value, op: str) -> Node | None:
    return v.node if v.node.op == op else None


def compose_permutes(node: Node, x: Value):
    """permute(permute(x, p), q) -> permute(x, p∘q), or x when that is the identity."""
    inner = _producer(x, "permute")
    if inner is None:
        return None
    rank = len(node.attrs["dims"])
    p = [d % rank for d in inner.attrs["dims"]]
    dims = [p[d % rank] for d in node.attrs["dims"]]
    return inner.inputs[0] if dims == list(range(rank)) else make("permute", inner.inputs[0], dims=dims)


def _whole_slice(node: Node, x: Value):
    """slice(x) over all of x's dim with step 1 -> x (the driver checks the shape is unchanged)."""
    return x if node.attrs["step"] == 1 and node.attrs["start"] in (None, 0) else None


# dtype -> the dtypes that hold every one of its values exactly.
_WIDER = {
    torch.bool: {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16,
                 torch.float32, torch.float64},
    torch.uint8: {torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64},
    torch.int8: {torch.int16, torch.int32, torch.int64, torch.float16, torch.bfloat16, torch.float32, torch.float64},
    torch.int16: {torch.int32, torch.int64, torch.float32, torch.float64},
    torch.int32: {torch.int64, torch.float64},
    torch.float16: {torch.float32, torch.float64},
    torch.bfloat16: {torch.float32, torch.float64},
    torch.float32: {torch.float64},
}


def drop_lossless_cast(node: Node, x: Value):
    """convert(convert(x, a), b) -> convert(x, b) when x -> a loses nothing."""
    inner = _producer(x, "convert")
    if inner is None or not isinstance(inner.inputs[0].type, TensorType):
        return None
    if inner.attrs["dtype"] not in _WIDER.get(inner.inputs[0].type.dtype, ()):
        return None
    return make("convert", inner.inputs[0], dtype=node.attrs["dtype"])


def expand_scalar(node: Node, x: Value):
    """expand(full(v)) -> full(v) of the expanded shape: a constant needs no broadcast."""
    if x.node.op != "full":
        return None
    a = x.node.attrs
    return make("full", shape=node.attrs["shape"], value=a["value"], dtype=a["dtype"], device=a["device"])


def convert_scalar(node: Node, x: Value):
    """convert(full(v)) -> full(v) in the new dtype, when filling it directly gives the same number."""
    if x.node.op != "full":
        return None
    a, dtype = x.node.attrs, node.attrs["dtype"]
    try:
        cast = torch.full((), a["value"], dtype=a["dtype"]).to(dtype)
        direct = torch.full((), a["value"], dtype=dtype)
    except (RuntimeError, TypeError, OverflowError):  # a value the dtype cannot hold, or a symbolic one
        return None
    if not (torch.equal(cast, direct) or (cast.isnan().all() and direct.isnan().all())):
        return None  # rounded twice: f32(1e-5) -> f16 need not be f16(1e-5)
    return make("full", shape=a["shape"], value=a["value"], dtype=dtype, device=a["device"])


def _where_constant(node: Node, c: Value, a: Value, b: Value):
    """where(true, a, b) -> a; where(false, a, b) -> b."""
    return a if is_scalar(c, True) else b if is_scalar(c, False) else None


def _one_element(node: Node, x: Value) -> bool:
    """Does each result of this reduction reduce exactly one element of ``x`` (static sizes)?"""
    if not isinstance(x.type, TensorType):
        return False
    return all(x.type.shape[d] == 1 for d in reduced_dims(node.op, x.type, node.attrs))


def reduce_one_element(node: Node, x: Value):
    """sum, mean, prod, amax, amin, any, all of one element -> x reshaped, in the result's dtype
    (a copy, or the cast: sum of i32 is i64, any is x != 0)."""
    if not _one_element(node, x):
        return None
    out = node.types[0]
    reshaped = make("view", x, shape=out.shape)
    return make("copy", reshaped) if out.dtype == x.type.dtype else make("convert", reshaped, dtype=out.dtype)


def var_of_one_element(node: Node, x: Value):
    """var of one element -> (x - x) / (1 - correction): 0, or nan for inf and nan; and nan
    everywhere when the correction is 1 or more (0 / 0, as torch gives)."""
    if not _one_element(node, x):
        return None
    out = node.types[0]
    if node.attrs["correction"] >= 1:
        return make("full", shape=out.shape, value=float("nan"), dtype=out.dtype, device=out.device)
    return make("view", make("sub", x, x), shape=out.shape)


def arg_of_one_element(node: Node, x: Value):
    """argmax, argmin of one element -> 0."""
    if not _one_element(node, x):
        return None
    out = node.types[0]
    return make("full", shape=out.shape, value=0, dtype=out.dtype, device=out.device)


RULES_SIMPLIFY = [
    ("mul", lambda n, x, y: x if is_scalar(y, 1) else None),                     # x*1 -> x
    ("mul", lambda n, x, y: y if is_scalar(x, 1) else None),                     # 1*x -> x
    ("add", lambda n, x, y: x if is_scalar(y, 0) else None),                     # x+0 -> x
    ("add", lambda n, x, y: y if is_scalar(x, 0) else None),                     # 0+x -> x
    ("sub", lambda n, x, y: x if is_scalar(y, 0) else None),                     # x-0 -> x
    ("div", lambda n, x, y: x if n.attrs["rounding_mode"] is None and is_scalar(y, 1) else None),  # x/1 -> x
    ("pow", lambda n, x, y: x if is_scalar(y, 1) else None),                     # x**1 -> x
    ("neg", lambda n, x: x.node.inputs[0] if x.node.op == "neg" else None),      # --x -> x
    ("logical_not", lambda n, x: x.node.inputs[0] if x.node.op == "logical_not" else None),  # !!x -> x
    ("bitwise_not", lambda n, x: x.node.inputs[0] if x.node.op == "bitwise_not" else None),  # ~~x -> x
    ("relu", lambda n, x: x if x.node.op == "relu" else None),                   # relu(relu(x)) -> relu(x)
    ("abs", lambda n, x: x if x.node.op == "abs" else None),                     # |(|x|)| -> |x|
    ("permute", lambda n, x: x if list(n.attrs["dims"]) == list(range(len(n.attrs["dims"]))) else None),  # permute(x, id) -> x
    ("permute", compose_permutes),                                               # permute∘permute -> permute
    ("view", lambda n, x: x),                                                    # view(x, x.shape) -> x
    ("view", lambda n, x: make("view", x.node.inputs[0], shape=n.attrs["shape"]) if x.node.op == "view" else None),  # view∘view -> view
    ("expand", lambda n, x: x),                                                  # expand(x, x.shape) -> x
    ("expand", expand_scalar),                                                   # expand(full) -> full
    ("slice", _whole_slice),                                                     # x[0:len] -> x
    ("convert", lambda n, x: x),                                                 # convert(x, x.dtype) -> x
    ("convert", drop_lossless_cast),                                             # lossless cast∘cast -> cast
    ("convert", convert_scalar),                                                 # convert(full(v)) -> full(v)
    ("where", _where_constant),                                                  # where(true, a, b) -> a
    ("sum", reduce_one_element),                                                 # sum of one element -> copy of x
    ("mean", reduce_one_element),                                                # mean of one element -> copy of x
    ("prod", reduce_one_element),                                                # prod of one element -> copy of x
    ("amax", reduce_one_element),                                                # amax of one element -> copy of x
    ("amin", reduce_one_element),                                                # amin of one element -> copy of x
    ("any", reduce_one_element),                                                 # any of one element -> x != 0
    ("all", reduce_one_element),                                                 # all of one element -> x != 0
    ("var", var_of_one_element),                                                 # var of one element -> x - x, or nan
    ("argmax", arg_of_one_element),                                              # argmax of one element -> 0
    ("argmin", arg_of_one_element),                                              # argmin of one element -> 0
]


def simplify(graph: Graph) -> Graph:
    return rewrite(graph, RULES_SIMPLIFY)
