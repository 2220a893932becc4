"""Constant folding: evaluate, once at compile time, what depends on constants alone.

A node whose operands are all constants (``constant`` tensors, ``full``, ``arange``, or
nodes folded before it) is run through its op table ``ref`` and replaced:

- by a ``full`` node when every element of the result is the same number (``1e-5 * 2``, or
  any pointwise op or view of ``full`` operands, whatever its size: a ``full`` costs nothing);
- else by a new ``constant`` tensor, named after the constant it came from
  (``fc1.weight_permute``), unless it would be more than ``fold_limit`` times as large as the
  constant tensors it is computed from. ``full`` and ``arange`` count as one element there,
  so broadcasts and arange-like expansions (a causal mask) stay computed in the kernel that
  reads them, and a q/k/v ``cat`` (1x) or a weight transpose or cast (1x) folds.

Never folded: random ops, fused kernels, size arithmetic (``symint``), multi-result nodes,
and graph outputs (the runtime would hand the caller the constant itself, which the caller
may then modify). A symbolic shape folds only into a ``full`` (which takes the shape as is).
"""

from __future__ import annotations

import torch
from torch._subclasses.fake_tensor import unset_fake_temporarily

from ..ir import fuel
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from ..ir.ops import OPS, POINTWISE, VIEWS, Category
from ..ir.rewrite import is_random
from ..ir.types import TensorType, free_symbols
from .manager import PassOption, pass_options

FOLD_LIMIT = PassOption(
    "fold_limit", float, 2.0,
    "folding makes a constant only if it has at most this many times the elements of the constants it comes "
    "from (broadcasts and causal masks stay computed in kernels); a result holding one number everywhere "
    "becomes a `full`; `0` turns folding off", minimum=0)
_UNIFORM_OPS = POINTWISE | VIEWS | {"copy"}  # on operands that each hold one number, so does the result


def _foldable(node: Node) -> bool:
    if len(node.types) != 1 or not isinstance(node.types[0], TensorType) or is_random(node):
        return False
    return OPS[node.op].category not in (Category.SOURCE, Category.CREATION, Category.SYM, Category.KERNEL)


def _static(node: Node) -> bool:
    return not free_symbols(node.types[0].shape) and not any(_symbolic(v) for v in node.attrs.values())


def _symbolic(value) -> bool:
    if isinstance(value, tuple):
        return any(_symbolic(v) for v in value)
    return hasattr(value, "free_symbols")  # a sympy expression


def _uniform_value(t: torch.Tensor):
    """The one number every element of ``t`` holds, or None."""
    if t.numel() == 0 or t.is_complex():
        return None
    first = t.reshape(-1)[0]
    if t.is_floating_point() and (first.isnan() or (t.signbit() != first.signbit()).any()):
        return None
    return first.item() if bool((t == first).all()) else None


@pass_options(FOLD_LIMIT)
def fold_constants(graph: Graph, fold_limit: float = FOLD_LIMIT.default) -> Graph:
    if fold_limit <= 0:
        return graph
    # AOT autograd compiles under a FakeTensorMode, where a folded value (an op on an empty
    # arange, say) would be a FakeTensor, which no kernel can launch with: fold real tensors.
    with unset_fake_temporarily():
        return _fold(graph, fold_limit)


def _fold(graph: Graph, fold_limit: float) -> Graph:
    outputs = {v.node for v in graph.outputs}
    tensors: dict[Value, torch.Tensor] = {}  # values computed so far, in the new graph
    pending: dict[Value, Node] = {}  # constant values not (yet) computed: `full`, `arange`, ones too big to fold
    cost: dict[Value, int] = {}  # elements of the constant tensors each constant value is computed from
    origin: dict[Value, str] = {}  # the name of the constant it came from, for readable names

    def value(v: Value) -> torch.Tensor:
        if v not in tensors:
            node = pending[v]
            tensors[v] = _evaluate(node, [value(x) for x in node.inputs])
        return tensors[v]

    def keep(b: GraphBuilder, node: Node, inputs: list[Value], elements: int):
        new = b.append(Node(node.op, inputs, node.attrs, node.types)).out
        pending[new], cost[new] = new.node, elements
        return (new,)

    def fold(b: GraphBuilder, node: Node, inputs: list[Value]):
        if node.op == "constant":
            new = b.constant(node.name, graph.constants.get(node.name), node.types[0])
            if node.name in graph.constants:
                tensors[new], cost[new], origin[new] = graph.constants[node.name], node.types[0].numel, node.name
            return (new,)
        if node.op == "full" and not _symbolic(node.attrs["value"]) or node.op == "arange" and _static(node):
            return keep(b, node, inputs, 1)  # a `full` of a symbolic shape is still one number
        if not inputs or not all(v in tensors or v in pending for v in inputs) or not _foldable(node):
            return None
        t = node.types[0]
        elements = sum(cost[v] for v in inputs)
        if node in outputs:
            return keep(b, node, inputs, elements)
        try:
            if node.op in _UNIFORM_OPS and all(v.node.op == "full" for v in inputs):
                number = _uniform_result(node, [v.node for v in inputs])
            elif _static(node) and all(_static(v.node) for v in inputs) and t.numel <= fold_limit * max(1, elements):
                result = _evaluate(node, [value(v) for v in inputs])
                number = _uniform_value(result)
            else:
                return keep(b, node, inputs, elements)
        except Exception:  # noqa: BLE001 - a ref that fails here fails at run time too; leave it there
            return keep(b, node, inputs, elements)
        if not fuel.consume(lambda: f"fold_constants: {node.op} {t} into a " + ("full" if number is not None
                                                                               else "constant")):
            return keep(b, node, inputs, elements)
        if number is not None:
            new = b.add("full", (), {"shape": t.shape, "value": number, "dtype": t.dtype, "device": t.device}).out
            pending[new], cost[new] = new.node, 1
            return (new,)
        base = next((origin[v] for v in inputs if v in origin), "folded")
        new = b.constant(f"{base}_{node.op}", result.contiguous(), t.with_())
        tensors[new], cost[new], origin[new] = result, t.numel, base
        return (new,)

    return rebuild(graph, fold)


def _uniform_result(node: Node, fulls: list[Node]):
    """The number in every element of ``node``'s result, all of whose operands are ``full``."""
    numbers = [f.attrs["value"] for f in fulls]
    if node.op in VIEWS or node.op == "copy":
        return numbers[0]
    # One element per operand, at the operand's rank: promotion treats 0-d and n-d tensors apart.
    operands = [torch.full((1,) * len(f.types[0].shape), x, dtype=f.attrs["dtype"]) for f, x in zip(fulls, numbers)]
    with torch.no_grad():
        out = OPS[node.op].ref(*operands, **node.attrs)
    if out.dtype != node.types[0].dtype:
        raise ValueError(f"{node.op} gave {out.dtype}, not {node.types[0].dtype}")
    return out.reshape(-1)[0].item()


def _evaluate(node: Node, operands: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():  # frozen parameters require grad; their folded values must not
        out = OPS[node.op].ref(*operands, **node.attrs)
    t = node.types[0]
    if tuple(out.shape) != tuple(t.shape) or out.dtype != t.dtype:
        raise ValueError(f"{node.op} evaluated to {out.dtype}{list(out.shape)}, not {t}")
    return out.detach()
