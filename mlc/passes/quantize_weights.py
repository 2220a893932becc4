"""Weight-only int8 quantization (option ``quantize="int8-weight"``), after constant folding.

A matmul whose right operand is a constant (a frozen linear weight: folding has already
done its transpose, and its cast if ``precision`` asked for one) reads that weight as int8
instead, with one fp32 scale per output channel (per column of the ``[K, N]`` operand)::

    %y = mm(%x, %w) : T[M,N]    becomes    %q = constant @w_int8 : i8[K,N]
                                           %s = constant @w_scale : f32[N]
                                           %y0 = mm(%x, convert(%q) {dtype = T}) : T[M,N]
                                           %y = mul(%y0, %s)   (cast back to T if T is not f32)

with ``scale[n] = max_k |w[k, n]| / 127`` and ``q = round(w / scale)`` clamped to [-127, 127]
(symmetric, no zero point; an all-zero column gets scale 1). Fusion makes the cast a cast
of the loaded tile inside the matmul kernel and the scaling part of its epilogue, so the
weight crosses memory as one byte per element. Only frozen weights are constants, so
graphs compiled without freezing (training graphs, or ``freeze=False``) are unchanged.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..ir import fuel
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from .manager import PassOption, pass_options

QUANTIZE_MODES = ("int8-weight",)
QUANTIZE = PassOption(
    "quantize", (str, type(None)), None,
    '`"int8-weight"`: frozen matmul weights stored as int8 with per-output-channel fp32 scales, dequantized '
    "inside the matmul kernel; needs frozen weights (inference graphs)", choices=(None, *QUANTIZE_MODES))


def check_quantize(mode) -> None:
    if mode is not None and mode not in QUANTIZE_MODES:
        raise ValueError(f"unknown quantize mode {mode!r}; valid modes: None, {', '.join(map(repr, QUANTIZE_MODES))}")


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(q, scale)`` for a ``[K, N]`` weight: int8 values and one fp32 scale per column."""
    w = w.detach().float()
    scale = w.abs().amax(dim=0) / 127
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))
    q = torch.round(w / scale).clamp(-127, 127).to(torch.int8)
    return q, scale


@pass_options(QUANTIZE)
def quantize_weights(graph: Graph, quantize: str | None = QUANTIZE.default) -> Graph:
    check_quantize(quantize)
    if quantize is None:
        return graph
    notes: list[str] = []

    def rewrite(b: GraphBuilder, node: Node, ins: list[Value]):
        w = node.inputs[1] if node.op == "mm" else None
        if w is None or w.node.op != "constant" or not w.type.dtype.is_floating_point:
            return None
        tensor = graph.constants.get(w.node.name)
        if tensor is None or not fuel.consume(f"quantize_weights: {w.node.name} {w.type} to int8"):
            return None  # (no tensor: a graph parsed from text, whose constants have no values)
        q, scale = quantize_int8(tensor)
        qv = b.constant(f"{w.node.name}_int8", q)
        sv = b.constant(f"{w.node.name}_scale", scale.to(tensor.device))
        y = b.op("mul", b.op("mm", ins[0], b.op("convert", qv, dtype=w.type.dtype), **node.attrs), sv)
        if y.type.dtype != node.types[0].dtype:
            y = b.op("convert", y, dtype=node.types[0].dtype)
        notes.append(f"quantized int8: {w.node.name} {w.type} -> {q.shape[0]}x{q.shape[1]} int8 "
                     f"+ {q.shape[1]} scales ({tensor.numel() * tensor.element_size()} -> {q.numel() + 4 * q.shape[1]} bytes)")
        return (y,)

    out = rebuild(graph, rewrite)
    if not notes:
        notes.append("quantize int8-weight: no matmul reads a constant weight here (weights are constants only "
                     "in frozen inference graphs)")
    return replace(out, notes=tuple(notes))
