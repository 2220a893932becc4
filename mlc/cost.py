"""The cost model: bytes through global memory, FLOPs and launches, for mlc and for eager.

A kernel reads each of its inputs once and writes each output once (an ideal cache: a
broadcast bias is read once, not once per row; an input that is gathered from is counted
at most at the size of what is gathered). Ops that run through torch (matmuls, fallbacks,
anything not in a kernel) are one launch each, reading their inputs and writing their
outputs; views cost nothing. Eager PyTorch is counted the same way, one launch per non-view
ATen op, by running the model under a ``TorchDispatchMode``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from .ir.graph import Graph, Node
from .ir.ops import OPS, Category
from .ir.types import TensorType

_TRANSCENDENTAL = {"exp", "exp2", "expm1", "log", "log2", "log10", "log1p", "sqrt", "rsqrt", "sin", "cos", "tanh",
                   "sigmoid", "erf", "erfc", "gelu", "silu"}


@dataclass(frozen=True)
class GPU:
    name: str
    bandwidth: float  # bytes / s
    flops: float  # dense fp16/bf16 tensor-core FLOP / s
    launch: float  # seconds of overhead per kernel launch


GPUS = {
    "H100": GPU("H100 SXM", 3.35e12, 989e12, 4e-6),
    "A100": GPU("A100 SXM 80GB", 2.04e12, 312e12, 4e-6),
}


@dataclass
class Cost:
    launches: int = 0
    bytes: int = 0
    flops: int = 0
    items: list[tuple[str, int, int]] = field(default_factory=list)  # (name, bytes, flops)

    def add(self, name: str, nbytes: int, flops: int):
        self.launches += 1
        self.bytes += nbytes
        self.flops += flops
        self.items.append((name, nbytes, flops))

    def time(self, gpu: str = "H100") -> float:
        """Modeled seconds on ``gpu``: each launch bound by bytes or FLOPs, plus launch overhead."""
        g = GPUS[gpu]
        return sum(max(b / g.bandwidth, f / g.flops) + g.launch for _, b, f in self.items)


def _n(d, env) -> int:
    return int(d.xreplace(env)) if isinstance(d, sympy.Expr) else int(d)


def _numel(t: TensorType, env) -> int:
    out = 1
    for d in t.shape:
        out *= _n(d, env)
    return out


def _bytes(t, env) -> int:
    return _numel(t, env) * t.itemsize if isinstance(t, TensorType) else 0


def node_flops(node: Node, env) -> int:
    cat = OPS[node.op].category
    if cat is Category.MATMUL:
        a, b = (v.type for v in node.inputs)
        k = _n(a.shape[-1], env)
        return 2 * _numel(node.types[0], env) * k
    if cat is Category.POINTWISE:
        return _numel(node.types[0], env) * (4 if node.op in _TRANSCENDENTAL else 1)
    if cat is Category.REDUCTION:
        return _numel(node.inputs[0].type, env) * (2 if node.op == "var" else 1)
    return 0


def kernel_cost(node: Node, env) -> tuple[int, int]:
    """(bytes, flops) of one ``kernel`` node."""
    body: Graph = node.attrs["body"]
    space = max(_numel(v.type, env) for v in body.outputs)
    for n in body.nodes:
        if OPS[n.op].category in (Category.REDUCTION, Category.MATMUL):
            space = max([space] + [_numel(v.type, env) for v in n.inputs])
    read = sum(min(_numel(v.type, env), space) * v.type.itemsize for v in node.inputs)
    written = sum(_bytes(t, env) for t in node.types)
    return read + written, sum(node_flops(n, env) for n in body.nodes)


def graph_cost(graph: Graph, env: dict) -> Cost:
    """The modeled cost of one call of a (fused) graph, with size symbols bound by ``env``."""
    cost = Cost()
    for node in graph.nodes:
        cat = OPS[node.op].category
        if node.op == "kernel":
            nbytes, flops = kernel_cost(node, env)
            cost.add(node.attrs["body"].name, nbytes, flops)
        elif cat in (Category.VIEW, Category.SOURCE, Category.SYM):
            continue
        else:
            nbytes = sum(_bytes(v.type, env) for v in node.inputs) + sum(_bytes(t, env) for t in node.types)
            cost.add(node.op if node.op != "aten" else node.attrs["target"], nbytes, node_flops(node, env))
    return cost


_VIEW_OPS = {"view", "_unsafe_view", "reshape", "permute", "expand", "slice", "select", "t", "transpose",
             "unsqueeze", "squeeze", "alias", "as_strided", "split", "split_with_sizes", "unbind", "detach",
             "_reshape_alias", "view_as", "expand_as", "narrow", "chunk", "flatten", "unflatten", "movedim",
             "lift_fresh", "_to_copy_view", "diagonal", "unfold", "real", "imag", "view_as_real"}
_FREE_OPS = {"sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "is_same_size", "_local_scalar_dense",
             "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "set_", "resize_",
             "_has_compatible_shallow_copy_type"}


class EagerCounter(TorchDispatchMode):
    """Counts launches, bytes and FLOPs of eager PyTorch: one launch per non-view ATen op."""

    def __init__(self):
        super().__init__()
        self.cost = Cost()

    @classmethod
    def is_infra_mode(cls) -> bool:
        return True  # or Dynamo would run compiled functions eagerly while the mode is active

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in _VIEW_OPS or name in _FREE_OPS or func.is_view:
            return out
        tensors = [a for a in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(a, torch.Tensor)]
        outs = [o for o in torch.utils._pytree.tree_leaves(out) if isinstance(o, torch.Tensor)]
        nbytes = sum(t.numel() * t.element_size() for t in tensors + outs)
        flops = 0
        if name in ("mm", "bmm", "addmm", "baddbmm", "matmul", "linear"):
            k = tensors[-1].shape[-2] if name in ("mm", "bmm", "addmm", "baddbmm") else tensors[0].shape[-1]
            flops = 2 * outs[0].numel() * int(k)
        elif outs:
            flops = max(o.numel() for o in outs)
        self.cost.add(str(func), nbytes, flops)
        return out


def count_eager(fn, *args) -> Cost:
    with torch.no_grad(), EagerCounter() as counter:
        fn(*args)
    return counter.cost
