"""Drop nodes whose results nothing uses. Every mlc op is pure, fallbacks included,
since AOT autograd hands mlc functional graphs."""

from __future__ import annotations

from ..ir.graph import Graph, Node


def eliminate_dead_code(graph: Graph) -> Graph:
    live: set[Node] = {v.node for v in graph.outputs}
    for node in reversed(graph.nodes):
        if node in live:
            live.update(v.node for v in node.inputs)
    nodes = tuple(n for n in graph.nodes if n in live)
    if len(nodes) == len(graph.nodes):
        return graph
    constants = {n.name: graph.constants[n.name] for n in nodes if n.op == "constant" and n.name in graph.constants}
    return Graph(graph.name, graph.inputs, nodes, graph.outputs, constants)
