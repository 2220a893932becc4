"""Precision lowering, before fusion: matmuls in the type the ``precision`` option names.

- ``"default"``: nothing changes. (Arithmetic on fp16/bf16 values runs in fp32 registers
  whatever this pass does; see ``mlc/codegen/writer.py``.)
- ``"tf32"``: each fp32 ``mm``/``bmm`` gets ``precision = "tf32"``: its operands multiply as
  tf32 on the tensor cores, and it accumulates in fp32.
- ``"bf16"``, ``"fp16"``: each fp32 ``mm``/``bmm`` multiplies its operands cast to the lower
  type and accumulates in fp32 (the template's accumulator is fp32 whatever its operands);
  its result is cast back, so every op after it still computes in fp32::

      %c = mm(%a, %b) : f32[M,N]    becomes    %a1 = convert(%a) {dtype = bf16}
                                               %b1 = convert(%b) {dtype = bf16}
                                               %c1 = mm(%a1, %b1) : bf16[M,N]
                                               %c = convert(%c1) {dtype = f32}

  An operand read through views is cast before them (see ``_cast``). The casts are
  pointwise ops like any other, so none becomes a kernel of its own: fusion
  puts an operand's cast into the kernel that produces the operand (which then stores it
  in the lower type, half the bytes) or into the matmul kernel (a cast of the loaded tile),
  and constant folding, which runs next, converts a frozen weight once at compile time.
  The cast of the result costs nothing in a matmul kernel: its accumulator is already
  fp32. Where the remaining fp32 values are stored is ``narrow_storage``'s decision, after
  fusion.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from ..ir import fuel
from ..ir.graph import Graph, GraphBuilder, Node, Value, rebuild
from ..ir.ops import OPS, Category
from ..ir.types import TensorType
from .manager import PassOption, pass_options

PRECISIONS = ("default", "tf32", "bf16", "fp16")
LOW_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
PRECISION = PassOption(  # narrow_storage takes it too
    "precision", str, "default",
    '`"default"` keeps the model\'s dtypes; `"tf32"` multiplies fp32 matmul operands as tf32; `"bf16"`/`"fp16"` '
    "multiply fp32 matmul operands in that type (fp32 accumulation) and store fp32 tensors passed between "
    "kernels in it; see [Precision](#precision-and-int8-weights)", choices=PRECISIONS)


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; valid precisions: {', '.join(PRECISIONS)}")


def _fp32_matmul(node: Node) -> bool:
    return node.op in ("mm", "bmm") and all(
        isinstance(v.type, TensorType) and v.type.dtype == torch.float32 for v in node.inputs)


def _cast(b: GraphBuilder, v: Value, dtype: torch.dtype, casts: dict[Value, Value]) -> Value:
    """``v`` cast to ``dtype``, the cast placed before the views ``v`` is read through.

    ``convert(view(x))`` becomes ``view(convert(x))``: the cast then has the shape of the op
    that computed ``x``, so fusion can put it in that op's kernel (a norm or softmax kernel
    stores its result in the lower type) even where the code generator cannot follow the
    view from the kernel's rows; and ``x`` is cast once however many views read it.
    """
    if v not in casts:
        node = v.node
        if OPS[node.op].category is Category.VIEW and len(node.inputs) == 1:
            casts[v] = b.add(node.op, [_cast(b, node.inputs[0], dtype, casts)], node.attrs).out
        else:
            casts[v] = b.op("convert", v, dtype=dtype)
    return casts[v]


@pass_options(PRECISION)
def lower_precision(graph: Graph, precision: str = PRECISION.default) -> Graph:
    check_precision(precision)
    if precision == "default":
        return graph
    notes: list[str] = []
    casts: dict[Value, Value] = {}  # each value cast once, however many matmuls read it

    def rewrite(b: GraphBuilder, node: Node, ins: list[Value]):
        shapes = " x ".join(str(v.type) for v in node.inputs)
        if not _fp32_matmul(node) or not fuel.consume(f"lower_precision: {node.op} {shapes} in {precision}"):
            return None
        if precision == "tf32":
            notes.append(f"precision tf32: {node.op} {shapes} multiplies as tf32")
            return b.add(node.op, ins, {**node.attrs, "precision": "tf32"}).results
        low = LOW_DTYPES[precision]
        notes.append(f"precision {precision}: {node.op} {shapes} multiplies {precision} operands, accumulates in fp32")
        c = b.op(node.op, *(_cast(b, v, low, casts) for v in ins), **node.attrs)
        return (b.op("convert", c, dtype=torch.float32),)

    return replace(rebuild(graph, rewrite), notes=tuple(notes))
