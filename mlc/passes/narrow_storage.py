"""Storage narrowing, after fusion: fp32 tensors passed between kernels are stored as bf16/fp16.

With ``precision`` ``"bf16"`` or ``"fp16"``, a kernel result of dtype fp32 that only other
kernels read (not a graph output, not an operand of an ATen op) is stored in the lower
type: the kernel that writes it casts it just before its store, and each kernel that reads
it casts it back to fp32 as it loads::

    %t = kernel @k1(%x) : f32[...] { ... yield %y }       %t = kernel @k1(%x) : bf16[...] { ... %z = convert(%y) {dtype = bf16}; yield %z }
    %u = kernel @k2(%t) : ... { %in0 : f32 ... }   ->   %u = kernel @k2(%t) : ... { %in0 : bf16; %a = convert(%in0) {dtype = f32} ... }

The arithmetic of both kernels is unchanged (fp32 registers), so the store is the only
rounding, and the bytes written and read for that tensor halve. Reductions keep
accumulating in fp32. Graph inputs and outputs keep their dtypes: callers, and AOT
autograd's saved tensors between forward and backward, get the types they traced.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..codegen.writer import kernel_name
from ..ir import fuel
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from ..ir.ops import infer_types
from ..ir.types import TensorType
from .lower_precision import LOW_DTYPES, PRECISION, check_precision
from .manager import pass_options


def _narrowable(v: Value, graph_outputs: set[Value], users: dict[Node, list[Node]]) -> bool:
    readers = [u for u in users[v.node] if v in u.inputs]
    return (isinstance(v.type, TensorType) and v.type.dtype == torch.float32 and v not in graph_outputs
            and bool(readers) and all(u.op == "kernel" for u in readers))


def _retyped_body(body: Graph, narrowed_inputs: set[int], narrowed_outputs: set[int], low: torch.dtype) -> Graph:
    """``body`` reading ``narrowed_inputs`` as ``low`` (cast up on load) and storing ``narrowed_outputs`` as ``low``."""
    narrowed = {body.inputs[k] for k in narrowed_inputs}

    def load(b: GraphBuilder, n: Node) -> Value:
        t = n.types[0]
        if n not in narrowed:
            return b.input(n.name, t)
        return b.op("convert", b.input(n.name, t.with_(dtype=low)), dtype=t.dtype)

    # The casts before the stores are nodes of the old body, after all the others.
    stores = {k: Node("convert", (v,), {"dtype": low}, infer_types("convert", [v.type], {"dtype": low}))
              for k, v in enumerate(body.outputs) if k in narrowed_outputs}
    body = Graph(body.name, body.inputs, (*body.nodes, *stores.values()),
                 tuple(stores[k].out if k in stores else v for k, v in enumerate(body.outputs)))
    g = rebuild(body, input=load)
    return Graph(kernel_name(g), g.inputs, g.nodes, g.outputs)


@pass_options(PRECISION)
def narrow_storage(graph: Graph, precision: str = PRECISION.default) -> Graph:
    check_precision(precision)
    if precision not in LOW_DTYPES:
        return graph
    low = LOW_DTYPES[precision]
    users = graph.users()
    outputs = set(graph.outputs)
    narrow = {v for n in graph.nodes if n.op == "kernel" for v in n.results if _narrowable(v, outputs, users)
              and fuel.consume(lambda: f"narrow_storage: {n.attrs['body'].name} result {v.index} as {precision}")}
    if not narrow:
        return graph
    notes = []

    def rewrite(b: GraphBuilder, node: Node, ins: list[Value]):
        if node.op != "kernel":
            return None
        outs = {k for k, v in enumerate(node.results) if v in narrow}
        reads = {k for k, v in enumerate(node.inputs) if v in narrow}
        if not outs and not reads:
            return None
        body = node.attrs["body"]
        for k in sorted(outs):
            n_readers = sum(1 for u in users[node] if node.results[k] in u.inputs)
            notes.append(f"stored as {precision}: {body.name} result {k} ({node.types[k]}), "
                         f"read by {n_readers} kernel(s)")
        new_body = _retyped_body(body, reads, outs, low)
        return b.add("kernel", ins, {"body": new_body}, [v.type for v in new_body.outputs]).results

    return replace(rebuild(graph, rewrite), notes=tuple(notes))
