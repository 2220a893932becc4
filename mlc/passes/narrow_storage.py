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

import torch

from ..codegen.kernel import kernel_name
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from ..ir.types import TensorType
from .lower_precision import LOW_DTYPES, check_precision


def _narrowable(v: Value, graph_outputs: set[Value], users: dict[Node, list[Node]]) -> bool:
    readers = [u for u in users[v.node] if v in u.inputs]
    return (isinstance(v.type, TensorType) and v.type.dtype == torch.float32 and v not in graph_outputs
            and bool(readers) and all(u.op == "kernel" for u in readers))


def _retyped_body(body: Graph, narrowed_inputs: set[int], narrowed_outputs: set[int], low: torch.dtype) -> Graph:
    """``body`` reading ``narrowed_inputs`` as ``low`` (cast up on load) and storing ``narrowed_outputs`` as ``low``."""
    b = GraphBuilder(body.name)
    env: dict[Value, Value] = {}
    for k, n in enumerate(body.inputs):
        t = n.types[0]
        if k in narrowed_inputs:
            env[n.out] = b.op("convert", b.input(n.name, t.with_(dtype=low)), dtype=t.dtype)
        else:
            env[n.out] = b.input(n.name, t)
    for n in body.nodes:
        new = b.append(Node(n.op, [env[v] for v in n.inputs], n.attrs, n.types))
        env.update(zip(n.results, new.results))
    outs = [b.op("convert", env[v], dtype=low) if k in narrowed_outputs else env[v] for k, v in enumerate(body.outputs)]
    g = b.build(outs)
    return Graph(kernel_name(g), g.inputs, g.nodes, g.outputs)


def narrow_storage(graph: Graph, precision: str = "default") -> Graph:
    check_precision(precision)
    if precision not in LOW_DTYPES:
        return graph
    low = LOW_DTYPES[precision]
    users = graph.users()
    outputs = set(graph.outputs)
    narrow = {v for n in graph.nodes if n.op == "kernel" for v in n.results if _narrowable(v, outputs, users)}
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

    out = rebuild(graph, rewrite)
    return Graph(out.name, out.inputs, out.nodes, out.outputs, out.constants, graph.notes + tuple(notes))
