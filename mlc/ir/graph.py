"""Nodes, values and graphs: the IR's data structures.

A ``Node`` is immutable: ``(op, inputs, attrs, types)``. A pass never edits one; it builds
a new graph with ``GraphBuilder``, through ``rebuild`` (the one graph-copy loop, with hooks
for nodes and inputs), so every graph a pass sees is consistent. A ``Value`` names one
result of a node.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Callable, Iterable, Mapping

import torch

from .types import SymType, TensorType, Type

NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*\Z")


@dataclass(frozen=True)
class Operand:
    """In a fallback node's argument template: 'the i-th tensor input goes here'."""

    index: int

    def __str__(self) -> str:
        return f"${self.index}"


def _freeze(value):
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


@dataclass(frozen=True, eq=False)
class Node:
    """One operation. Equality is identity: two nodes are the same only if they are one."""

    op: str
    inputs: tuple["Value", ...]
    attrs: Mapping[str, Any]
    types: tuple[Type, ...]
    name: str | None = None  # inputs and constants keep their names in the text form

    def __post_init__(self):
        object.__setattr__(self, "inputs", tuple(self.inputs))
        # Lists become tuples: the parser reads ``[...]`` as a tuple, so a node built with
        # ``shape=[s0, 8]`` must hold the same value as its parsed copy (and be immutable).
        attrs = {k: _freeze(v) for k, v in self.attrs.items()}
        from .ops import OPS, complete_attrs

        if self.op in OPS:  # every node holds every attribute: the executor passes them all to the op's ref
            attrs = complete_attrs(self.op, attrs)
        object.__setattr__(self, "attrs", MappingProxyType(attrs))
        object.__setattr__(self, "types", tuple(self.types))

    @property
    def out(self) -> "Value":
        """The node's only result."""
        if len(self.types) != 1:
            raise ValueError(f"{self.op} has {len(self.types)} results; use node.results")
        return Value(self, 0)

    @property
    def results(self) -> tuple["Value", ...]:
        return tuple(Value(self, i) for i in range(len(self.types)))

    def __repr__(self) -> str:
        return f"Node({self.op}, {len(self.inputs)} inputs, {[str(t) for t in self.types]})"


@dataclass(frozen=True)
class Value:
    node: Node
    index: int = 0

    @property
    def type(self) -> Type:
        return self.node.types[self.index]

    def __repr__(self) -> str:
        return f"Value({self.node.op}#{self.index}: {self.type})"


@dataclass(frozen=True, eq=False)
class Graph:
    """A function in SSA form: typed inputs, nodes in order, outputs.

    ``constants`` maps the name of each ``constant`` node to its tensor, held by reference.
    """

    name: str
    inputs: tuple[Node, ...]
    nodes: tuple[Node, ...]
    outputs: tuple[Value, ...]
    constants: Mapping[str, torch.Tensor] = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # decisions a pass wants a user to be able to see (not printed)

    def __str__(self) -> str:
        from .printer import print_graph

        return print_graph(self)

    def users(self) -> dict[Node, list[Node]]:
        """For each node, the nodes that read one of its results (in order, with repeats)."""
        out: dict[Node, list[Node]] = {n: [] for n in (*self.inputs, *self.nodes)}
        for n in self.nodes:
            for v in n.inputs:
                out.setdefault(v.node, []).append(n)
        return out

    def count(self, op: str) -> int:
        return sum(1 for n in self.nodes if n.op == op)


class GraphBuilder:
    """Builds a graph node by node; result types are inferred from the op table unless given."""

    def __init__(self, name: str = "main", constants: Mapping[str, torch.Tensor] | None = None):
        self.name = name
        self.inputs: list[Node] = []
        self.nodes: list[Node] = []
        self.constants: dict[str, torch.Tensor] = dict(constants or {})
        self._names: set[str] = set()

    def _unique(self, name: str) -> str:
        name = re.sub(r"[^A-Za-z0-9_.]", "_", name)
        if not re.match(r"[A-Za-z_]", name):
            name = "v" + name
        base, i = name, 1
        while name in self._names:
            name, i = f"{base}_{i}", i + 1
        self._names.add(name)
        return name

    def input(self, name: str, type: Type) -> Value:
        node = Node("input", (), {}, (type,), self._unique(name))
        self.inputs.append(node)
        return node.out

    def constant(self, name: str, tensor: torch.Tensor | None, type: TensorType | None = None) -> Value:
        """A graph-level constant; ``tensor`` may be None for a graph parsed from text."""
        if type is None:
            type = TensorType(tuple(tensor.shape), tensor.dtype, str(tensor.device), tuple(tensor.stride()))
        name = self._unique(name)
        if tensor is not None:
            self.constants[name] = tensor
        node = Node("constant", (), {}, (type,), name)
        self.nodes.append(node)
        return node.out

    def add(self, op: str, inputs: Iterable[Value] = (), attrs: Mapping[str, Any] | None = None,
            types: Iterable[Type] | Type | None = None) -> Node:
        from .ops import complete_attrs, infer_types

        inputs, attrs = tuple(inputs), complete_attrs(op, dict(attrs or {}))
        if types is None:
            types = infer_types(op, [v.type for v in inputs], attrs)
        elif isinstance(types, (TensorType, SymType)):
            types = (types,)
        node = Node(op, inputs, attrs, tuple(types))
        self.nodes.append(node)
        return node

    def op(self, op: str, *inputs: Value, **attrs) -> Value:
        """Shorthand for a single-result node with inferred type: ``b.op("add", x, y)``."""
        return self.add(op, inputs, attrs).out

    def append(self, node: Node) -> Node:
        self.nodes.append(node)
        return node

    def build(self, outputs: Iterable[Value]) -> Graph:
        return Graph(self.name, tuple(self.inputs), tuple(self.nodes), tuple(outputs), dict(self.constants))


Rewrite = Callable[[GraphBuilder, Node, list[Value]], "tuple[Value, ...] | None"]


def rebuild(graph: Graph, rewrite: Rewrite | None = None, *, input: Callable[[GraphBuilder, Node], Value] | None = None,
            nodes: Iterable[Node] | None = None, alias: Mapping[Value, Value] | None = None) -> Graph:
    """Copy ``graph``: inputs, then nodes (constants keep their tensors), then outputs.

    ``rewrite(builder, node, new_inputs)`` returns the replacement results for ``node`` (built
    with ``builder``), or None to keep the node as it is (with its inputs remapped).
    ``input(builder, node)`` returns what stands for an input (default: an input of the same
    name and type; a constant, for freezing). ``nodes`` are the nodes to copy, in this order
    (default: ``graph.nodes``); each reads values copied before it. ``alias`` maps values that
    have no copy to the values to read instead (fusion: a region's results to its kernel's).
    The new graph has no notes: a pass adds its own (see ``run_passes``).
    """
    b = GraphBuilder(graph.name)
    env: dict[Value, Value] = {}
    alias = alias or {}
    for node in graph.inputs:
        env[node.out] = input(b, node) if input is not None else b.input(node.name, node.types[0])
    for node in graph.nodes if nodes is None else nodes:
        new_inputs = [env[alias.get(v, v)] for v in node.inputs]
        results = rewrite(b, node, new_inputs) if rewrite is not None else None
        if results is None:
            if node.op == "constant":
                results = (b.constant(node.name, graph.constants.get(node.name), node.types[0]),)
            else:
                results = b.append(Node(node.op, new_inputs, node.attrs, node.types)).results
        env.update(zip(node.results, results))
    return b.build(env[alias.get(v, v)] for v in graph.outputs)
