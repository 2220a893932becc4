"""The reference executor: runs any IR graph node by node with the op table's torch code.

It is the ground truth that compiled kernels are checked against, and what a compiled
callable uses for work that has no kernel yet.
"""

from __future__ import annotations

from typing import Any, Sequence

import sympy
import torch

from .graph import Graph, Value
from .ops import OPS
from .types import SymType, TensorType


def bind_symbols(graph: Graph, args: Sequence[Any]) -> dict[sympy.Symbol, int]:
    """Values of the size symbols, read off the inputs' shapes and symbolic-int inputs."""
    if len(args) != len(graph.inputs):
        raise TypeError(f"graph @{graph.name} takes {len(graph.inputs)} inputs, got {len(args)}")
    env: dict[sympy.Symbol, int] = {}
    for node, arg in zip(graph.inputs, args):
        t = node.types[0]
        pairs = zip(t.shape, arg.shape) if isinstance(t, TensorType) else [(t.expr, arg)]
        for dim, actual in pairs:
            if isinstance(dim, sympy.Symbol):
                if env.setdefault(dim, int(actual)) != int(actual):
                    raise ValueError(f"size symbol {dim} is {env[dim]} in one input and {int(actual)} in another")
    return env


def resolve(value, env: dict[sympy.Symbol, int]):
    """Substitute size symbols in an attribute value."""
    if isinstance(value, sympy.Expr):
        return int(value.xreplace(env))
    if isinstance(value, tuple):
        return tuple(resolve(v, env) for v in value)
    return value


def _has_symbols(value) -> bool:
    if isinstance(value, sympy.Expr):
        return True
    return isinstance(value, tuple) and any(_has_symbols(v) for v in value)


def run_reference(graph: Graph, args: Sequence[Any], outer: dict | None = None) -> list[Any]:
    """Run ``graph`` op by op; ``outer`` holds size symbols bound by an enclosing graph."""
    env = {**(outer or {}), **bind_symbols(graph, args)}
    values: dict[Value, Any] = {n.out: a for n, a in zip(graph.inputs, args)}
    for node in graph.nodes:
        if node.op == "constant":
            if node.name not in graph.constants:
                raise RuntimeError(f"constant %{node.name} has no tensor (was the graph parsed without constants?)")
            values[node.out] = graph.constants[node.name]
            continue
        if node.op == "symint":
            values[node.out] = resolve(node.types[0].expr, env)
            continue
        if node.op == "kernel":  # its body sees this graph's size symbols (kernels get them as arguments)
            out = run_reference(node.attrs["body"], [values[v] for v in node.inputs], env)
            out = out[0] if len(out) == 1 else tuple(out)
        else:
            attrs = {k: resolve(v, env) if _has_symbols(v) else v for k, v in node.attrs.items()}
            out = OPS[node.op].ref(*(values[v] for v in node.inputs), **attrs)
        if len(node.types) == 1:
            values[node.out] = out
        else:
            for v, o in zip(node.results, out):
                values[v] = o
    return [values[v] for v in graph.outputs]


def example_inputs(graph: Graph, sizes: dict[str, int] | None = None, seed: int = 0) -> list[Any]:
    """Random inputs that fit a graph's input types (symbols take ``sizes`` or 3)."""
    gen = torch.Generator().manual_seed(seed)
    sizes = sizes or {}

    def concrete(d):
        return int(d.xreplace({s: sizes.get(str(s), 3) for s in d.free_symbols})) if isinstance(d, sympy.Expr) else d

    out = []
    for node in graph.inputs:
        t = node.types[0]
        if isinstance(t, SymType):
            out.append(concrete(t.expr))
            continue
        shape = tuple(concrete(d) for d in t.shape)
        if t.dtype.is_floating_point:
            out.append(torch.randn(shape, generator=gen).to(t.dtype))
        elif t.dtype == torch.bool:
            out.append(torch.randint(0, 2, shape, generator=gen).bool())
        else:
            out.append(torch.randint(0, 8, shape, generator=gen).to(t.dtype))
    return out
