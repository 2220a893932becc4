"""Common subexpression elimination by value numbering.

Two nodes are one when they have the same op, the same (already merged) operands, the same
attributes and the same result types; the later one is dropped and its readers read the
earlier. Constants are the same when they hold the same tensor object. Random ops (an
``aten`` node of ``rand``, ``dropout``, ``bernoulli``, ...) are never merged: two draws are
two different values.
"""

from __future__ import annotations

from ..ir import fuel
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from ..ir.rewrite import is_random


def _attr_key(value):
    """A hashable key that tells apart what ``==`` does not: 1 and 1.0 and True, 0.0 and -0.0."""
    if isinstance(value, tuple):
        return tuple(_attr_key(v) for v in value)
    if isinstance(value, float):
        return ("float", value.hex())
    if isinstance(value, Graph):
        return ("graph", id(value))
    return (type(value).__name__, value)


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    seen: dict[tuple, tuple[Value, ...]] = {}

    def number(b: GraphBuilder, node: Node, inputs: list[Value]):
        if node.op == "constant":
            tensor = graph.constants.get(node.name)
            if tensor is None:  # a graph parsed from text: constants are distinct by name
                return None
            key = ("constant", id(tensor), node.types)
            if key not in seen:
                seen[key] = (b.constant(node.name, tensor, node.types[0]),)
            return seen[key]
        if is_random(node):
            return None
        key = (node.op, tuple(inputs), tuple((k, _attr_key(v)) for k, v in node.attrs.items()), node.types)
        if key not in seen or not fuel.consume(f"eliminate_common_subexpressions: {node.op} {node.types[0]}"):
            seen[key] = b.append(Node(node.op, inputs, node.attrs, node.types)).results
        return seen[key]

    out = rebuild(graph, number)
    return graph if len(out.nodes) == len(graph.nodes) else out
