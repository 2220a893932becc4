"""FX (ATen) graphs -> mlc IR.

Each ATen op maps to mlc ops through one row of ``ATEN_TO_MLC``. An op with no row, or
whose lowering disagrees with ATen's own result type, becomes an ``aten`` fallback node
run by PyTorch, with a warning that names it as what it is: an ATen op, or a custom op
(``torch.library``). A call that no fallback node can make (a higher-order op, a Python
function) leaves the whole graph to PyTorch, in Python (``UnsupportedGraph``). Symbolic
sizes (SymInts) become sympy expressions over size symbols: in types, in attributes, and as
``symint`` values.
"""

from __future__ import annotations

import operator
import warnings
from dataclasses import dataclass, replace
from typing import Any

import sympy
import torch
import torch.fx

from ..ir.fallback import custom_op_name, fallback_kind
from ..ir.graph import Graph, GraphBuilder, Operand, Value
from ..ir.types import SymType, TensorType, make_dim
from .lowerings import ATEN_TO_MLC, IGNORED, Lowerer, LoweringError


class UnsupportedGraph(Exception):
    """The graph uses something mlc cannot represent; the backend runs it with PyTorch."""


@dataclass(frozen=True)
class ImportedGraph:
    """An IR graph and how to rebuild the FX graph's outputs from the IR graph's.

    ``output_spec[i]`` is an index into ``graph.outputs``, or ``("const", v)`` for an output
    that is a constant (``None`` gradients, static sizes).
    """

    graph: Graph
    output_spec: tuple


def sym_to_expr(value) -> int | sympy.Expr:
    """A torch SymInt (or int) as an int or a sympy expression over size symbols."""
    if isinstance(value, (int, bool)) and not isinstance(value, torch.SymInt):
        return int(value)
    if isinstance(value, torch.SymInt):
        as_int = value.node.maybe_as_int()
        if as_int is not None:
            return as_int
        return make_dim(_plain_sympy(value.node.expr))
    raise TypeError(f"not a size: {value!r}")


def _plain_sympy(expr: sympy.Expr) -> sympy.Expr:
    """Replace torch's sympy functions (FloorDiv, ...) by standard sympy ones."""
    from torch.utils._sympy.functions import CeilDiv, CleanDiv, FloorDiv, ModularIndexing

    expr = expr.replace(lambda e: isinstance(e, (FloorDiv, CleanDiv)), lambda e: sympy.floor(e.args[0] / e.args[1]))
    expr = expr.replace(lambda e: isinstance(e, CeilDiv), lambda e: sympy.ceiling(e.args[0] / e.args[1]))
    expr = expr.replace(lambda e: isinstance(e, ModularIndexing),
                        lambda e: sympy.Mod(sympy.floor(e.args[0] / e.args[1]), e.args[2]))
    return expr


def tensor_type(t: torch.Tensor) -> TensorType:
    return TensorType(tuple(sym_to_expr(d) for d in t.shape), t.dtype, str(t.device),
                      tuple(sym_to_expr(s) for s in t.stride()))


def _is_sym(v) -> bool:
    return isinstance(v, (torch.SymInt, int)) and not isinstance(v, bool)


def import_fx(gm: torch.fx.GraphModule, name: str = "main") -> ImportedGraph:
    """Convert an AOT-autograd ATen graph to an IR graph."""
    b = GraphBuilder(name)
    L = Lowerer(b)
    env: dict[torch.fx.Node, Any] = {}  # fx node -> Value, tuple of Values, sympy expr or int
    for node in gm.graph.nodes:
        val = node.meta.get("val")
        if node.op == "placeholder":
            if isinstance(val, torch.Tensor):
                env[node] = b.input(node.name, tensor_type(val))
            elif _is_sym(val):
                # A size (symbolic, or static passed as an argument): the input binds its symbol
                # at run time, and lowerings take it as an expression like any other size (a
                # backward graph's slice bounds are such inputs).
                env[node] = sym_to_expr(val)
                b.input(node.name, SymType(sym_to_expr(val)))
            else:
                raise UnsupportedGraph(f"input {node.name} of type {type(val).__name__} is not a tensor or size")
        elif node.op == "call_function":
            env[node] = _import_call(L, node, env)
        elif node.op == "output":
            return _finish(L, node, env)
        elif node.op == "get_attr":
            tensor = getattr(gm, node.target)
            env[node] = b.constant(node.target, tensor)
        else:
            raise UnsupportedGraph(f"FX node kind '{node.op}' ({node.name}) is not supported")
    raise UnsupportedGraph("FX graph has no output node")


def _import_call(L: Lowerer, node: torch.fx.Node, env) -> Any:
    val = node.meta.get("val")
    target = node.target
    if target is operator.getitem:
        base, index = node.args
        return env[base][index]
    if _is_sym(val) and not isinstance(target, torch._ops.OpOverload) or target in SIZE_OPS:
        return sym_to_expr(val)  # size arithmetic: folded into expressions, no IR node
    if target in IGNORED:
        return None
    args = torch.fx.map_arg(node.args, lambda n: env[n])
    kwargs = torch.fx.map_arg(node.kwargs, lambda n: env[n])
    if any(isinstance(a, complex) for a in torch.utils._pytree.tree_leaves((args, kwargs))):
        # Attributes are real numbers (the text form has no complex ones), so neither a
        # lowering (a `full` of the scalar) nor a fallback node can hold x + 2j.
        raise UnsupportedGraph(f"{target} ({node.name}) takes a complex scalar")
    lowering = ATEN_TO_MLC.get(target)
    if lowering is not None:
        mark = len(L.b.nodes)
        try:
            result = lowering(L, node, *args, **kwargs)
            _check_types(result, val, target)
            return result
        except LoweringError as e:
            del L.b.nodes[mark:]  # drop what the failed lowering built
            reason = str(e)
    else:
        reason = "no lowering"
    if not isinstance(target, torch._ops.OpOverload):
        # A higher-order op (control flow, a mutating custom op's auto_functionalized) or a
        # Python function: no fallback node can call it, so the whole graph stays in Python.
        what = "a higher-order op" if isinstance(target, torch._ops.HigherOrderOperator) else "a Python function"
        raise UnsupportedGraph(f"call to {target} ({node.name}) is {what}, not an ATen or custom op (a Python-level "
                               f"fallback: the graph runs as PyTorch traced it)")
    if fallback_kind(str(target)) == "custom op":
        warnings.warn(f"mlc: {target} is a custom op ({custom_op_name(str(target))}, torch.library); PyTorch runs it, "
                      f"outside any kernel (fallback: {reason})", stacklevel=2)
    else:
        warnings.warn(f"mlc: {target} runs through ATen (fallback: {reason})", stacklevel=2)
    return fallback(L, str(target), args, kwargs, val)


SIZE_OPS = {torch.ops.aten.sym_size.int, torch.ops.aten.sym_numel.default, torch.ops.aten.sym_stride.int,
            torch.ops.aten.sym_storage_offset.default}


def _check_types(result, val, target):
    results = result if isinstance(result, tuple) else (result,)
    vals = val if isinstance(val, (tuple, list)) else (val,)
    if len(results) != len(vals):
        raise LoweringError(f"lowering of {target} gave {len(results)} results, ATen gives {len(vals)}")
    for r, v in zip(results, vals):
        if isinstance(v, torch.Tensor):
            if not isinstance(r, Value) or not tensor_type(v).same_value_type(r.type):
                got = r.type if isinstance(r, Value) else r
                raise LoweringError(f"lowering of {target} gave {got}, ATen gives {tensor_type(v)}")


def fallback(L: Lowerer, target: str, args, kwargs, val) -> Any:
    """An ``aten`` node that calls ``target``; its results are the tensor parts of ``val``."""
    operands: list[Value] = []

    def template(a):
        if isinstance(a, Value):
            if isinstance(a.type, SymType):
                return a.type.expr
            operands.append(a)
            return Operand(len(operands) - 1)
        if isinstance(a, (list, tuple)):
            return tuple(template(x) for x in a)
        if isinstance(a, torch.device):
            return str(a)
        return a

    args_t = template(args)
    kwargs_t = tuple((k, template(v)) for k, v in kwargs.items())
    vals = val if isinstance(val, (tuple, list)) else (val,)
    pick = tuple(i for i, v in enumerate(vals) if isinstance(v, torch.Tensor))
    if not pick:
        raise UnsupportedGraph(f"{target} returns no tensor; mlc only compiles functional graphs")
    types = [tensor_type(vals[i]).with_() for i in pick]
    attrs = {"target": target, "args": args_t, "kwargs": kwargs_t}
    if isinstance(val, (tuple, list)):
        attrs["pick"] = pick
    node = L.b.add("aten", operands, attrs, types)
    if not isinstance(val, (tuple, list)):
        return node.out
    out: list[Any] = [None] * len(vals)
    for i, v in zip(pick, node.results):
        out[i] = v
    return tuple(out)


def _finish(L: Lowerer, node: torch.fx.Node, env) -> ImportedGraph:
    outputs: list[Value] = []
    spec: list = []
    for a in torch.fx.node.map_arg(node.args[0], lambda n: env[n]):
        if isinstance(a, Value):
            spec.append(len(outputs))
            outputs.append(a)
        elif isinstance(a, sympy.Expr):
            spec.append(len(outputs))
            outputs.append(L.b.add("symint", (), {"expr": a}).out)
        elif a is None or isinstance(a, (int, float, bool)):
            spec.append(("const", a))
        else:
            raise UnsupportedGraph(f"graph output of type {type(a).__name__} is not supported")
    return ImportedGraph(replace(L.b.build(outputs), notes=tuple(L.notes)), tuple(spec))
