"""The IR's text form: one SSA line per node, types inline.

    graph @forward(%x: f32[s0,768], %w: f32[768,3072]) {
      %0 = mm(%x, %w) : f32[s0,3072]
      %1 = gelu(%0) {approximate="tanh"} : f32[s0,3072]
      return %1
    }

Inputs and constants print by name; other results are numbered in order. ``parser.parse``
reads this text back, so that ``str(parse(str(g))) == str(g)``.
"""

from __future__ import annotations

import json
import math

import sympy
import torch

from .graph import Graph, Operand, Value
from .types import DTYPES_BY_NAME, dim_str, dtype_name


def format_attr(v) -> str:
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        text = repr(v)
        return text if any(c in text for c in ".e") else text + ".0"
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, torch.dtype):
        return dtype_name(v)
    if isinstance(v, (torch.layout, torch.memory_format)):
        return str(v)
    if isinstance(v, Operand):
        return str(v)
    if isinstance(v, sympy.Expr):
        text = dim_str(v)
        # A size symbol may be spelled like a dtype (torch names unbacked sizes u0, u1, ..., u8);
        # bare, the parser would read it back as that dtype, so parenthesize it.
        return f"({text})" if text in DTYPES_BY_NAME else text
    if isinstance(v, (tuple, list)):
        return "[" + ", ".join(format_attr(x) for x in v) + "]"
    raise TypeError(f"attribute value {v!r} of type {type(v).__name__} has no text form")


def format_attrs(op: str, attrs) -> str:
    """Attributes that differ from the op's defaults (nodes hold all of them)."""
    from .ops import OPS, is_default_attr

    shown = {k: v for k, v in attrs.items() if not (op in OPS and is_default_attr(op, k, v))}
    if not shown:
        return ""
    # In the op table's order (unknown keys last), as the parser and builder store them:
    # the text must not depend on the order a node's attrs happened to be given in.
    order = list(OPS[op].attrs) if op in OPS else []
    keys = sorted(shown, key=lambda k: order.index(k) if k in order else len(order))
    return " {" + ", ".join(f"{k}={format_attr(shown[k])}" for k in keys) + "}"


def value_names(graph: Graph, names: dict[Value, str] | None = None, counter: list[int] | None = None,
                outer: list[str] | None = None) -> dict[Value, str]:
    """Names for every value: inputs and constants by name, the rest numbered in order.

    A kernel's body continues the numbering, and its inputs take the names of the kernel's
    operands (``outer``), so a dump reads as one listing.
    """
    names = {} if names is None else names
    counter = [0] if counter is None else counter
    for k, node in enumerate(graph.inputs):
        names[node.out] = outer[k] if outer is not None and k < len(outer) else node.name
    for node in graph.nodes:
        if node.results and node.results[0] in names:
            continue  # a node listed twice (a broken graph, for the verifier's message) keeps its first name
        if node.name is not None and len(node.types) == 1:
            names[node.out] = node.name
            continue
        for v in node.results:
            names[v] = str(counter[0])
            counter[0] += 1
        body = node.attrs.get("body") if node.op == "kernel" else None
        if isinstance(body, Graph):
            value_names(body, names, counter, [names.get(v, "?") for v in node.inputs])
    return names


def _print_nodes(graph: Graph, names: dict[Value, str], indent: str, lines: list[str]):
    for node in graph.nodes:
        results = ", ".join(f"%{names[v]}" for v in node.results)
        operands = "(" + ", ".join(f"%{names.get(v, '?')}" for v in node.inputs) + ")" if node.inputs else ""
        types = ", ".join(str(t) for t in node.types)
        body = node.attrs.get("body") if node.op == "kernel" else None
        if isinstance(body, Graph):
            lines.append(f"{indent}{results} = kernel @{body.name}{operands or '()'} : {types} {{")
            _print_nodes(body, names, indent + "  ", lines)
            lines.append(f"{indent}  yield " + ", ".join(f"%{names[v]}" for v in body.outputs))
            lines.append(f"{indent}}}")
            continue
        lines.append(f"{indent}{results} = {node.op}{operands}{format_attrs(node.op, node.attrs)} : {types}")


def print_graph(graph: Graph) -> str:
    names = value_names(graph)
    args = ", ".join(f"%{n.name}: {n.types[0]}" for n in graph.inputs)
    lines = [f"graph @{graph.name}({args}) {{"]
    _print_nodes(graph, names, "  ", lines)
    lines.append("  return" + ("" if not graph.outputs else " " + ", ".join(f"%{names[v]}" for v in graph.outputs)))
    lines.append("}")
    return "\n".join(lines)
