"""The rewrite driver: applies a list of local rules to a graph until none fires.

A rule is ``(op, fn)``: for each node of that op, ``fn(node, *inputs)`` returns

- ``None``: the rule does not apply;
- a ``Value`` already in the new graph (usually one of ``inputs``, or a value behind them);
- ``make(op, *inputs, **attrs)``: a new node, whose type the driver infers from the op table;
  an input may itself be a ``make(...)`` (``make("view", make("convert", x, dtype=...), ...)``).

``node`` is the node with its inputs already rewritten, so a rule reads producers through
``inputs[i].node``. The driver applies a replacement only when its type is exactly the
node's (same shape, dtype and device): a rule never has to prove that broadcasting or
promotion leaves the type alone, the driver checks it. A new node is itself offered to the
rules again, and the whole graph is swept until a sweep changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from . import fuel
from .graph import Graph, GraphBuilder, Node, Value, rebuild
from .ops import InferError, infer_types


@dataclass(frozen=True)
class Make:
    """A node a rule asks for: built by the driver, typed by the op table."""

    op: str
    inputs: tuple["Value | Make", ...]
    attrs: dict[str, Any]


def make(op: str, *inputs: "Value | Make", **attrs) -> Make:
    return Make(op, inputs, attrs)


Rule = tuple[str, Callable[..., "Value | Make | None"]]


def scalar_value(v: Value):
    """The number every element of ``v`` holds, if ``v`` is a ``full`` node; else None."""
    return v.node.attrs["value"] if v.node.op == "full" else None


def is_scalar(v: Value, number) -> bool:
    """``v`` is a ``full`` of ``number`` (``True``/``False`` for a b8 condition)."""
    value = scalar_value(v)
    return value is not None and not isinstance(value, complex) and value == number


def is_random(node: Node) -> bool:
    """An ``aten`` node whose op draws random numbers: never folded, never merged."""
    if node.op != "aten":
        return False
    from .fallback import resolve_target

    try:
        return torch.Tag.nondeterministic_seeded in resolve_target(node.attrs["target"]).tags
    except ValueError:
        return True  # unknown: treat as impure


def rewrite(graph: Graph, rules: Sequence[Rule], max_sweeps: int = 10) -> Graph:
    """Apply ``rules`` to ``graph`` until a fixed point (or ``max_sweeps`` sweeps)."""
    by_op: dict[str, list[Callable]] = {}
    for op, fn in rules:
        by_op.setdefault(op, []).append(fn)
    for _ in range(max_sweeps):
        graph, changed = _sweep(graph, by_op)
        if not changed:
            break
    return graph


def _sweep(graph: Graph, by_op: dict[str, list[Callable]]) -> tuple[Graph, bool]:
    changed = False

    def apply(b: GraphBuilder, node: Node, inputs: list[Value]):
        nonlocal changed
        if node.op == "constant":
            return None
        new = Node(node.op, inputs, node.attrs, node.types)
        result = _apply(b, new, by_op)
        changed |= result is not None
        return b.append(new).results if result is None else (result,)

    return rebuild(graph, apply), changed


def _apply(b: GraphBuilder, node: Node, by_op: dict[str, list[Callable]], depth: int = 0) -> Value | None:
    """The value that replaces ``node`` (a single-result node not yet in the graph), or None."""
    if len(node.types) != 1 or depth > 20:
        return None
    for fn in by_op.get(node.op, ()):
        result = fn(node, *node.inputs)
        if result is None or not fuel.consume(lambda: f"rewrite: {node.op} by {_rule_name(fn)}"):
            continue
        if isinstance(result, Make):
            inner: list[Node] = []
            made = _typed(result, inner)
            if made is None or len(made.types) != 1 or not made.types[0].same_value_type(node.types[0]):
                continue
            for n in inner:  # the nodes of nested makes, offered to the rules on the next sweep
                b.append(n)
            return _apply(b, made, by_op, depth + 1) or b.append(made).out
        if result.type.same_value_type(node.types[0]):
            return result
    return None


def _typed(m: Make, inner: list[Node]) -> Node | None:
    """The node ``m`` asks for, typed by the op table (None if it rejects it); the nodes of
    the makes among its inputs go to ``inner``, in order."""
    inputs = []
    for v in m.inputs:
        if isinstance(v, Make):
            n = _typed(v, inner)
            if n is None or len(n.types) != 1:
                return None
            inner.append(n)
            v = n.out
        inputs.append(v)
    try:
        types = infer_types(m.op, [v.type for v in inputs], m.attrs)
    except InferError:
        return None
    return Node(m.op, inputs, m.attrs, types)


def _rule_name(fn: Callable) -> str:
    """A rule as a person finds it: its function's name, or the file and line of a lambda."""
    code = getattr(fn, "__code__", None)
    if getattr(fn, "__name__", "<lambda>") != "<lambda>" or code is None:
        return getattr(fn, "__qualname__", repr(fn))
    return f"the rule at {code.co_filename.rsplit('/', 1)[-1]}:{code.co_firstlineno}"
