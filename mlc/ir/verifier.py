"""One verifier for every invariant of a graph; run after each pass in tests."""

from __future__ import annotations

import re

import sympy
import torch

from .graph import NAME_RE, Graph, Node, Operand, Value
from .ops import OPS, REQUIRED, Category, InferError, infer_types
from .printer import format_attr, value_names
from .types import DTYPE_NAMES, SymType, TensorType, free_symbols


class VerifyError(ValueError):
    """A graph breaks an IR invariant; the message names the node and the rule."""


_ATTR_TYPES = (bool, int, float, str, type(None), torch.dtype, torch.layout, torch.memory_format, Operand, sympy.Expr)


def _check_attr_value(v, where: str):
    if isinstance(v, Graph):
        raise VerifyError(f"{where}: only a kernel's 'body' may hold a graph")
    if isinstance(v, (tuple, list)):
        for x in v:
            _check_attr_value(x, where)
    elif not isinstance(v, _ATTR_TYPES):
        raise VerifyError(f"{where}: attribute value {v!r} of type {type(v).__name__} is not allowed")


def _symbols_bound_by_inputs(graph: Graph) -> set[sympy.Symbol]:
    bound = set()
    for node in graph.inputs:
        t = node.types[0]
        dims = t.shape if isinstance(t, TensorType) else (t.expr,)
        bound |= {d for d in dims if isinstance(d, sympy.Symbol)}
    return bound


def _check_type(t, w: str, bound: set[sympy.Symbol]):
    """A result or input type: one the text form can print and the runtime can size."""
    if not isinstance(t, (TensorType, SymType)):
        raise VerifyError(f"{w}: result type {t!r} is not a TensorType or SymType")
    if isinstance(t, TensorType):
        if t.dtype not in DTYPE_NAMES:
            raise VerifyError(f"{w}: dtype {t.dtype} has no IR name (known: {', '.join(DTYPE_NAMES.values())})")
        if t.strides is not None and len(t.strides) != t.rank:
            raise VerifyError(f"{w}: {len(t.strides)} strides for rank {t.rank}")
    unbound = free_symbols(t.shape if isinstance(t, TensorType) else (t.expr,)) - bound
    if unbound:
        raise VerifyError(f"{w}: size symbols {sorted(map(str, unbound))} are not bound by any graph input")


def _check_operand(v, what: str, defined: set[Value], graph: Graph):
    if not 0 <= v.index < len(v.node.types):
        # Checked first: such a Value is never defined, and "not defined" would hide why.
        raise VerifyError(f"{what} is result {v.index} of a {v.node.op} node with {len(v.node.types)} results")
    if v not in defined:
        kind = "defined later (not in SSA order)" if any(v.node is n for n in graph.nodes) else "not defined in this graph"
        raise VerifyError(f"{what} is {kind}")


def verify(graph: Graph, _outer_symbols: frozenset = frozenset()) -> Graph:
    """Check ``graph`` and return it; raise ``VerifyError`` on the first broken rule."""
    names = _safe_names(graph)
    defined: set[Value] = set()
    seen_nodes: set[int] = set()
    # A kernel body also sees the symbols of the graph it is in (kernels get them as arguments).
    bound = _symbols_bound_by_inputs(graph) | _outer_symbols

    def where(node: Node) -> str:
        res = ", ".join(f"%{names.get(v, '?')}" for v in node.results)
        return f"{res} = {node.op}"

    # Names the text form prints must read back as the same, distinct names.
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", graph.name):
        raise VerifyError(f"graph name {graph.name!r} is not a valid IR name")
    named = [n for n in (*graph.inputs, *graph.nodes) if n.op in ("input", "constant")]
    seen_names: set[str] = set()
    for node in named:
        if not isinstance(node.name, str) or not NAME_RE.match(node.name):
            raise VerifyError(f"{node.op} name {node.name!r} is not a valid IR name")
        if node.name in seen_names:
            raise VerifyError(f"the name %{node.name} is given to two values")
        seen_names.add(node.name)

    for node in graph.inputs:
        if node.op != "input" or len(node.types) != 1 or node.inputs:
            raise VerifyError(f"graph input %{node.name} must be an 'input' node with one type")
        _check_type(node.types[0], f"graph input %{node.name}", bound)
        defined.add(node.out)
        seen_nodes.add(id(node))

    for node in graph.nodes:
        w = where(node)
        if id(node) in seen_nodes:
            raise VerifyError(f"{w}: node appears twice in the graph")
        seen_nodes.add(id(node))
        if node.op not in OPS:
            raise VerifyError(f"{w}: unknown op '{node.op}'")
        opdef = OPS[node.op]
        if node.op == "input":
            raise VerifyError(f"{w}: 'input' nodes belong in the graph's inputs, not its body")
        for i, v in enumerate(node.inputs):
            _check_operand(v, f"{w}: operand {i}", defined, graph)
        if opdef.arity is not None and len(node.inputs) != opdef.arity:
            raise VerifyError(f"{w}: takes {opdef.arity} operands, got {len(node.inputs)}")
        for key in node.attrs:
            if key not in opdef.attrs:
                raise VerifyError(f"{w}: unknown attribute '{key}' (valid: {', '.join(opdef.attrs) or 'none'})")
            if node.op == "kernel" and key == "body":
                _verify_body(node, w, frozenset(bound))
            else:
                _check_attr_value(node.attrs[key], w)
        for key, default in opdef.attrs.items():
            if default is REQUIRED and key not in node.attrs:
                raise VerifyError(f"{w}: missing required attribute '{key}'")
        if not node.types:
            raise VerifyError(f"{w}: has no result types")
        for t in node.types:
            _check_type(t, w, bound)
        if node.op == "constant":
            # Named (checked above) and typed as given; its tensor is checked at the end.
            if len(node.types) != 1 or not isinstance(node.types[0], TensorType):
                raise VerifyError(f"{w}: a constant has exactly one tensor result")
        elif opdef.category is Category.FALLBACK:
            _verify_fallback(node, w)
        else:
            attrs = {k: node.attrs.get(k, d) for k, d in opdef.attrs.items()}
            try:
                expected = infer_types(node.op, [v.type for v in node.inputs], attrs)
            except InferError as e:
                # Inference errors start with the op's name, which ``w`` already gives.
                msg = str(e).removeprefix(f"{node.op}: ")
                raise VerifyError(f"{w}: {msg}") from e
            if len(expected) != len(node.types) or not all(
                    e.same_value_type(t) for e, t in zip(expected, node.types)):
                raise VerifyError(
                    f"{w}: result type {', '.join(map(str, node.types))} does not match "
                    f"the inferred {', '.join(map(str, expected))}")
        defined.update(node.results)

    for i, v in enumerate(graph.outputs):
        if not isinstance(v, Value):
            raise VerifyError(f"output {i} is a {type(v).__name__}, not a Value")
        if not 0 <= v.index < len(v.node.types) or v not in defined:
            raise VerifyError(f"output {i} is not defined in this graph")
    for node in graph.nodes:
        if node.op != "constant" or not graph.constants:
            continue  # a graph parsed from text has no tensors at all, and that is fine
        if node.name not in graph.constants:
            raise VerifyError(f"constant %{node.name} has no tensor in graph.constants")
        tensor = graph.constants[node.name]
        actual = TensorType(tuple(tensor.shape), tensor.dtype, str(tensor.device))
        if not actual.same_value_type(node.types[0]):
            raise VerifyError(f"constant %{node.name} is typed {node.types[0]} but its tensor is {actual}")
    return graph


def _verify_body(node: Node, w: str, bound: frozenset):
    body = node.attrs["body"]
    if not isinstance(body, Graph):
        raise VerifyError(f"{w}: 'body' must be a graph")
    try:
        verify(body, bound)
    except VerifyError as e:
        raise VerifyError(f"{w} @{body.name}: {e}") from e
    for n in body.nodes:
        if n.op in ("kernel", "constant"):
            raise VerifyError(f"{w} @{body.name}: a kernel's body cannot hold a {n.op}")


def _verify_fallback(node: Node, w: str):
    from .fallback import resolve_target

    target = node.attrs.get("target")
    if not isinstance(target, str):
        raise VerifyError(f"{w}: 'target' must be a string")
    try:
        resolve_target(target)
    except ValueError as e:
        raise VerifyError(f"{w}: {e}") from e
    used = set()

    def walk(t):
        if isinstance(t, Operand):
            used.add(t.index)
        elif isinstance(t, (tuple, list)):
            for x in t:
                walk(x)

    kwargs = node.attrs.get("kwargs", ())
    # call_aten reads kwargs as (name, value) pairs.
    if not isinstance(kwargs, tuple) or not all(
            isinstance(kv, tuple) and len(kv) == 2 and isinstance(kv[0], str) for kv in kwargs):
        raise VerifyError(f"{w}: 'kwargs' must be a list of [\"name\", value] pairs, got {format_attr(kwargs)}")
    walk(node.attrs.get("args", ()))
    walk(kwargs)
    if used != set(range(len(node.inputs))):
        raise VerifyError(f"{w}: operands {sorted(used)} are referenced but it has {len(node.inputs)} inputs")
    pick = node.attrs.get("pick")
    # The reference executor zips the picked items with the results; a length mismatch would drop some silently.
    if pick is not None and len(pick) != len(node.types):
        raise VerifyError(f"{w}: 'pick' selects {len(pick)} results but the node has {len(node.types)} types")


def _safe_names(graph: Graph) -> dict[Value, str]:
    # Names for messages; a broken graph can still be named, since naming reads no operands.
    return value_names(graph)
